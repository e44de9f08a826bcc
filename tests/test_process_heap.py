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
    try:
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # pytest, this module and their imports: what start-up made

        cycle = Node()  # made after the freeze: a reference cycle only the collector frees
        alive = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert alive() is None
        assert gc.get_freeze_count() == frozen  # a full collection neither thawed nor froze anything
    finally:
        gc.unfreeze()
