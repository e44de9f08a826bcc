"""The one write path of streamed tracks, shared by the consumer daemon and the Beam pipeline:
Feast online push -> offline record -> candidate tower -> Milvus upsert (every target collection).

Each step is idempotent, so a batch that fails half-way is simply written again.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from concurrent import futures
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore
from feast.data_source import PushMode

from segue.features.online import OnlineFeatureReader
from segue.indexing.upsert import NoIndex, TrackUpserter
from segue.streaming.events import FEATURE_NAMES, Origin, TrackEvent
from segue.training.model_versions import ModelVersions
from segue.vocabulary import PROBE_TRACK_URI, TRACK_KEY, TRACK_SERVICE

_LOGGER = logging.getLogger(__name__)
PUSH_SOURCE = "track_push_source"
TABLE = "track_features"
# Offline copies in the Feast source folder start with this; batch feature runs replace that folder.
STREAM_FILE_PREFIX = "stream-"


class SinkWriteError(RuntimeError):
    """A write failed in `stage` (read_stored, feast_push, offline_record, embed_and_upsert)."""

    def __init__(self, stage: str, error: Exception):
        super().__init__(f"{stage}: {type(error).__name__}: {str(error)[:500]}")
        self.stage = stage


@dataclass
class SinkReport:
    indexed: int = 0  # tracks written to Feast and Milvus
    edited: int = 0  # playlist edits applied to the playlists' features
    superseded: int = 0  # events older than what the feature store holds (late or replayed out of order)
    targets: dict[str, int] = field(default_factory=dict)  # Milvus collection -> rows written
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, other: SinkReport) -> None:
        self.indexed += other.indexed
        self.edited += other.edited
        self.superseded += other.superseded
        for name, n in other.targets.items():
            self.targets[name] = self.targets.get(name, 0) + n


class StageClock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = now - self._last
        self._last = now


def newest_per_track(events: Sequence[TrackEvent]) -> list[TrackEvent]:
    """The latest event of each track; a tie goes to the later message."""
    latest: dict[str, TrackEvent] = {}
    for e in events:
        kept = latest.get(e.track.track_uri)
        if kept is None or e.event_time >= kept.event_time:
            latest[e.track.track_uri] = e
    return list(latest.values())


def record_keys(events: Sequence[TrackEvent], origins: Sequence[Origin] | None,
                 written: Sequence[TrackEvent]) -> tuple[list[Origin] | None, dict | None]:
    """The origin of each written event, and each partition's offset range over all the events."""
    if origins is None:
        return None, None
    origin_of = {id(e): o for e, o in zip(events, origins)}
    covered: dict[tuple[str, int], tuple[int, int]] = {}
    for o in origins:
        first, last = covered.get((o.topic, o.partition), (o.offset, o.offset))
        covered[(o.topic, o.partition)] = (min(first, o.offset), max(last, o.offset))
    return [origin_of[id(e)] for e in written], covered


class OfflineRecord:
    """Appends streamed rows of one feature table as Parquet files, in the Feast source's own
    schema, to:

    - `<stream_dir>/<table>/`: the durable record; `build_features` unions it in, so batch runs and
      training keep the streamed rows after the batch tables are rebuilt;
    - `<features_dir>/<table>/`: where Feast's offline store reads now (rebuilds, backfills).

    (Feast's push to its offline store cannot write `Array(String)` columns to a file source, which
    is why the record is written here.)
    """

    def __init__(self, features_dir: Path, stream_dir: Path, table: str = TABLE):
        self.folders = [Path(stream_dir) / table, Path(features_dir) / table]
        self._schema: pa.Schema | None = None

    def schema(self, frame: pd.DataFrame) -> pa.Schema:
        # DuckDB binds Parquet columns by position: new files must repeat the batch files' layout.
        if self._schema is None:
            existing = sorted(self.folders[1].glob("*.parquet"))
            if existing:
                self._schema = pq.read_schema(existing[0]).remove_metadata()
            else:
                self._schema = pa.Schema.from_pandas(frame, preserve_index=False).remove_metadata()
        return self._schema

    def append(self, frame: pd.DataFrame, origins: Sequence[Origin] | None = None,
               covered: Mapping[tuple[str, int], tuple[int, int]] | None = None) -> None:
        """Writes the rows. With `origins` (one per row) and `covered` (each partition's offset range
        of the write), one file per partition is named by its range and replaces any earlier file
        over the same offsets: exactly once through retries and replays. Without, a fresh name."""
        schema = self.schema(frame)
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        if origins is None or covered is None:
            self._write(table, f"{STREAM_FILE_PREFIX}{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-"
                               f"{uuid.uuid4().hex[:8]}.parquet")
            return
        keys = [(o.topic, o.partition) for o in origins]
        for (topic, partition), (first, last) in covered.items():
            stem = f"{STREAM_FILE_PREFIX}{re.sub(r'[^A-Za-z0-9_.]', '_', topic)}-p{partition}-"
            name = f"{stem}{first:020d}-{last:020d}.parquet"
            rows = [i for i, k in enumerate(keys) if k == (topic, partition)]
            if rows:
                self._write(table.take(pa.array(rows, pa.int64())), name)
            self._drop_overlapping(stem, first, last, keep=name)

    def _write(self, table: pa.Table, name: str) -> None:
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
            staging = folder / f".{name}.tmp"  # readers skip dot files; the rename is atomic
            pq.write_table(table, staging)
            staging.rename(folder / name)

    def _drop_overlapping(self, stem: str, first: int, last: int, keep: str) -> None:
        for folder in self.folders:
            for path in folder.glob(f"{stem}*.parquet"):
                found = re.fullmatch(re.escape(stem) + r"(\d{20})-(\d{20})\.parquet", path.name)
                if found and path.name != keep and int(found[1]) <= last and int(found[2]) >= first:
                    path.unlink(missing_ok=True)  # an earlier attempt at these offsets


