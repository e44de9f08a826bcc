"""Fits the ranking stage of a model version on the cases after the split time.

The towers and the co-occurrence table learn from playlist entries before T; the ranker's targets
are only tracks added at or after T (`ranker_cases.parquet`, from validation and test playlists),
so the source scores it learns to weigh are the ones it will meet on unseen data.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore

from segue.ranking.candidates import CandidateSet
from segue.ranking.offline_sources import OfflineSources
from segue.ranking.ranker import export_ranker, fit_ranker
from segue.ranking.ranker_features import ranker_features
from segue.settings import SegueSettings
from segue.training.case_queries import challenge_queries
from segue.features.track_catalog import TrackCatalog, load_catalog
from segue.training.model_versions import ModelVersion, ModelVersions

_LOGGER = logging.getLogger(__name__)
NEIGHBOURS_TABLE = "track_neighbours"


def offline_sources(settings: SegueSettings, versions: ModelVersions, model: ModelVersion, catalog: TrackCatalog,
                    neighbour_table: Path) -> OfflineSources:
    embeddings = versions.candidate_tower(model).embed(catalog.features)
    return OfflineSources(catalog.track_uri, embeddings, catalog.features["artist_uri"].to_pylist(), neighbour_table,
                          settings.candidates)


def _utc(value) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t


def labelled_rows(sets: list[CandidateSet], targets: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([ranker_features(c) for c in sets])
    y = np.concatenate([np.isin(c.track_uri, t) for c, t in zip(sets, targets)]).astype(np.float32)
    return x, y


def train_ranker(settings: SegueSettings, store: FeatureStore, versions: ModelVersions, model: ModelVersion,
                 examples_dir: Path, neighbour_table: Path, verbose: int = 0) -> dict:
    """Writes the version's ranker and returns its facts (cases, rows, the targets' time window)."""
    started = time.perf_counter()
    cfg = settings.ranker
    split_time = pd.Timestamp(json.loads((Path(examples_dir) / "_manifest.json").read_text())["split_time"])
    cases = pd.read_parquet(Path(examples_dir) / "ranker_cases.parquet")
    if len(cases) > cfg.max_cases:
        cases = cases.sample(cfg.max_cases, random_state=cfg.seed)
    if cases.empty:
        raise ValueError(f"{examples_dir}/ranker_cases.parquet holds no cases: no playlist was edited after the "
                         "split time. Use more playlists or a lower examples.split_quantile")
    cases = cases.reset_index(drop=True).assign(name="", modified_at=lambda d: d.query_as_of)
    catalog = load_catalog(store)
    queries = challenge_queries(store, cases, catalog, settings.features)
    vectors = versions.query_tower(model).embed(queries)
    sources = offline_sources(settings, versions, model, catalog, neighbour_table)
    seeds = [list(s) for s in cases.seed_track_uris]
    sets = sources.candidate_sets(vectors, seeds, settings.candidates.tower)
    x, y = labelled_rows(sets, [list(t) for t in cases.target_track_uris])
    fit_started = time.perf_counter()
    ranker = fit_ranker(x, y, cfg, verbose=verbose)
    fit_seconds = time.perf_counter() - fit_started
    facts = {
        "cases": len(cases), "rows": len(x), "positives": int(y.sum()),
        "retrieval_window_end": split_time.isoformat(),
        "targets_from": _utc(cases.first_target_at.min()).isoformat(),
        "neighbour_table": str(Path(neighbour_table).resolve()),
        "candidates": settings.candidates.model_dump(), "settings": cfg.model_dump(),
        "rows_per_s": round(len(x) * cfg.epochs / fit_seconds), "seconds": round(time.perf_counter() - started, 1),
    }
    export_ranker(model.ranker_path, ranker, facts)
    _LOGGER.info("ranker written", extra={k: facts[k] for k in ("cases", "rows", "positives", "seconds")})
    return facts
