"""A generated sample taken through every batch stage into a private copy of the Feast repo:
the data that tests and benchmarks train and index on, without touching `feature_repo/data/`."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

from feast import FeatureStore

from segue.settings import SegueSettings


def build_sample_world(spark, settings: SegueSettings, playlists: int, seed: int, tastes: int,
                       start: date, challenge_playlists: int) -> FeatureStore:
    """generate -> ingest -> features -> feast apply -> examples -> neighbours -> materialize, all under
    `settings.paths.data_dir`; returns the store of the repo copy (SQLite online, DuckDB offline)."""
    from segue.batch.build_examples import build_examples
    from segue.batch.build_features import build_features
    from segue.batch.build_neighbours import build_neighbours
    from segue.batch.ingest_mpd import ingest
    from segue.batch.synth import generate
    from segue.features.materialize import materialize
    from segue.features.store import REPO_PATH, apply_definitions, open_store

    paths = settings.paths
    generate(paths.mpd_dir, playlists=playlists, seed=seed, tastes=tastes, start=start, end=date(2017, 11, 1),
             challenge_playlists=challenge_playlists, progress=False)
    ingest(spark, paths.mpd_dir, paths.warehouse_dir, paths.metadata_dir)
    build_features(spark, paths.warehouse_dir, paths.features_dir, settings.features)
    repo = Path(paths.data_dir) / "feature_repo"
    shutil.copytree(REPO_PATH, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    apply_definitions(settings, "local", repo)
    store = open_store(settings, "local", repo)
    build_examples(spark, settings, store, paths.examples_dir)
    build_neighbours(spark, paths.features_dir, paths.examples_dir, paths.neighbours_dir, settings.candidates)
    materialize(store, spark, full=True)
    return store


def private_feature_repo(settings: SegueSettings, root: Path, spark, profile: str = "local") -> SegueSettings:
    """Settings whose feature tables and Feast repo are fresh copies under `root`, applied and
    materialized: a place to push into without touching the original (tests, benchmarks).

    The original repo's data/ folder is never copied: its registry names the original SQLite file,
    and `feast apply` in a copy drops the original's tables as moved.
    """
    from segue.features.materialize import materialize
    from segue.features.store import REPO_PATH, apply_definitions, open_store

    root = Path(root)
    shutil.copytree(Path(settings.paths.features_dir).resolve(), root / "features")
    shutil.copytree(REPO_PATH, root / "feature_repo", ignore=shutil.ignore_patterns("data", "__pycache__"))
    paths = settings.paths.model_copy(update={"features_dir": root / "features", "stream_dir": root / "stream",
                                              "index_dir": root / "index"})
    features = settings.features.model_copy(update={"repo_path": root / "feature_repo", "profile": profile})
    copy = settings.model_copy(update={"paths": paths, "features": features})
    apply_definitions(copy)
    materialize(open_store(copy), spark, full=True)
    return copy
