"""Freezing a warm process's start-up heap: later full collections skip what start-up made, and
still free what the process makes since."""

from __future__ import annotations

import gc
import weakref

from segue.process_heap import freeze_startup_heap


class Node:
    def __init__(self):
        self.other = self


def test_the_start_up_heap_is_frozen_and_new_cycles_are_still_collected():
    gc.unfreeze()
    old = Node()  # made at "start-up", still referenced when the heap is frozen
    old_alive = weakref.ref(old)
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 10_000  # pytest, this module and their imports: what start-up made

        del old  # now only its own cycle holds it: a full collection would free it, were it walked
        cycle = Node()  # made after the freeze: a reference cycle only the collector frees
        alive = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert alive() is None
        # Not walked, so not freed: the price the module names. (The freeze count itself is not
        # compared: other threads' objects may be freed by reference counting meanwhile.)
        assert old_alive() is not None
    finally:
        gc.unfreeze()
    gc.collect()
    assert old_alive() is None  # thawed, it is walked and freed again
