"""Which index build serving searches, and the query tower and ranker of the same training.

A request takes one `ServingTarget` (collection + model version + query tower) and uses it from
start to end. The nightly rebuild swaps the alias; `ServingTargets.refresh` notices, loads the new
build's query tower and collection first, and only then replaces the target, so a request never
embeds with one training and searches another's space.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pymilvus import MilvusClient

from segue.indexing.track_collection import (
    PINNED, READY, WINDOW_PLAYLISTS, builds, collection_info, live_collection, set_properties)
from segue.ranking.ranker import ExportedRanker
from segue.training.export import ExportedTower
from segue.training.model_versions import ModelNotFound, ModelVersions

_LOGGER = logging.getLogger(__name__)


class NotReady(RuntimeError):
    """No build can be served yet (no alias, or its query tower is missing)."""


class PinRefused(ValueError):
    """An admin pin named a build that may not serve (not validated, or another alias's)."""


@dataclass(frozen=True)
class ServingTarget:
    collection: str
    model_version: str
    query_tower: ExportedTower
    ranker: ExportedRanker | None = None  # None: a version trained without the ranking stage
    # Builds made before the index carried the ranker's popularity fact: serving reads it from Feast.
    carries_window_playlists: bool = False


class ServingTargets:
    """The current target of `alias` (or of a pinned collection), refreshed on demand."""

    def __init__(self, client: MilvusClient, alias: str, versions: ModelVersions, timeout_s: float):
        self.client, self.alias, self.versions, self.timeout_s = client, alias, versions, timeout_s
        self.pinned: str | None = None
        self.problem = "not loaded yet"
        self.swaps = 0
        self._current: ServingTarget | None = None
        self._lock = threading.Lock()
        # Its own thread: requests stuck on a slow store hold the request threads, never the swaps.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="segue-serve-alias")

    @property
    def served(self) -> ServingTarget | None:
        return self._current

    @property
    def current(self) -> ServingTarget:
        target = self._current
        if target is None:
            raise NotReady(self.problem)
        return target

    def query_tower(self, model_version: str) -> ExportedTower:
        try:
            return self.versions.query_tower(model_version)
        except ModelNotFound as e:
            raise NotReady(f"the index was built by model {model_version!r}: {e}") from None

    def ranker(self, model_version: str) -> ExportedRanker | None:
        return self.versions.ranker(model_version)

    def wanted(self) -> str:
        if self.pinned:
            if not self.client.has_collection(self.pinned, timeout=self.timeout_s):
                raise NotReady(f"the pinned build {self.pinned!r} no longer exists; pin another or follow the "
                               "alias again (PUT /admin/target with collection null)")
            return self.pinned
        live = live_collection(self.client, self.alias)
        if live is None:
            raise NotReady(f"alias {self.alias!r} serves no collection yet: run `segue index rebuild`")
        return live

    def refresh(self) -> bool:
        """Follows the alias (or the pin); True when the target changed. Never raises: a problem
        is kept for /readyz and the previous target goes on serving."""
        with self._lock:
            try:
                name = self.wanted()
                if self._current is not None and self._current.collection == name:
                    self.problem = ""
                    return False
                info = collection_info(self.client, name)
                tower = self.query_tower(info.model_version)
                ranker = self.ranker(info.model_version)
                fields = {f["name"] for f in self.client.describe_collection(name, timeout=self.timeout_s)["fields"]}
                self.client.load_collection(name, timeout=self.timeout_s)
            except Exception as e:  # noqa: BLE001 - any failure keeps the old target serving
                self.problem = str(e) or type(e).__name__
                _LOGGER.warning("serving target not refreshed", extra={"alias": self.alias, "error": self.problem})
                return False
            previous = self._current
            self._current = ServingTarget(name, info.model_version, tower, ranker, WINDOW_PLAYLISTS in fields)
            self.problem = ""
            if previous is not None:
                self.swaps += 1
            _LOGGER.info("serving target", extra={"collection": name, "model_version": info.model_version,
                                                  "previous": previous.collection if previous else None})
            return True

    def pin(self, collection: str | None) -> ServingTarget:
        """Serves `collection`, a ready build of this alias, whatever the alias says (None: follow
        the alias again). The build is marked pinned in Milvus so that rebuilds do not prune it."""
        if collection is not None:
            found = {b.name: b for b in builds(self.client, self.alias)}
            if collection not in found:
                raise LookupError(f"there is no build {collection!r} of alias {self.alias!r}; `segue index status` "
                                  "lists the builds")
            if found[collection].state != READY:
                raise PinRefused(f"build {collection!r} is {found[collection].state!r}, not {READY!r}: only "
                                 "validated builds can serve")
            if found[collection].stream_gap_us:
                raise PinRefused(f"build {collection!r} misses streamed tracks (its model version is not in "
                                 "the stream's models folder); pin a build the stream keeps current")
            set_properties(self.client, collection, **{PINNED: "true"})
        previous, self.pinned = self.pinned, collection
        if previous and previous != collection and self.client.has_collection(previous):
            set_properties(self.client, previous, **{PINNED: "false"})
        self.refresh()
        target = self.current
        if collection is not None and target.collection != collection:
            raise NotReady(f"could not switch to {collection!r}: {self.problem}")
        return target
