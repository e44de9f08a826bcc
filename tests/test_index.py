"""The Milvus index against Milvus Lite AND a real Milvus standalone server: rebuild (Beam),
validation, alias swap, rollback, newest-wins upserts, and upserts racing a rebuild."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from feast.data_source import PushMode

from segue.features.online import lookup
from segue.indexing.milvus_connection import index_profile, open_client
from segue.indexing.profiles import InvalidIndexProfile, resolve_profile
from segue.indexing.rebuild import RebuildFailed, rebuild_index, rollback_index
from segue.indexing.track_collection import (
    BUILDING, KEY, MODEL_VERSION, builds, collection_info, now_us, set_properties)
from segue.indexing.track_index import TrackIndex
from segue.indexing.upsert import NoIndex, TrackUpserter
from segue.settings import IndexSettings, settings_document
from segue.training.model_versions import ModelVersions

pytestmark = [pytest.mark.spark, pytest.mark.slow]
SERVICE = "track_candidate_v1"


@pytest.fixture(params=["embedded", "server"])
def indexed(request, world, trained, tmp_path):
    """Settings for one engine with an alias of this test's own, the store and the model folder."""
    settings, store = world
    model, _ = trained
    alias = "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    if request.param == "embedded":
        index = IndexSettings(profile="embedded", alias=alias, validation_queries=50)
    else:
        index = IndexSettings(profile="cpu_hnsw", uri=request.getfixturevalue("milvus_server"), alias=alias,
                              validation_queries=50)
    paths = settings.paths.model_copy(update={"index_dir": tmp_path / "index"})
    return settings.model_copy(update={"index": index, "paths": paths}), store, model.path


def catalogue(settings) -> set[str]:
    table = pq.read_table(settings.paths.features_dir / "track_features", columns=[KEY])
    return set(table.column(KEY).to_pylist())


def online_features(store, uri: str) -> dict:
    row = lookup(store, SERVICE, KEY, [uri])[0]
    assert row.found, uri
    return dict(row.features)


def push_online(store, uri: str, features: dict) -> None:
    """What the stream does before it upserts: the track's features into Feast's online store."""
    df = pd.DataFrame([{**features, KEY: uri, "event_timestamp": pd.Timestamp.now(tz="UTC")}])
    store.push("track_push_source", df, to=PushMode.ONLINE)


def columns(features: dict) -> dict:
    return {k: [v] for k, v in features.items()}


def stored(client, alias: str, uri: str) -> list[dict]:
    return client.query(alias, filter=f"{KEY} == {json.dumps(uri)}",
                        output_fields=[KEY, "popularity", "event_time_us", "source"], consistency_level="Strong")


def test_rebuild_validates_swaps_and_rolls_back(indexed):
    settings, store, model = indexed
    client = open_client(settings)
    first = rebuild_index(settings, store, model)
    assert first.previous is None and first.validation["ok"]
    assert first.rows == first.snapshot_rows == len(catalogue(settings)) > 1000
    assert first.validation["checks"]["ann_recall"]["recall"] >= 0.95
    index = TrackIndex(client, settings.index.alias, index_profile(settings))
    assert index.collection == first.collection

    # The version lock: the build names the training whose query tower may search it.
    assert index.model_version == first.model_version == model.name

    # Neighbours come back by similarity, without the track itself, with filter fields.
    track = sorted(catalogue(settings))[7]
    hits = index.nearest_tracks(track, 5, output_fields=["artist_uri"])
    assert len(hits) == 5 and track not in {h.track_uri for h in hits}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    second = rebuild_index(settings, store, model)
    assert second.previous == first.collection and index.collection == second.collection
    third = rebuild_index(settings, store, model)
    # keep_previous=1: the serving build and the one it replaced stay, older ones go.
    assert third.dropped == [first.collection]
    assert [b.name for b in builds(client, settings.index.alias)] == [second.collection, third.collection]

    assert rollback_index(settings, client) == (third.collection, second.collection)
    assert index.collection == second.collection
    assert index.nearest_tracks(track, 5)[0].track_uri == hits[0].track_uri
    with pytest.raises(RuntimeError, match="not kept"):
        rollback_index(settings, client)


