"""Feast as the single source of features: real Feast, real SQLite, real Redis, real Spark.

One generated sample is ingested and turned into feature tables once per module; each profile's
registry and online store live in the module's temporary folder.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

from segue.batch.build_examples import build_examples
from segue.batch.build_features import build_features, playlist_snapshots
from segue.batch.example_features import EXAMPLE_COLUMNS, join_chunk
from segue.batch.contracts import ContractViolation
from segue.batch.ingest_mpd import ingest
from segue.batch.synth import generate
from segue.features.materialize import materialize
from segue.features.online import lookup
from segue.feature_repo.asof_offline_store import AsofDuckDBOfflineStore
from segue.features.source_check import FeatureSourceError, check_feature_sources
from segue.features.store import REPO_PATH, apply_definitions, open_store
from segue.settings import load_settings
from segue.vocabulary import PLAYLIST_SERVICE, TRACK_SERVICE

pytestmark = [pytest.mark.spark, pytest.mark.slow]
RECENT = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark, redis_url):
    """Settings, a copy of the feature repo, and the feature tables of a generated sample."""
    root = tmp_path_factory.mktemp("features")
    mpd = root / "mpd"
    generate(mpd, playlists=600, seed=5, tastes=8, start=date(2015, 1, 1), end=date(2017, 1, 1),
             challenge_playlists=20, progress=False)
    settings = load_settings(paths={"data_dir": root},
                             examples={"positions_per_playlist": 4, "positions_per_chunk": 600},
                             features={"redis_connection_string": redis_url, "recent_tracks": RECENT})
    ingest(spark, mpd, settings.paths.warehouse_dir, mpd / "metadata")
    build_features(spark, settings.paths.warehouse_dir, settings.paths.features_dir, settings.features)
    repo = root / "feature_repo"
    shutil.copytree(REPO_PATH, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return settings, repo


def _store(world, profile):
    settings, repo = world
    apply_definitions(settings, profile, repo)
    return open_store(settings, profile, repo)


def _timeline(world) -> pd.DataFrame:
    settings, _ = world
    return pq.read_table(settings.paths.features_dir / "playlist_timeline").to_pandas()


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and pd.isna(a) and pd.isna(b):
        return True
    if hasattr(a, "tolist"):
        a = a.tolist()
    if hasattr(b, "tolist"):
        b = b.tolist()
    return (a is None or a != a) and (b is None or b != b) if a is None or b is None else a == b


@pytest.mark.parametrize("profile", ["local", "redis"])
def test_offline_equals_online_as_of_a_time(world, spark, profile):
    """get_historical_features at t == get_online_features after materializing up to t."""
    store = _store(world, profile)
    timeline = _timeline(world)
    # Half a second past a whole second: no snapshot sits exactly on t.
    t = timeline.added_at.quantile(0.6).floor("s").to_pydatetime() + timedelta(milliseconds=500)
    materialize(store, spark, end=t)

    pids = sorted(timeline.pid.drop_duplicates().sample(60, random_state=1))
    tracks = sorted(timeline.track_uri.drop_duplicates().sample(60, random_state=2))
    for service, key, keys in (("playlist_query_v1", "pid", pids), ("track_candidate_v1", "track_uri", tracks)):
        entity_df = pd.DataFrame({key: keys, "event_timestamp": [t] * len(keys)})
        offline = store.get_historical_features(entity_df=entity_df,
                                                features=store.get_feature_service(service)).to_df()
        offline = offline.set_index(key).loc[keys]
        online = {row.key: row for row in lookup(store, service, key, keys)}
        names = [c for c in offline.columns if c != "event_timestamp"]
        existed = 0
        for k in keys:
            off = offline.loc[k]
            known = not all(off[n] is None or (not hasattr(off[n], "__len__") and pd.isna(off[n])) for n in names)
            assert online[k].found == known, f"{service} {k}: online found={online[k].found}, offline known={known}"
            existed += known
            if known:
                for n in names:
                    assert _same(off[n], online[k].features[n]), f"{service} {k} {n}: {off[n]!r} != {online[k].features[n]!r}"
        assert 0 < existed < len(keys) or service == "track_candidate_v1", "t should split old from new"


def test_unknown_entities_are_marked_missing(world, spark):
    store = _store(world, "local")
    materialize(store, spark)
    rows = lookup(store, "track_candidate_v1", "track_uri", ["spotify:track:0000000000000000000000"])
    assert rows[0].found is False and rows[0].features == {} and "track_name" in rows[0].missing_features
    assert lookup(store, "playlist_query_v1", "pid", [10**9])[0].found is False


@pytest.fixture(scope="module")
def examples(world, spark):
    settings, _ = world
    store = _store(world, "local")
    out = settings.paths.examples_dir
    manifest = build_examples(spark, settings, store, out)
    read = {s: pq.read_table(out / s).to_pandas() for s in ("train", "validation", "test")}
    return manifest, read, pd.read_parquet(out / "heldout_challenge.parquet")


def test_examples_carry_nothing_from_their_future(world, examples):
    manifest, splits, heldout = examples
    timeline = _timeline(world).sort_values(["pid", "pos"])
    tracks_of = timeline.groupby("pid").track_uri.apply(list).to_dict()
    t = pd.Timestamp(manifest["split_time"])
    train = splits["train"]
    assert len(train) > 0 and (train.added_at < t).all()
    assert all((splits[s].added_at >= t).all() for s in ("validation", "test"))
    assert not set(heldout.pid) & set(train.pid), "held-out playlists leaked into training"
    for row in train.itertuples():
        # The query is the playlist as it was: exactly the tracks before the query position, all
        # of them in `track_uris`. The label is a track at that position or later.
        before = tracks_of[row.pid][:row.pos]
        assert row.playlist_snapshots__num_tracks == row.pos
        assert list(row.playlist_snapshots__track_uris) == before
        assert list(row.playlist_snapshots__recent_track_uris) == before[-RECENT:] if before else \
            len(row.playlist_snapshots__recent_track_uris) == 0
        assert row.label_pos >= row.pos and tracks_of[row.pid][row.label_pos] == row.track_uri
        assert row.query_at <= row.added_at
    # Positions grow with a playlist's length up to the cap: a share of its tracks, at least one.
    cfg = world[0].examples
    last_edit = timeline.groupby("pid").added_at.max()
    past = last_edit[last_edit < t].index
    sampled = train[train.pid.isin(past)].groupby("pid").pos.nunique()
    lengths = timeline.groupby("pid").size()[past]
    wanted = np.minimum(cfg.positions_per_playlist, np.maximum(1, np.ceil(lengths * cfg.positions_share)))
    assert sampled.reindex(past, fill_value=0).equals(wanted.astype(int)) and wanted.nunique() > 1
    # Labels reach past the next track, and query positions are read once for several labels.
    assert (train.label_pos > train.pos).mean() > 0.3
    assert manifest["query_positions"] < sum(manifest["counts"].values())
    assert manifest["chunks"] > 1, "the world should exercise the chunked feature join"
    # The label track's features existed when it was added (first added at or before then).
    assert train.track_features__track_name.notna().all()
    expected = train.track_uri.map(train.track_uri.value_counts() / len(train))
    assert (train.candidate_sampling_probability - expected).abs().max() < 1e-12
    sampling = pd.read_parquet(Path(world[0].paths.examples_dir) / "track_sampling.parquet")
    assert abs(sampling.probability.sum() - 1) < 1e-9
    assert (train.candidate_sampling_probability > 0).all()


def test_each_chunk_joins_a_run_of_playlists_from_pid_sorted_snapshots(world, examples):
    """What keeps `segue batch examples` linear in the data: a chunk is a range of pids and every
    snapshot file is sorted by pid, so a chunk's point-in-time join reads only its playlists' row
    groups, not the whole table once per chunk."""
    settings, _ = world
    pids_of: dict[str, set] = {}
    for part in Path(settings.paths.examples_dir).glob("*/part-*.parquet"):
        pids_of.setdefault(part.name, set()).update(pq.read_table(part, columns=["pid"]).column("pid").to_pylist())
    ranges = sorted((min(p), max(p)) for p in pids_of.values() if p)
    assert 1 < len(ranges) <= examples[0]["chunks"]
    assert all(hi < next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:])), ranges
    for part in (Path(settings.paths.features_dir) / "playlist_snapshots").glob("*.parquet"):
        pids = pq.read_table(part, columns=["pid"]).column("pid").to_numpy()
        assert (np.diff(pids) >= 0).all(), f"{part.name} is not sorted by pid"


def _ordered(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.take(pa.array(table.select(keys).to_pandas().sort_values(keys).index.to_numpy()))


def test_the_asof_join_answers_as_feasts_own_duckdb_store(world, examples):
    """The profiles' offline store joins with DuckDB's ASOF JOIN: same rows as Feast's own join, for
    the examples' chunks and for the edges (before any row, exactly at a row's time, an unknown key,
    a repeated entity row, a ttl that has run out)."""
    settings, repo = world
    store = _store(world, "local")
    assert isinstance(store._get_provider().offline_store, AsofDuckDBOfflineStore)
    stock = open_store(settings, "local", repo, offline_store={"type": "duckdb"})
    assert type(stock._get_provider().offline_store) is DuckDBOfflineStore
    train = examples[1]["train"][list(EXAMPLE_COLUMNS)]
    for chunk in np.array_split(train.sort_values("pid"), 3):
        ours = join_chunk(store, chunk, PLAYLIST_SERVICE, TRACK_SERVICE)
        assert ours.equals(join_chunk(stock, chunk, PLAYLIST_SERVICE, TRACK_SERVICE))

    snapshots = pq.read_table(settings.paths.features_dir / "playlist_snapshots",
                              columns=["pid", "event_timestamp"]).to_pandas()
    first = snapshots.sort_values("event_timestamp").drop_duplicates("pid").head(3)
    at = pd.to_datetime(first.event_timestamp, utc=True)
    entity_df = pd.DataFrame({
        "pid": [*first.pid, *first.pid, first.pid.iloc[0], 10**9, first.pid.iloc[1]],
        "event_timestamp": [*(at - pd.Timedelta(seconds=1)), *at, at.iloc[0], at.iloc[0],
                            at.iloc[1] + pd.Timedelta(days=3650)]})
    view = store.get_feature_view("playlist_snapshots")
    refs = [f"playlist_snapshots:{f.name}" for f in view.features]
    registry = store.registry
    answers = {}
    for ttl in (view.ttl, timedelta(days=30)):
        view.ttl = ttl
        for cls in (AsofDuckDBOfflineStore, DuckDBOfflineStore):
            job = cls.get_historical_features(store.config, [view], refs, entity_df.copy(), registry,
                                              store.project, full_feature_names=True)
            answers[cls] = _ordered(job.to_arrow(), ["pid", "event_timestamp"]).to_pandas()
        ours, feasts = answers[AsofDuckDBOfflineStore], answers[DuckDBOfflineStore]
        assert ours.playlist_snapshots__num_tracks.isna().sum() == (5 if ttl.days == 30 else 4)
        assert all(_same(a, b) for column in ours.columns for a, b in zip(ours[column], feasts[column])), ttl


def test_snapshot_files_hold_ranges_of_playlists(world, spark):
    """The snapshot table is range-partitioned by pid before its window (which then needs no other
    shuffle), so each file holds a run of playlists and a chunk's join reads one file's row groups;
    hash-partitioned files each spanned every pid (at 1M playlists, a chunk read 87 row groups)."""
    settings, _ = world
    timeline = spark.read.parquet(str(settings.paths.features_dir / "playlist_timeline"))
    playlists = spark.read.parquet(str(Path(settings.paths.warehouse_dir) / "playlists"))
    plan = playlist_snapshots(playlists, timeline, settings.features)._jdf.queryExecution().executedPlan().toString()
    lines = plan.splitlines()
    window = next(i for i, line in enumerate(lines) if "Window [" in line)
    below = next(line for line in lines[window + 1:] if "Exchange" in line)
    assert "Exchange rangepartitioning(pid" in below, plan


def test_examples_list_features_only_through_the_services(world, spark, examples):
    """Adding a feature to a FeatureService changes examples and online vectors, with no other edit."""
    manifest, splits, _ = examples
    assert "playlist_snapshots__num_edits" in splits["train"].columns

    settings, repo = world
    edited = repo.parent / "feature_repo_edited"
    shutil.copytree(repo, edited, ignore=shutil.ignore_patterns("data", "__pycache__"))
    definitions = edited / "definitions.py"
    text = definitions.read_text()
    narrowed = text.replace('features=[playlist_snapshots_fv[QUERY_FEATURES]],',
                            'features=[playlist_snapshots_fv[["name", "recent_track_uris"]]],')
    assert narrowed != text
    definitions.write_text(narrowed)
    apply_definitions(settings, "local", edited)
    store = open_store(settings, "local", edited)
    out = settings.paths.data_dir / "examples_narrow"
    narrow = build_examples(spark, settings, store, out)
    columns = set(pq.read_table(out / "train").column_names)
    assert {"playlist_snapshots__name", "playlist_snapshots__recent_track_uris"} <= columns
    assert "playlist_snapshots__num_edits" not in columns
    assert narrow["feature_services"]["playlist_query_v1"] == [
        "playlist_snapshots__name", "playlist_snapshots__recent_track_uris"]
    materialize(store, spark)
    row = lookup(store, "playlist_query_v1", "pid", [0])[0]
    assert set(row.features) == {"name", "recent_track_uris"}


def test_a_view_pointing_at_a_missing_column_fails_clearly(world, spark):
    settings, repo = world
    broken = repo.parent / "feature_repo_broken"
    shutil.copytree(repo, broken, ignore=shutil.ignore_patterns("data", "__pycache__"))
    definitions = broken / "definitions.py"
    definitions.write_text(definitions.read_text().replace(
        'Field(name="track_name", dtype=String),', 'Field(name="track_name", dtype=String),\n        Field(name="mood", dtype=String),'))
    apply_definitions(settings, "local", broken)
    store = open_store(settings, "local", broken)
    with pytest.raises(FeatureSourceError, match=r"view `track_features`: feature `mood` has no column"):
        check_feature_sources(store)
    with pytest.raises(FeatureSourceError, match="mood"):
        materialize(store, spark)


def test_a_table_breaking_its_contract_is_not_materialized(world, spark, tmp_path):
    settings, repo = world
    features = settings.paths.features_dir
    bad = tmp_path / "features"
    shutil.copytree(Path(features).resolve(), bad)
    tracks = pq.read_table(bad / "track_features").to_pandas()
    tracks.loc[:2, "popularity"] = 250
    shutil.rmtree(bad / "track_features")
    (bad / "track_features").mkdir()
    tracks.to_parquet(bad / "track_features" / "part-0.parquet", index=False)

    bad_settings = settings.model_copy(update={"paths": settings.paths.model_copy(update={"features_dir": bad})})
    apply_definitions(bad_settings, "local", repo)
    store = open_store(bad_settings, "local", repo)
    online_db = repo / "data" / "online_store.db"
    before = online_db.stat().st_mtime_ns if online_db.exists() else None
    with pytest.raises(ContractViolation, match=r"`popularity` is within \[0, 100\].*3 of"):
        materialize(store, spark)
    assert (online_db.stat().st_mtime_ns if online_db.exists() else None) == before


def test_spark_offline_store_gives_the_same_point_in_time_answer(world):
    timeline = _timeline(world)
    sample = timeline.sample(40, random_state=3)
    entity_df = pd.DataFrame({"pid": sample.pid.values,
                              "event_timestamp": (sample.added_at - pd.Timedelta(seconds=1)).values})
    answers = {}
    for profile in ("local", "spark"):
        store = _store(world, profile)
        df = store.get_historical_features(entity_df=entity_df.copy(),
                                           features=store.get_feature_service("playlist_query_v1")).to_df()
        answers[profile] = df.sort_values(["pid", "event_timestamp"]).reset_index(drop=True)
    for column in ("num_tracks", "name"):
        assert answers["local"][column].tolist() == answers["spark"][column].tolist()
    assert [list(x) for x in answers["local"].recent_track_uris] == \
        [list(x) for x in answers["spark"].recent_track_uris]