class TrackSink:
    """Writes valid track events where training and serving will find them."""

    def __init__(self, store: FeatureStore, upserter: TrackUpserter, record: OfflineRecord):
        self.store = store
        self.upserter = upserter
        self.record = record
        # What the sink needs of a stored track: its event time (newest wins) and its age. One
        # feature instead of the service's 27 makes the read about ten times cheaper.
        self._reader = OnlineFeatureReader(store, TRACK_SERVICE, TRACK_KEY, only=[f"{TABLE}:first_added_s"])
        self._feast_writer = futures.ThreadPoolExecutor(1, thread_name_prefix="feast-write")

    def warm_up(self) -> None:
        """Loads the towers of every target now, so the first events do not wait for them."""
        try:
            self.upserter.warm_up()
        except NoIndex as e:  # writes retry until an index exists
            _LOGGER.warning("no index to write to yet", extra={"error": str(e)})

    def stores_answer(self) -> bool:
        """Whether the online store and Milvus answer now: when they do, a write that keeps failing
        is failing on its data, not on a store that is away."""
        try:
            self._reader.read([PROBE_TRACK_URI])
            self.upserter.targets()
        except Exception:  # noqa: BLE001 (any failure means "not answering")
            return False
        return True

    def write(self, events: Sequence[TrackEvent], origins: Sequence[Origin] | None = None) -> SinkReport:
        """Writes the events' newest states; raises SinkWriteError naming the stage that failed.
        `origins` (one per event: where it was read) make the offline record exactly-once."""
        latest = newest_per_track(events)
        if not latest:
            return SinkReport()
        clock = StageClock()
        stage = "read_stored"
        try:
            uris = [e.track.track_uri for e in latest]
            stored = {row.key: row for row in self._reader.read(uris)}
            fresh = [e for e in latest if e.event_time_us >= stored[e.track.track_uri].event_time_us]
            report = SinkReport(superseded=len(events) - len(fresh))
            clock.lap(stage)
            if fresh:
                stage = "feast_push"  # building the pushed frame is part of it
                frame = self._frame(fresh, stored)
                # The Feast write (online store, then the Parquet record) and the embed + upsert
                # (Milvus) touch different stores: they run side by side, and a batch takes the
                # longer of the two instead of their sum. Both are idempotent, so a retry after
                # either fails rewrites both.
                feast = self._feast_writer.submit(self._write_features, frame, events, origins, fresh)
                try:
                    stage = "embed_and_upsert"
                    columns = {name: frame[name].tolist() for name in FEATURE_NAMES}
                    written = self.upserter.upsert(frame[TRACK_KEY].tolist(), columns,
                                                   [e.event_time_us for e in fresh])
                    clock.lap(stage)
                finally:
                    futures.wait([feast])  # a retry must not race a write still in flight
                clock.laps |= feast.result()
                report.indexed = len(fresh)
                report.targets = {name: w.written for name, w in written.items()}
        except SinkWriteError:
            raise
        except Exception as e:  # noqa: BLE001 (re-raised with the stage)
            raise SinkWriteError(stage, e) from e
        report.stage_seconds = clock.laps
        return report

    def _write_features(self, frame: pd.DataFrame, events: Sequence[TrackEvent], origins: Sequence[Origin] | None,
                        fresh: Sequence[TrackEvent]) -> dict[str, float]:
        """Feast online push, then the offline record; each stage's seconds. Raises SinkWriteError."""
        clock = StageClock()
        stage = "feast_push"
        try:
            self.store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)
            clock.lap(stage)
            stage = "offline_record"
            self.record.append(frame, *record_keys(events, origins, fresh))
            clock.lap(stage)
        except Exception as e:  # noqa: BLE001 (re-raised with the stage)
            raise SinkWriteError(stage, e) from e
        return clock.laps

    @staticmethod
    def _frame(events: Sequence[TrackEvent], stored: dict) -> pd.DataFrame:
        rows = []
        for e in events:
            row = e.track.model_dump()
            if row["first_added_s"] is None:  # an update keeps the track's age; a new track starts now
                known = stored[e.track.track_uri]
                row["first_added_s"] = int(known.features.get("first_added_s") or 0) if known.found else 0
                row["first_added_s"] = row["first_added_s"] or int(e.event_time.timestamp())
            row["event_timestamp"] = pd.Timestamp(e.event_time).tz_convert("UTC")
            rows.append(row)
        frame = pd.DataFrame(rows)
        frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")
        return frame


def open_track_sink(settings, store: FeatureStore) -> TrackSink:
    """The track sink of the configured index (`index.*`, `paths.*`) over `store`."""
    from segue.indexing.milvus_connection import open_client

    upserter = TrackUpserter(open_client(settings), settings.index.alias, ModelVersions(settings.paths.models_dir),
                             settings.index.orphan_after_s, settings.stream.write_timeout_s)
    return TrackSink(store, upserter, OfflineRecord(Path(settings.paths.features_dir), Path(settings.paths.stream_dir)))
