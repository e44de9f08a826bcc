"""Incremental upserts: idempotent by track URI, the newest event wins.

Milvus's own upsert is last-write-wins by arrival; events can arrive late or twice, so each write
first reads the stored event times and skips rows that are not newer. Events for one track must
not be written concurrently by two writers (Kafka partitions by track URI give that).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymilvus import MilvusClient

from segue.indexing.track_collection import (
    BUILDING, KEY, READY, STREAM_GAP, CollectionInfo, RowProblems, builds, collection_info, live_collection, now_us,
    set_properties, track_rows, upsert_columns)
from segue.training.export import ExportedTower
from segue.training.model_versions import ModelNotFound, ModelVersions

_LOGGER = logging.getLogger(__name__)
STREAM = "stream"


@dataclass
class WriteReport:
    written: int = 0
    superseded: int = 0  # an event not newer than the stored row (a replay or a late event)
    skipped: int = 0  # a kept build whose model this writer cannot load: marked, never served by rollback

    def add(self, other: "WriteReport") -> None:
        self.written += other.written
        self.superseded += other.superseded
        self.skipped += other.skipped


def write_newest(client: MilvusClient, collection: str, rows: Sequence[dict[str, Any]],
                 timeout_s: float | None = None, description: Mapping[str, Any] | None = None) -> WriteReport:
    """Upserts the rows whose event is at least as new as the stored one (equal rewrites: idempotent).
    `description`: the collection's, when the caller holds it (else it is asked for)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        kept = latest.get(row[KEY])
        if kept is None or row["event_time_us"] >= kept["event_time_us"]:
            latest[row[KEY]] = row
    stored = client.query(collection, filter=f"{KEY} in {json.dumps(list(latest))}",
                          output_fields=[KEY, "event_time_us"], consistency_level="Strong", timeout=timeout_s)
    current = {r[KEY]: r["event_time_us"] for r in stored}
    fresh = [r for uri, r in latest.items() if r["event_time_us"] >= current.get(uri, -1)]
    if fresh:
        upsert_columns(client, collection, fresh, timeout_s, description)
    return WriteReport(written=len(fresh), superseded=len(rows) - len(fresh))


class NoIndex(RuntimeError):
    """Nothing to write to: no collection serves the alias and none is being built."""


@dataclass
class TrackUpserter:
    """Embeds tracks' candidate features and upserts them where serving will look for them.

    The targets are the alias's collection, every build in progress and the builds kept for
    rollback, each embedded by its own model version's tower: a rebuild that swaps in mid-stream
    already holds the new tracks, and a rollback loses none. A build kept for rollback whose model
    is not in this writer's models folder (another deployment's, on a shared server) cannot take
    them: it is marked (`segue.stream_gap`) so that a rollback refuses it instead of serving a
    catalogue without them.
    """

    client: MilvusClient
    alias: str
    versions: ModelVersions
    orphan_after_s: float = 6 * 3600  # `index.orphan_after_s`
    timeout_s: float | None = None  # each Milvus call's; `stream.write_timeout_s`
    # A collection's fields never change: described once, not on every batch.
    _descriptions: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def targets(self) -> list[CollectionInfo]:
        """The live build first (when there is one), then the builds in progress and kept."""
        return self._targets()[1]

    def _targets(self) -> tuple[str | None, list[CollectionInfo]]:
        # One look at the alias for both: a swap in between must not make the new live build skippable.
        live = live_collection(self.client, self.alias, self.timeout_s)
        found = [collection_info(self.client, live, self.timeout_s)] if live else []
        found += [b for b in builds(self.client, self.alias, self.timeout_s)
                  if b.state in (BUILDING, READY) and b.name != live and not b.orphaned(self.orphan_after_s)]
        if not found:
            raise NoIndex(f"no Milvus collection serves alias {self.alias!r} and none is being built: "
                          "run `segue index rebuild` first")
        return live, found

    @staticmethod
    def _kept_for_rollback(target: CollectionInfo, live: str | None) -> bool:
        # Only a finished build that does not serve may miss tracks: a build in progress swaps in
        # later, so its writes must succeed (or the events wait and retry).
        return target.state == READY and target.name != live

    def tower(self, model_version: str) -> ExportedTower:
        return self.versions.candidate_tower(model_version)

    def warm_up(self) -> None:
        """Loads the towers of every target now, so the first events do not wait for them."""
        live, targets = self._targets()
        for target in targets:
            try:
                self.tower(target.model_version)
            except ModelNotFound:
                if not self._kept_for_rollback(target, live):
                    raise

    def upsert(self, track_uris: Sequence[str], features: Mapping[str, Sequence[Any]],
               event_time_us: Sequence[int], problems: RowProblems | None = None) -> dict[str, WriteReport]:
        """Writes the tracks into every target; returns what each target took."""
        reports = {}
        features = {**features, KEY: list(track_uris)}  # the URI is a tower input too (id embedding)
        live, targets = self._targets()
        for target in targets:
            try:
                tower = self.tower(target.model_version)
            except ModelNotFound as e:
                if not self._kept_for_rollback(target, live):
                    raise  # the served catalogue (and the next one) must take every track: retried
                reports[target.name] = self._mark_gap(target, len(track_uris), e)
                continue
            embeddings = tower.embed(features)
            rows = track_rows(track_uris, features, embeddings, event_time_us, STREAM, problems)
            if target.name not in self._descriptions:
                self._descriptions[target.name] = self.client.describe_collection(target.name, timeout=self.timeout_s)
            reports[target.name] = write_newest(self.client, target.name, rows, self.timeout_s,
                                                self._descriptions[target.name])
        _LOGGER.info("tracks upserted", extra={"tracks": len(track_uris),
                                               "targets": {k: vars(v) for k, v in reports.items()}})
        return reports

    def _mark_gap(self, target: CollectionInfo, tracks: int, why: ModelNotFound) -> WriteReport:
        if not target.stream_gap_us:
            set_properties(self.client, target.name, **{STREAM_GAP: str(now_us())})
            _LOGGER.warning("kept build misses streamed tracks; a rollback to it is refused",
                            extra={"collection": target.name, "model_version": target.model_version,
                                   "reason": str(why)})
        return WriteReport(skipped=tracks)
