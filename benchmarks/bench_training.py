"""Training and tower benchmark: examples/s, evaluation time, candidate tower tracks/s, query
tower latency.

    python benchmarks/bench_training.py [--playlists 10000] [--out docs/benchmarks/training.json]
    python benchmarks/bench_training.py --data demo-data      (reuse `make demo`'s output)

Builds a generated sample through ingest, features, Feast (a copy of the repo, SQLite online) and
examples unless --data names a folder that has them, then measures in one run:
- steady-state training examples/s (epochs after the first; no callbacks) at batch 1024 and 4096;
- a full `segue train` (validation each epoch, export) and `segue evaluate` (four models);
- the exported candidate tower over the whole catalog, from Feast-shaped columns, tracks/s;
- the exported query tower on one playlist: signature call alone, and Feast online read + embed,
  p50/p99 over 1,000 requests.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from segue.features.store import open_store
from segue.logs import configure_logging
from segue.settings import load_settings

from bench_record import new_record, write_record
from latency import latency_ms  # benchmarks/ is on sys.path when a benchmark runs

REPO = Path(__file__).resolve().parents[1]


def build_data(root: Path, playlists: int):
    from segue.batch.spark_session import build_spark
    from segue.sample_world import build_sample_world

    settings = load_settings(paths={"data_dir": root})
    spark = build_spark("bench-training", settings.spark)
    store = build_sample_world(spark, settings, playlists, seed=7, tastes=32, start=date(2011, 1, 1),
                               challenge_playlists=100)
    spark.stop()
    return settings, store


def steady_examples_per_s(settings, store, batch_size: int, epochs: int = 3) -> dict:
    from segue.training.train import prepare

    cfg = settings.training.model_copy(update={"batch_size": batch_size})
    setup = prepare(settings.model_copy(update={"training": cfg}), store, settings.paths.examples_dir)
    setup.model.fit(setup.dataset, epochs=1, verbose=0)  # traces the step functions
    t = time.perf_counter()
    setup.model.fit(setup.dataset, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - t
    return {"batch_size": batch_size, "examples_per_s": round(epochs * setup.steps_per_epoch * batch_size / seconds),
            "epochs_timed": epochs, "train_examples": setup.train_examples}


def scann_vs_exact(model_dir: Path, query, catalog_embeddings: np.ndarray, track_uris: np.ndarray,
                   store, service, pids: list[int], k: int = 100) -> dict:
    """The exported ScaNN retrieval model against exact scoring: recall@k of ScaNN's top k among
    the exact top k, and single-request latency of each."""
    import scann  # noqa: F401  (registers the ScaNN ops)
    import tensorflow as tf

    retrieval = tf.saved_model.load(str(model_dir / "retrieval")).signatures["serving_default"]
    rows = [store.get_online_features(features=service, entity_rows=[{"pid": p}]).to_dict() for p in pids[:200]]
    overlap = []
    for row in rows:
        exact = np.argsort(-(query.embed(row) @ catalog_embeddings.T)[0])[:k]
        approx = retrieval(**query.tensors(row))["track_uris"].numpy()[0, :k]
        overlap.append(len(set(track_uris[exact]) & {u.decode() for u in approx}) / k)
    tensors = query.tensors(rows[0])
    exact_call = lambda: np.argpartition(-(query.embed(rows[0]) @ catalog_embeddings.T)[0], k)[:k]  # noqa: E731
    return {"k": k, "recall_vs_exact": round(float(np.mean(overlap)), 4), "queries": len(rows),
            "catalog_tracks": len(track_uris),
            "scann_request": latency_ms(lambda: retrieval(**tensors), 500),
            "exact_numpy_request": latency_ms(exact_call, 500)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--playlists", type=int, default=10_000)
    p.add_argument("--data", type=Path, default=None, help="a folder with examples, e.g. demo-data")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "training.json")
    args = p.parse_args(argv)
    configure_logging("text", "WARNING")
    import tensorflow as tf

    from segue.features.track_catalog import load_catalog
    from segue.training.evaluate import evaluate
    from segue.training.export import load_tower
    from segue.training.train import train

    tmp = Path(tempfile.mkdtemp(prefix="segue-bench-training-"))
    try:
        if args.data:
            settings = load_settings(paths={"data_dir": args.data.resolve()})
            store = open_store(settings)
        else:
            t = time.perf_counter()
            settings, store = build_data(tmp, args.playlists)
            print(f"data built in {time.perf_counter() - t:.0f}s", flush=True)
        result: dict = {**new_record("training"),
                        "playlists": args.playlists if not args.data else f"from {args.data}"}
        result["machine"] += f", TensorFlow {tf.__version__}, GPUs: {len(tf.config.list_physical_devices('GPU'))}"

        result["steady_training"] = [steady_examples_per_s(settings, store, b) for b in (1024, 4096)]
        print(json.dumps(result["steady_training"]), flush=True)

        trained = train(settings, store, models_dir=tmp / "models", verbose=0)
        result["train"] = {**trained.manifest["speed"], "val_recall_at_100": trained.manifest["metrics"]["val_recall_at_100"]}
        t = time.perf_counter()
        report = evaluate(settings, store, trained.path)
        result["evaluate"] = {"seconds": round(time.perf_counter() - t, 1), "heldout_playlists": report["heldout_playlists"],
                              "catalog_tracks": report["catalog_tracks"],
                              "ranking_seconds": {m: r["seconds"] for m, r in report["models"].items()},
                              "recall@100": {m: round(r["overall"]["recall@100"], 4) for m, r in report["models"].items()}}
        print(json.dumps(result["evaluate"]), flush=True)

        candidate = load_tower(trained.path / "candidate")
        catalog = load_catalog(store)
        candidate.embed({k: v.slice(0, 1000) for k, v in catalog.features.items()})  # warm
        t = time.perf_counter()
        candidate.embed(catalog.features)
        seconds = time.perf_counter() - t
        result["candidate_tower"] = {"tracks": len(catalog), "seconds": round(seconds, 2),
                                     "tracks_per_s": round(len(catalog) / seconds)}

        query = load_tower(trained.path / "query")
        service = store.get_feature_service("playlist_query_v1")
        rng = random.Random(3)
        pids = [int(x) for x in np.unique(np.random.default_rng(3).integers(0, 5000, 500))]
        one = store.get_online_features(features=service, entity_rows=[{"pid": pids[0]}]).to_dict()
        tensors = query.tensors(one)
        signature = query.signature
        result["query_tower"] = {
            "signature_only": latency_ms(lambda: signature(**tensors), 1000),
            "embed_feast_dict": latency_ms(lambda: query.embed(one), 1000),
            "feast_online_read_plus_embed": latency_ms(lambda: query.embed(store.get_online_features(
                features=service, entity_rows=[{"pid": rng.choice(pids)}]).to_dict()), 1000),
        }
        print(json.dumps(result["query_tower"]), flush=True)
        result["scann_vs_exact"] = scann_vs_exact(trained.path, query, candidate.embed(catalog.features),
                                                  catalog.track_uri, store, service, pids)
        print(json.dumps(result["scann_vs_exact"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_record(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
