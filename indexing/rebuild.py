"""The nightly job: rebuild every track's embedding into a new collection, validate, swap the alias.

1. create `<alias>_<model>_<time>`, marked `building` (upserters write to it from now on);
2. snapshot the catalogue's candidate features through Feast's `track_candidate_v1` service;
3. run the Beam pipeline: snapshot -> candidate tower -> the new collection (+ embeddings copy);
4. carry over what the snapshot lacks: tracks the stream added to the serving collection, and
   events newer than the snapshot (re-embedded from Feast's online store, newest event wins);
5. wait for the index, validate (rows, finite, not collapsed, ANN recall vs exact);
6. swap the alias in one call; keep `keep_previous` earlier builds for rollback, drop the rest.

A failed step leaves the alias where it was and the failed collection is dropped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore
from pymilvus import MilvusClient

from segue.features.feature_times import feature_times_us
from segue.features.online import OnlineFeatureReader
from segue.features.track_catalog import load_catalog, window_playlists
from segue.indexing.embedding_pipeline import EmbeddingJob, read_embeddings, run_embedding_pipeline
from segue.indexing.milvus_connection import index_profile, milvus_uri, open_client
from segue.indexing.profiles import IndexProfile
from segue.indexing.track_collection import (
    BUILDING, EVENT_TIME, FAILED, KEY, MODEL_VERSION, PREVIOUS, PROFILE, READY, STARTED_US, STATE, VALIDATION, VECTOR,
    WINDOW_PLAYLISTS, builds, collection_info, collection_name, live_collection, now_us, set_properties, track_rows,
    track_schema)
from segue.indexing.upsert import STREAM, WriteReport, write_newest
from segue.indexing.validation import Validation, row_count, validate_build
from segue.settings import SegueSettings, source_file
from segue.training.export import ExportedTower
from segue.training.model_versions import LATEST, ModelVersions
from segue.vocabulary import TRACK_SERVICE

_LOGGER = logging.getLogger(__name__)
READ_BATCH = 1000


class RebuildFailed(RuntimeError):
    """The new collection did not pass; serving was left on the previous one."""

    def __init__(self, message: str, validation: Validation | None = None):
        super().__init__(message)
        self.validation = validation


@dataclass
class RebuildReport:
    collection: str
    model_version: str
    profile: str
    snapshot_rows: int
    written: int
    carried_over: int
    carry_over_missing: list[str]
    rows: int
    validation: dict[str, Any]
    previous: str | None
    dropped: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Stage = Callable[[str, str], None]  # (stage, collection): tests write upserts between stages


def _wait_for_index(client: MilvusClient, collection: str, timeout_s: float = 3600) -> None:
    """Blocks until every flushed row is indexed (a server builds segment indexes in the background)."""
    client.flush(collection)
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.describe_index(collection, VECTOR)
        if int(info.get("pending_index_rows", 0)) == 0 and info.get("state", "Finished") == "Finished":
            return
        if time.monotonic() > deadline:
            raise RebuildFailed(f"index of {collection} not built after {timeout_s:.0f} s: {info}")
        time.sleep(1)


def write_snapshot(store: FeatureStore, path: Path, as_of: datetime) -> int:
    """Every catalogued track's candidate features as of `as_of`, through the FeatureService, with
    the time its features were written (`event_time_us`, the row's time in the index) and its
    playlists in the co-occurrence window (the ranker's fact, which serving then reads off the hits)."""
    catalog = load_catalog(store, as_of)
    times = feature_times_us(store, TRACK_SERVICE, KEY, as_of)
    fallback = int(as_of.timestamp() * 1_000_000)
    columns = {KEY: pa.array(catalog.track_uri.tolist(), pa.string()),
               **{k: v for k, v in catalog.features.items() if k not in (KEY, EVENT_TIME)},
               EVENT_TIME: pa.array([times.get(u, fallback) for u in catalog.track_uri], pa.int64()),
               WINDOW_PLAYLISTS: window_playlists(store, catalog.track_uri, as_of)}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return len(catalog)


def _stream_rows(client: MilvusClient, collection: str, fields: list[str]) -> list[dict[str, Any]]:
    """The rows the stream wrote into `collection` (all of them: an iterator, not one capped query)."""
    out: list[dict[str, Any]] = []
    iterator = client.query_iterator(collection, batch_size=READ_BATCH, filter=f'source == "{STREAM}"',
                                     output_fields=[KEY, *fields], consistency_level="Strong")
    try:
        while batch := iterator.next():
            out.extend(batch)
    finally:
        iterator.close()
    return out


def carry_over(client: MilvusClient, source: str | None, target: str, store: FeatureStore, tower: ExportedTower,
               snapshot_uris: set[str], snapshot_time_us: int) -> tuple[WriteReport, list[str]]:
    """Re-embeds into `target` the stream's tracks the snapshot lacks or that were indexed after it.

    Their features come from Feast's online store (where the stream pushed them), so the new
    tower embeds the same values serving reads. Returns what was written and the URIs whose
    features Feast no longer has.
    """
    report, missing = WriteReport(), []
    if source is None:
        return report, missing
    # By when a row was indexed, not by its event time: an update timed before the snapshot can
    # still arrive after it (late), and must not be lost with the old collection.
    wanted = {r[KEY]: r["event_time_us"] for r in _stream_rows(client, source, ["event_time_us", "indexed_at_us"])
              if r[KEY] not in snapshot_uris or r["indexed_at_us"] >= snapshot_time_us}
    if not wanted:
        return report, missing
    reader = OnlineFeatureReader(store, TRACK_SERVICE, KEY)
    uris = list(wanted)
    for start in range(0, len(uris), READ_BATCH):
        rows = reader.read(uris[start:start + READ_BATCH])
        missing += [r.key for r in rows if not r.found]
        found = [r for r in rows if r.found]
        if not found:
            continue
        keys = [r.key for r in found]
        features = {KEY: keys, **{n: [r.features.get(n) for r in found] for n in found[0].features}}
        embeddings = tower.embed(features)
        report.add(write_newest(client, target, track_rows(keys, features, embeddings,
                                                           [wanted[k] for k in keys], STREAM)))
    if missing:
        _LOGGER.warning("stream tracks without online features were not carried over",
                        extra={"count": len(missing), "examples": missing[:5]})
    return report, missing


def _ground_truth(client: MilvusClient, collection: str, embeddings_prefix: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every stored vector: the pipeline's copy, overridden by the stream's rows in the collection."""
    uris, vectors = read_embeddings(embeddings_prefix)
    stream = _stream_rows(client, collection, [VECTOR])
    if not stream:
        return uris, vectors
    position = {u: i for i, u in enumerate(uris)}
    extra_uris, extra_vectors = [], []
    for row in stream:
        if row[KEY] in position:
            vectors[position[row[KEY]]] = row[VECTOR]
        else:
            extra_uris.append(row[KEY])
            extra_vectors.append(row[VECTOR])
    if extra_uris:
        uris = np.concatenate([uris, np.asarray(extra_uris, dtype=object)])
        vectors = np.vstack([vectors, np.asarray(extra_vectors, dtype=np.float32)])
    return uris, vectors


def _prune(client: MilvusClient, alias: str, serving: str, previous: str | None, keep_previous: int,
           orphan_after_s: float) -> list[str]:
    """Keeps the serving build, the one it replaced and the newest `keep_previous - 1` other ready
    builds; drops the rest, any failed one and any orphaned one (a rebuild that died while
    building). The serving collection and builds an API is pinned to are never dropped."""
    found = [b for b in builds(client, alias) if not b.pinned]
    others = [b.name for b in found if b.state == READY and b.name not in (serving, previous)]
    doomed = others[:max(len(others) - (keep_previous - 1), 0)]
    doomed += [b.name for b in found if b.state == FAILED or (b.orphaned(orphan_after_s) and b.name != serving)]
    for name in doomed:
        client.drop_collection(name)
    return doomed


def rebuild_index(settings: SegueSettings, store: FeatureStore, model_dir: Path | None = None,
                  on_stage: Stage | None = None, client: MilvusClient | None = None,
                  snapshot: Path | None = None, force: bool = False) -> RebuildReport:
    """Builds, validates and swaps in a new collection; raises RebuildFailed with the reasons.

    A build with fewer rows than `index.min_rows_share` of the live collection's is refused unless
    `force` (the catalogue really shrank).

    `snapshot` names a catalogue already read from the FeatureService (Parquet: `track_uri` and
    the service's features), e.g. one Feast's Spark offline store wrote for a catalogue too big
    for one driver; by default the rebuild reads it itself.
    """
    cfg = settings.index
    versions = ModelVersions(settings.paths.models_dir)
    model = versions.resolve(model_dir or LATEST)
    version, tower_path = model.name, model.candidate_path
    tower = versions.candidate_tower(version)
    dim = tower.embedding_dim
    profile: IndexProfile = index_profile(settings).validate(dim)
    client = client or open_client(settings)
    stage = on_stage or (lambda *_: None)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()
        _LOGGER.info("rebuild step done", extra={"step": name, "seconds": seconds[name]})

    started = datetime.now(timezone.utc)
    name = collection_name(cfg.alias, version, started)
    build_dir = Path(settings.paths.index_dir) / "builds" / name
    client.create_collection(name, schema=track_schema(dim), consistency_level="Bounded",
                             index_params=_index_params(client, profile))
    set_properties(client, name, **{MODEL_VERSION: version, PROFILE: profile.name, STATE: BUILDING,
                                    STARTED_US: str(now_us())})
    _LOGGER.info("rebuild started", extra={"collection": name, "model_version": version, "profile": profile.name})
    stage("created", name)
    try:
        snapshot_time_us = int(started.timestamp() * 1_000_000)
        if snapshot is None:
            snapshot_rows = write_snapshot(store, build_dir / "catalog.parquet", started)
        else:
            build_dir.mkdir(parents=True, exist_ok=True)
            (build_dir / "catalog.parquet").symlink_to(Path(snapshot).resolve())
            snapshot_rows = pq.ParquetFile(snapshot).metadata.num_rows
        lap("snapshot")
        stage("snapshot", name)
        job = EmbeddingJob(build_dir / "catalog.parquet", tower_path, milvus_uri(settings), name,
                           build_dir / "embeddings", snapshot_time_us, now_us(), source_file(settings))
        written = run_embedding_pipeline(job, cfg)
        lap("embed_and_write")
        stage("written", name)
        live = live_collection(client, cfg.alias)
        snapshot_uris = set(pq.read_table(build_dir / "catalog.parquet", columns=[KEY]).column(KEY).to_pylist())
        carried, missing = carry_over(client, live, name, store, tower, snapshot_uris, snapshot_time_us)
        lap("carry_over")
        stage("carried", name)
        _wait_for_index(client, name)
        lap("index")
        uris, vectors = _ground_truth(client, name, build_dir / "embeddings")
        validation = validate_build(client, name, profile, uris, vectors, expected_rows=len(set(uris)),
                                    queries=cfg.validation_queries, min_recall=cfg.min_recall,
                                    max_mean_cosine=cfg.max_mean_cosine,
                                    live_rows=row_count(client, live) if live else None,
                                    min_rows_share=0.0 if force else cfg.min_rows_share)
        lap("validate")
        set_properties(client, name, **{VALIDATION: json.dumps(validation.as_dict())})
        if not validation.ok:
            raise RebuildFailed(f"rebuild of {name} failed validation, serving is unchanged: "
                                + "; ".join(validation.reasons), validation)
        stage("validated", name)
        set_properties(client, name, **{STATE: READY, PREVIOUS: live or ""})
        if live is None:
            client.create_alias(name, cfg.alias)
        else:
            client.alter_alias(name, cfg.alias)
        lap("swap")
    except BaseException:
        _discard(client, name)
        raise
    dropped = _prune(client, cfg.alias, name, live, cfg.keep_previous, cfg.orphan_after_s)
    report = RebuildReport(collection=name, model_version=version, profile=profile.name,
                           snapshot_rows=snapshot_rows, written=written, carried_over=carried.written,
                           carry_over_missing=missing, rows=validation.checks["row_count"]["rows"],
                           validation=validation.as_dict(), previous=live, dropped=dropped, seconds=seconds)
    (build_dir / "report.json").write_text(json.dumps(report.as_dict(), indent=2, default=str))
    _LOGGER.info("index swapped", extra={"alias": cfg.alias, "collection": name, "previous": live,
                                         "rows": report.rows, "seconds": seconds})
    return report


def _discard(client: MilvusClient, name: str) -> None:
    """Drops a failed build; if Milvus is unreachable too, the original error still surfaces."""
    try:
        set_properties(client, name, **{STATE: FAILED})
        client.drop_collection(name)
    except Exception:
        _LOGGER.exception("could not drop the failed build; the next rebuild drops it (state: failed)",
                          extra={"collection": name})


def _index_params(client: MilvusClient, profile: IndexProfile):
    params = client.prepare_index_params()
    spec = profile.index_params()
    params.add_index(VECTOR, index_type=spec["index_type"], metric_type=spec["metric_type"], params=spec["params"])
    return params


def rollback_index(settings: SegueSettings, client: MilvusClient | None = None) -> tuple[str, str]:
    """Points the alias back at the collection the serving one replaced: (from, to)."""
    client = client or open_client(settings)
    alias = settings.index.alias
    live = live_collection(client, alias)
    if live is None:
        raise RuntimeError(f"alias {alias!r} serves nothing yet; there is nothing to roll back")
    target = collection_info(client, live).previous
    kept = {b.name: b for b in builds(client, alias)}
    if target not in kept or kept[target].state != READY:
        raise RuntimeError(f"{live} replaced {target or 'nothing'}, which is not kept and ready; "
                           f"kept builds: { {n: b.state for n, b in kept.items()} }")
    if kept[target].stream_gap_us:
        since = datetime.fromtimestamp(kept[target].stream_gap_us / 1e6, timezone.utc).isoformat(timespec="seconds")
        raise RuntimeError(f"{target} misses tracks streamed since {since} (its model version "
                           f"{kept[target].model_version!r} is not in the stream's models folder); "
                           "run `segue index rebuild` with the version you want instead")
    client.load_collection(target)
    client.alter_alias(target, alias)
    _LOGGER.info("index rolled back", extra={"alias": alias, "from": live, "to": target})
    return live, target
