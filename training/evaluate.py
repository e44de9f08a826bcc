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
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from feast import FeatureStore

from segue.batch.mpd.metrics import MAX_RANKED, RECALL_KS, PlaylistScores, evaluate_rankings, recall_at_k
from segue.features.playlist_features import playlist_query_features
from segue.settings import FeatureSettings, SegueSettings
from segue.training.baselines import TrainingHistory, cooccurrence_rankings, popularity_rankings
from segue.training.data import QUERY_SERVICE, Catalog, load_catalog
from segue.training.export import ExportedTower, load_tower
from segue.training.feature_inputs import ID_SEQUENCE, service_inputs
from segue.training.report import BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES, bootstrap_summary, write_report
from segue.training.train import train

_LOGGER = logging.getLogger(__name__)
ID_ONLY_VERSION = "id_only"


def challenge_queries(store: FeatureStore, heldout: pd.DataFrame, catalog: Catalog,
                      sequences: FeatureSettings) -> dict[str, list]:
    """Each case's query features, shaped as Feast serves `playlist_query_v1` (bare names).

    First-k cases are the playlist as it was just before its first hidden track: Feast's
    point-in-time read at `query_as_of`. Random-seed cases have no such moment; they take the
    playlist's final scalar features (the MPD challenge also reveals a playlist's size) with the
    id sequences built from the seeds alone, by the function serving uses for a new playlist.
    The name is the case's (empty when untitled).
    """
    service = store.get_feature_service(QUERY_SERVICE)
    as_of = heldout.query_as_of.fillna(heldout.modified_at)
    entity_df = pd.DataFrame({"pid": heldout.pid.to_numpy(), "case_row": np.arange(len(heldout)),
                              "event_timestamp": pd.to_datetime(as_of, utc=True).dt.as_unit("us")})
    df = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    df = df.sort_values("case_row").reset_index(drop=True)
    columns = {c: df[c].tolist() for c in df.columns if c not in ("case_row", "event_timestamp")}
    columns["name"] = heldout.name.tolist()
    sequence_names = [s.name for s in service_inputs(store, QUERY_SERVICE, embed_entity_key=False)
                      if s.encoding == ID_SEQUENCE]
    position = {uri: i for i, uri in enumerate(catalog.track_uri)}
    track_ids = {n: catalog.features[n].to_pylist() for n in ("artist_uri", "album_uri")}
    for row in np.flatnonzero(heldout.query_as_of.isna().to_numpy()):
        seeds = list(heldout.seed_track_uris.iloc[row])
        tracks = {u: {n: ids[position[u]] for n, ids in track_ids.items()} for u in seeds if u in position}
        built = playlist_query_features("", seeds, tracks, sequences)
        for name in sequence_names:
            columns[name][row] = built[name][0]
    return columns


def tower_rankings(model_dir: Path, queries: Mapping[str, Any], catalog: Catalog,
                   seeds: Sequence[Sequence[str]], k: int = MAX_RANKED, chunk: int = 512) -> list[list[str]]:
    """Exact top-k of the exported towers over the whole catalog, each case's seeds excluded."""
    query_tower: ExportedTower = load_tower(model_dir / "query")
    candidate_tower: ExportedTower = load_tower(model_dir / "candidate")
    q = query_tower.embed(queries)
    c = candidate_tower.embed(catalog.features)
    position = {uri: i for i, uri in enumerate(catalog.track_uri)}
    out = []
    for start in range(0, len(q), chunk):
        scores = q[start:start + chunk] @ c.T
        for r, case in enumerate(seeds[start:start + chunk]):
            scores[r, [position[u] for u in case if u in position]] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out += catalog.track_uri[np.take_along_axis(top, order, axis=1)].tolist()
    return out


def cold_start_recall(rankings: Sequence[Sequence[str]], holdouts: Sequence[Sequence[str]], cold: set[str],
                      k: int = MAX_RANKED) -> dict[str, float]:
    """Recall@k of hidden tracks first seen after the split, over cases that have any."""
    scores = [recall_at_k(r, [t for t in h if t in cold], k)
              for r, h in zip(rankings, holdouts) if any(t in cold for t in h)]
    return {f"recall@{k}": float(np.mean(scores)) if scores else float("nan"), "playlists": len(scores)}


def _id_only_model(settings: SegueSettings, store: FeatureStore, model_dir: Path, examples_dir: Path) -> Path:
    path = model_dir / "baselines" / ID_ONLY_VERSION
    if not (path / "manifest.json").exists():
        _LOGGER.info("training the id-only baseline", extra={"path": str(path)})
        # Plain factorization: an id embedding, linearly projected; no cross or hidden layers.
        mf = settings.training.model_copy(update={"inputs": "ids", "layers": [], "cross": "none"})
        ids = settings.model_copy(update={"training": mf})
        train(ids, store, examples_dir=examples_dir, models_dir=path.parent, version=ID_ONLY_VERSION,
              publish_latest=False)
    return path


def evaluate(settings: SegueSettings, store: FeatureStore, model_dir: Path, out_dir: Path | None = None) -> dict:
    """Scores the model and the baselines; writes metrics.json, metrics.md and recall_at_k.png."""
    model_dir = Path(model_dir).resolve()
    manifest = json.loads((model_dir / "manifest.json").read_text())
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

    rankers = {
        "two_tower": lambda: tower_rankings(model_dir, queries, catalog, seeds),
        "id_only_mf": lambda: tower_rankings(_id_only_model(settings, store, model_dir, examples_dir),
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
    }
    write_report(report, out_dir)
    # The version's manifest carries its held-out figures too, next to the validation ones.
    manifest["evaluation"] = {"report": str(out_dir / "metrics.json"), "heldout_playlists": len(heldout),
                              "overall": results["two_tower"]["overall"],
                              "intervals": results["two_tower"]["intervals"],
                              "cold_start": results["two_tower"]["cold_start"]}
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return report