def test_a_kept_build_the_stream_cannot_embed_for_is_marked_and_never_rolled_back_to(indexed):
    """Two deployments on one server: the build kept for rollback was made by a model that is not
    in this stream's models folder. The stream keeps serving; the rollback refuses that build."""
    settings, store, model = indexed
    client = open_client(settings)
    first = rebuild_index(settings, store, model)
    second = rebuild_index(settings, store, model)
    set_properties(client, first.collection, **{MODEL_VERSION: "two_tower-of-another-deployment"})
    upserter = TrackUpserter(client, settings.index.alias, ModelVersions(model.parent))
    upserter.warm_up()
    features = online_features(store, sorted(catalogue(settings))[4])
    uri = f"spotify:track:gap-{settings.index.alias}"
    report = upserter.upsert([uri], columns(features), [now_us()])
    assert report[second.collection].written == 1 and report[first.collection].skipped == 1
    assert stored(client, settings.index.alias, uri)
    assert collection_info(client, first.collection).stream_gap_us > 0
    with pytest.raises(RuntimeError, match="misses tracks streamed since"):
        rollback_index(settings, client)
    assert TrackIndex(client, settings.index.alias, index_profile(settings)).collection == second.collection


def test_a_rebuild_failing_validation_leaves_serving_untouched(indexed):
    settings, store, model = indexed
    client = open_client(settings)
    good = rebuild_index(settings, store, model)
    strict = settings.model_copy(update={"index": settings.index.model_copy(update={"max_mean_cosine": 1e-4})})
    with pytest.raises(RebuildFailed, match="mean pairwise cosine") as failure:
        rebuild_index(strict, store, model)
    assert not failure.value.validation.ok
    assert TrackIndex(client, settings.index.alias, index_profile(settings)).collection == good.collection
    # The failed collection is gone; the good one still answers in full.
    assert [b.name for b in builds(client, settings.index.alias)] == [good.collection]
    count = client.query(settings.index.alias, filter="", output_fields=["count(*)"], consistency_level="Strong")
    assert count[0]["count(*)"] == good.rows

    # A catalogue read half-way must not replace the whole index, unless the user says it shrank.
    whole = pq.read_table(Path(settings.paths.index_dir) / "builds" / good.collection / "catalog.parquet")
    half = Path(settings.paths.index_dir) / "half.parquet"
    pq.write_table(whole.slice(0, whole.num_rows // 2), half)
    with pytest.raises(RebuildFailed, match=r"against \d+ in the live collection \(50%.*--force"):
        rebuild_index(settings, store, model, snapshot=half)
    assert TrackIndex(client, settings.index.alias, index_profile(settings)).collection == good.collection
    forced = rebuild_index(settings, store, model, snapshot=half, force=True)
    assert forced.rows == whole.num_rows // 2 and forced.previous == good.collection


def test_a_killed_rebuild_leaves_no_build_behind_for_good(indexed, tmp_path):
    """SIGTERM drops the build on the way out; after SIGKILL the stream stops writing to the orphan
    once it is older than `index.orphan_after_s`, and the next rebuild drops it."""
    settings, store, model = indexed
    if settings.index.profile == "embedded":
        pytest.skip("Milvus Lite opens its file from one process only, and the rebuild here runs in its own")
    client, alias = open_client(settings), settings.index.alias
    rebuild_index(settings, store, model)
    # The command reads the world's own Feast repo, as its settings name it.
    own = settings.model_copy(update={"features": settings.features.model_copy(
        update={"repo_path": Path(store.repo_path)})})
    config = tmp_path / "segue.yaml"
    config.write_text(yaml.safe_dump(settings_document(own)))
    command = [str(Path(sys.executable).parent / "segue"), "index", "rebuild", "--model", str(model)]

    def started_building():
        rebuild = subprocess.Popen(command, env={**os.environ, "SEGUE_CONFIG": str(config)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            building = [b for b in builds(client, alias) if b.state == BUILDING]
            if building:
                return rebuild, building[0].name
            assert rebuild.poll() is None, rebuild.stderr.read().decode()[-3000:]
            time.sleep(0.1)
        rebuild.kill()
        raise AssertionError("the rebuild never started building")

    rebuild, name = started_building()
    rebuild.send_signal(signal.SIGTERM)
    assert rebuild.wait(timeout=120) != 0
    assert name not in {b.name for b in builds(client, alias)}, "SIGTERM left its build behind"

    rebuild, name = started_building()
    rebuild.send_signal(signal.SIGKILL)
    rebuild.wait()
    assert name in {b.name for b in builds(client, alias) if b.state == BUILDING}
    assert name in {t.name for t in TrackUpserter(client, alias, ModelVersions(model.parent), 3600).targets()}
    time.sleep(1.5)
    assert name not in {t.name for t in TrackUpserter(client, alias, ModelVersions(model.parent), 1).targets()}
    quick = settings.model_copy(update={"index": settings.index.model_copy(update={"orphan_after_s": 1})})
    after = rebuild_index(quick, store, model)
    assert name in after.dropped and name not in {b.name for b in builds(client, alias)}


def test_upserts_during_a_rebuild_survive_the_swap(indexed):
    settings, store, model = indexed
    client = open_client(settings)
    alias = settings.index.alias
    with pytest.raises(NoIndex):
        TrackUpserter(client, alias, ModelVersions(model.parent)).targets()
    first = rebuild_index(settings, store, model)
    upserter = TrackUpserter(client, alias, ModelVersions(model.parent))
    changed = sorted(catalogue(settings))[3]
    original = online_features(store, changed)
    base = sorted(catalogue(settings))[11]
    born_early, born_late = f"spotify:track:new-{alias}-1", f"spotify:track:new-{alias}-2"
    late = sorted(catalogue(settings))[17]
    late_original = online_features(store, late)
    events = {}

    def stream(stage: str, building: str) -> None:
        if stage == "snapshot":  # after the catalogue snapshot, before the new collection is filled
            updated = {**original, "popularity": 4242}
            push_online(store, changed, updated)
            push_online(store, born_early, online_features(store, base))
            events["changed"] = now_us()
            upserter.upsert([changed], columns(updated), [events["changed"]])
            upserter.upsert([born_early], columns(online_features(store, base)), [now_us()])
            assert {t.name for t in upserter.targets()} == {first.collection, building}
        if stage == "written":  # after the bulk write: a late update, timed before the rebuild began
            started = collection_info(client, building).started_us
            events["late"] = started - 3_600_000_000
            push_online(store, late, {**late_original, "popularity": 4343})
            upserter.upsert([late], columns({**late_original, "popularity": 4343}), [events["late"]])
        if stage == "validated":  # between validation and the swap
            push_online(store, born_late, online_features(store, base))
            upserter.upsert([born_late], columns(online_features(store, base)), [now_us()])

    try:
        second = rebuild_index(settings, store, model, on_stage=stream)
    finally:
        push_online(store, changed, original)
        push_online(store, late, late_original)
    assert second.previous == first.collection
    # The late update is newer than the track's features, though older than the rebuild: it wins.
    row = stored(client, alias, late)
    assert len(row) == 1 and row[0]["popularity"] == 4343 and row[0]["event_time_us"] == events["late"]
    # The bulk write put the snapshot's older row over the stream's; the carry-over restored it.
    row = stored(client, alias, changed)
    assert len(row) == 1 and row[0]["popularity"] == 4242 and row[0]["event_time_us"] == events["changed"]
    assert stored(client, alias, born_early) and stored(client, alias, born_late)
    assert second.carried_over >= 1 and second.carry_over_missing == []
    count = client.query(alias, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"]
    assert count == second.snapshot_rows + 2


def test_repeated_upserts_leave_one_row_and_the_newest_event_wins(indexed):
    settings, store, model = indexed
    client = open_client(settings)
    rebuild_index(settings, store, model)
    upserter = TrackUpserter(client, settings.index.alias, ModelVersions(model.parent))
    track = sorted(catalogue(settings))[5]
    base = online_features(store, track)
    t = now_us()
    versions = {t + 3: 3, t + 1: 1, t + 2: 2}
    batch = {k: [v] * 2 for k, v in base.items()} | {"popularity": [3, 1]}
    upserter.upsert([track, track], batch, [t + 3, t + 1])  # out of order within one batch
    late = upserter.upsert([track], columns({**base, "popularity": versions[t + 2]}), [t + 2])
    replay = upserter.upsert([track], columns({**base, "popularity": 3}), [t + 3])
    assert all(r.superseded == 1 for r in late.values()) and all(r.written == 1 for r in replay.values())
    rows = stored(client, settings.index.alias, track)
    assert len(rows) == 1 and rows[0]["popularity"] == 3 and rows[0]["event_time_us"] == t + 3


def test_strong_consistency_makes_an_upsert_visible_to_the_next_search(indexed):
    settings, store, model = indexed
    client = open_client(settings)
    built = rebuild_index(settings, store, model)
    upserter = TrackUpserter(client, settings.index.alias, ModelVersions(model.parent))
    features = online_features(store, sorted(catalogue(settings))[9])
    features["track_name"] = features["album_name"] = "a name nobody else has"
    uri = f"spotify:track:fresh-{settings.index.alias}"
    upserter.upsert([uri], columns(features), [now_us()])
    vector = upserter.tower(built.model_version).embed(columns({**features, KEY: uri}))
    index = TrackIndex(client, settings.index.alias, index_profile(settings))
    hits = index.search(vector, 3, consistency_level="Strong")[0]
    assert hits[0].track_uri == uri and hits[0].score > 0.99


def test_index_profiles_are_checked_before_use():
    assert resolve_profile("cpu_hnsw").validate(64).search_params["ef"] >= 100
    with pytest.raises(InvalidIndexProfile, match="ef=50"):
        resolve_profile("cpu_hnsw", search_overrides={"ef": 50}).validate(64)
    with pytest.raises(InvalidIndexProfile, match="GPU cap"):
        resolve_profile("gpu_cagra").validate(64, limit=2000)
    with pytest.raises(InvalidIndexProfile, match="must divide"):
        resolve_profile("gpu_ivf_pq", build_overrides={"m": 7}).validate(64)
    with pytest.raises(InvalidIndexProfile, match="unknown build parameter"):
        resolve_profile("cpu_ivf", build_overrides={"nlists": 10}).validate(64)
    with pytest.raises(InvalidIndexProfile, match="itopk_size"):
        resolve_profile("gpu_cagra", search_overrides={"itopk_size": 64}).validate(64)
    with pytest.raises(InvalidIndexProfile, match="unknown index profile"):
        resolve_profile("gpu_magic")
    # Memory: CAGRA holds vectors plus graph; IVF-PQ only codes, far less.
    cagra, pq_ = resolve_profile("gpu_cagra"), resolve_profile("gpu_ivf_pq")
    assert cagra.memory_bytes(1_000_000, 64) == 1_000_000 * (64 * 4 + 32 * 4)
    assert pq_.memory_bytes(1_000_000, 64) < cagra.memory_bytes(1_000_000, 64) / 5



def test_a_row_milvus_would_refuse_is_named_before_the_write():
    from segue.indexing.track_collection import track_row

    row = track_row("spotify:track:ok", {"artist_uri": "spotify:artist:a", "artist_genres": ["pop", None]},
                    [0.0] * 4, 5, "stream", 6)
    assert row["genres"] == ["pop"] and row["explicit"] == -1 and row["popularity"] == -1
    with pytest.raises(ValueError, match="field `album_uri` has 600 characters"):
        track_row("spotify:track:bad", {"album_uri": "x" * 600}, [0.0] * 4, 5, "stream", 6)


def _collection_rows(client, collection: str) -> dict[str, dict]:
    """Every row of a build but the times it was written at, by track."""
    fields = [KEY, "embedding", "artist_uri", "album_uri", "explicit", "popularity", "release_year",
              "first_added_s", "genres", "source"]
    iterator = client.query_iterator(collection, batch_size=1000, filter=f'{KEY} != ""', output_fields=fields,
                                     consistency_level="Strong")
    rows: dict[str, dict] = {}
    try:
        while batch := iterator.next():
            rows.update({r[KEY]: r for r in batch})
    finally:
        iterator.close()
    return rows


def test_the_rebuild_on_a_local_flink_writes_the_direct_runners_rows(world, trained, milvus_server, tmp_path):
    """The same rebuild pipeline on Beam's portable runner against a local Flink job server (the
    one the stream's Beam test uses): only `index.beam_runner` and `index.beam_options` change."""
    import numpy as np

    from segue.streaming.flink_job_server import FlinkJobServer

    settings, store = world
    model = trained[0].path

    def on(alias: str, runner: str = "DirectRunner", options: list[str] | None = None):
        index = IndexSettings(profile="cpu_hnsw", uri=milvus_server, alias=alias, validation_queries=50,
                              beam_runner=runner, beam_options=options or [])
        paths = settings.paths.model_copy(update={"index_dir": tmp_path / alias})
        return settings.model_copy(update={"index": index, "paths": paths})

    direct = rebuild_index(on("direct_rebuild"), store, model)
    with FlinkJobServer(tmp_path / "flink") as server:
        runner, *options = server.pipeline_options()
        flink = rebuild_index(on("flink_rebuild", runner.split("=", 1)[1], options), store, model)
    assert flink.validation["ok"] and flink.rows == flink.written == direct.rows == direct.snapshot_rows > 1000
    client = open_client(on("direct_rebuild"))
    a, b = _collection_rows(client, direct.collection), _collection_rows(client, flink.collection)
    assert a.keys() == b.keys() and len(a) == direct.rows
    for uri, row in a.items():
        other = b[uri]
        assert {k: v for k, v in row.items() if k != "embedding"} == \
               {k: v for k, v in other.items() if k != "embedding"}, uri
        np.testing.assert_allclose(row["embedding"], other["embedding"], rtol=0, atol=1e-6, err_msg=uri)
