"""`segue evaluate`: exact full-catalog retrieval on the temporal hold-out, against baselines.

    segue evaluate [--model data/models/latest]

The held-out playlists were edited after the split time and never trained on. Each is a challenge
case (ten MPD categories): seed tracks shown, the rest hidden. Every model ranks the whole catalog
with the seeds excluded; the MPD metrics, Recall@K and cold-start recall (hidden tracks first seen
after the split) are reported overall and per category, as JSON, Markdown and a Recall@K plot.

Models: the two-tower model (through its exported towers, as serving runs it), an id-only
factorization model trained by the same code on track ids alone, item-to-item co-occurrence over
the seeds, and popularity.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from feast import FeatureStore

from segue.challenge_metrics import MAX_RANKED, RECALL_KS, PlaylistScores, evaluate_rankings, recall_at_k
from segue.settings import SegueSettings
from segue.ranking.candidates import CandidateSet
from segue.ranking.offline_sources import OfflineSources, neighbour_rankings, ordered
from segue.ranking.ranker_features import ranker_features
from segue.ranking.train_ranker import offline_sources
from segue.training.baselines import TrainingHistory, cooccurrence_rankings, popularity_rankings
from segue.training.case_queries import challenge_queries
from segue.features.track_catalog import TrackCatalog, load_catalog
from segue.training.model_versions import MANIFEST, ModelVersion, ModelVersions
from segue.training.report import (BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES, bootstrap_summary, ranker_comparison,
                                   write_report)
from segue.training.train import train

_LOGGER = logging.getLogger(__name__)
ID_ONLY_VERSION = "id_only"


def tower_rankings(versions: ModelVersions, model: ModelVersion, queries: Mapping[str, Any], catalog: TrackCatalog,
                   seeds: Sequence[Sequence[str]], k: int = MAX_RANKED, chunk: int = 512) -> list[list[str]]:
    """Exact top-k of the exported towers over the whole catalog, each case's seeds excluded."""
    q = versions.query_tower(model).embed(queries)
    c = versions.candidate_tower(model).embed(catalog.features)
    position = {uri: i for i, uri in enumerate(catalog.track_uri)}
    # A block of scores stays near 512 MB however large the catalog.
    chunk = max(1, min(chunk, 2**27 // max(1, len(c))))
    out = []
    for start in range(0, len(q), chunk):
        scores = q[start:start + chunk] @ c.T
        for r, case in enumerate(seeds[start:start + chunk]):
            scores[r, [position[u] for u in case if u in position]] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out += catalog.track_uri[np.take_along_axis(top, order, axis=1)].tolist()
    return out


class _PipelineRankings:
    """The ranking stage offline: candidates merged from both sources (computed once), then the
    ranker's order, the fusion order without it, and the co-occurrence table alone."""

    def __init__(self, settings: SegueSettings, versions: ModelVersions, model: ModelVersion, ranker: dict | None,
                 queries: Mapping[str, Any], catalog: TrackCatalog, seeds: Sequence[Sequence[str]]):
        self.available = bool(ranker) and model.has_ranker
        self.settings, self.versions, self.model, self.facts = settings, versions, model, ranker or {}
        self.queries, self.catalog, self.seeds = queries, catalog, seeds
        self._sources: OfflineSources | None = None
        self._sets: list[CandidateSet] | None = None

    def _candidate_sets(self) -> list[CandidateSet]:
        if self._sets is None:
            self._sources = offline_sources(self.settings, self.versions, self.model, self.catalog,
                                            Path(self.facts["neighbour_table"]))
            vectors = self.versions.query_tower(self.model).embed(self.queries)
            self._sets = self._sources.candidate_sets(vectors, self.seeds, max(self.settings.candidates.tower,
                                                                                MAX_RANKED))
        return self._sets

    def ranked(self) -> list[list[str]]:
        ranker = self.versions.ranker(self.model)
        return [ordered(c, np.argsort(-ranker.score(ranker_features(c)), kind="stable") if c.ranker_applies
                        else c.fused_order(), MAX_RANKED)
                for c in self._candidate_sets()]

    def merged(self) -> list[list[str]]:
        return [ordered(c, c.fused_order(), MAX_RANKED) for c in self._candidate_sets()]

    def neighbours(self) -> list[list[str]]:
        self._candidate_sets()
        return neighbour_rankings(self._sources, self.seeds, MAX_RANKED)


def cold_start_recall(rankings: Sequence[Sequence[str]], holdouts: Sequence[Sequence[str]], cold: set[str],
                      k: int = MAX_RANKED) -> dict[str, float]:
    """Recall@k of hidden tracks first seen after the split, over cases that have any."""
    scores = [recall_at_k(r, [t for t in h if t in cold], k)
              for r, h in zip(rankings, holdouts) if any(t in cold for t in h)]
    return {f"recall@{k}": float(np.mean(scores)) if scores else float("nan"), "playlists": len(scores)}


def _id_only_model(settings: SegueSettings, store: FeatureStore, model: ModelVersion,
                   examples_dir: Path) -> ModelVersion:
    path = model.path / "baselines" / ID_ONLY_VERSION
    if not (path / MANIFEST).exists():
        if path.exists():  # an evaluate stopped while training it: the manifest is written last
            _LOGGER.warning("an unfinished id-only baseline is removed and trained again", extra={"path": str(path)})
            shutil.rmtree(path)
        _LOGGER.info("training the id-only baseline", extra={"path": str(path)})
        # Plain factorization: an id embedding, linearly projected; no cross or hidden layers.
        mf = settings.training.model_copy(update={"inputs": "ids", "layers": [], "cross": "none"})
        ids = settings.model_copy(update={"training": mf})
        train(ids, store, examples_dir=examples_dir, models_dir=path.parent, version=ID_ONLY_VERSION,
              publish_latest=False, with_ranker=False)
    return ModelVersion(path)


def evaluate(settings: SegueSettings, store: FeatureStore, model_dir: Path, out_dir: Path | None = None) -> dict:
    """Scores the model and the baselines; writes metrics.json, metrics.md and recall_at_k.png."""
    versions = ModelVersions(Path(model_dir).parent)
    model = versions.resolve(model_dir)
    model_dir, manifest = model.path, model.manifest
    # The exact run the model trained on, unless a newer build has since replaced it.
    run = Path(manifest["data"]["examples_run"])
    examples_dir = run if run.is_dir() else Path(manifest["data"]["examples"])
    examples_manifest = json.loads((examples_dir / "_manifest.json").read_text())
    split_time = pd.Timestamp(examples_manifest["split_time"])
    out_dir = Path(out_dir or model_dir / "evaluation")
    started = time.perf_counter()

    heldout = pd.read_parquet(examples_dir / "heldout_challenge.parquet")
    timeline = pq.read_table(Path(examples_manifest["features"]) / "playlist_timeline",
                             columns=["pid", "track_uri", "added_at"]).to_pandas()
    history = TrainingHistory(timeline[(timeline.added_at < split_time) & ~timeline.pid.isin(heldout.pid)])
    catalog = load_catalog(store)
    queries = challenge_queries(store, heldout, catalog, settings.features)
    seeds = [list(s) for s in heldout.seed_track_uris]
    holdouts = [list(h) for h in heldout.holdout_track_uris]
    cold = set(catalog.track_uri) - set(history.tracks)

    staged = _PipelineRankings(settings, versions, model, manifest.get("ranker"), queries, catalog, seeds)
    rankers = {
        "two_tower": lambda: tower_rankings(versions, model, queries, catalog, seeds),
        **({"full_pipeline": staged.ranked, "merged_sources": staged.merged, "neighbours": staged.neighbours}
           if staged.available else {}),
        "id_only_mf": lambda: tower_rankings(versions, _id_only_model(settings, store, model, examples_dir),
                                             queries, catalog, seeds),
        "cooccurrence": lambda: cooccurrence_rankings(history, seeds, MAX_RANKED),
        "popularity": lambda: popularity_rankings(history, seeds, MAX_RANKED),
    }
    pids = heldout.pid.tolist()
    results: dict[str, Any] = {}
    per_playlist: dict[str, PlaylistScores] = {}
    for name, rank in rankers.items():
        t = time.perf_counter()
        rankings = rank()
        seconds = time.perf_counter() - t
        scored = evaluate_rankings(dict(zip(pids, rankings)), dict(zip(pids, holdouts)),
                                   dict(zip(pids, heldout.category)), per_playlist=True)
        per_playlist[name] = scored.pop("per_playlist")
        results[name] = {**scored, "cold_start": cold_start_recall(rankings, holdouts, cold),
                         "seconds": round(seconds, 2)}
        _LOGGER.info("model scored", extra={"model": name, "seconds": round(seconds, 1),
                                            **{m: round(scored["overall"][m], 4) for m in ("recall@100", "ndcg")}})
    # 95% bootstrap intervals over the held-out playlists, and paired comparisons with co-occurrence;
    # a fixed seed: the same report for the same rankings, every model resampled on the same draws.
    bootstrap_seed = 0
    intervals, comparisons = bootstrap_summary(per_playlist, seed=bootstrap_seed)
    for name, model_intervals in intervals.items():
        results[name]["intervals"] = model_intervals
    report = {
        "model": manifest["version"], "model_dir": str(model_dir),
        "heldout_playlists": len(heldout), "catalog_tracks": len(catalog), "cold_start_tracks": len(cold),
        "split_time": examples_manifest["split_time"], "recall_ks": list(RECALL_KS),
        "seconds": round(time.perf_counter() - started, 1), "models": results,
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "level": BOOTSTRAP_LEVEL, "seed": bootstrap_seed,
                      "unit": "held-out playlist"},
        "comparisons": comparisons,
        "ranker_vs_retrieval": ranker_comparison(per_playlist, seed=bootstrap_seed),
    }
    write_report(report, out_dir)
    # The version's manifest carries its held-out figures too, next to the validation ones.
    manifest["evaluation"] = {"report": str(out_dir / "metrics.json"), "heldout_playlists": len(heldout),
                              "overall": results["two_tower"]["overall"],
                              "intervals": results["two_tower"]["intervals"],
                              "cold_start": results["two_tower"]["cold_start"]}
    (model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return report
