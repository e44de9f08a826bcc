"""Feature-store benchmark: online lookups (SQLite vs Redis), materialization, training examples.

    python benchmarks/bench_features.py [--playlists 10000] [--out docs/benchmarks/features.json]

Builds a generated sample through ingest and build_features, applies the feature repo to the
local (SQLite) and redis profiles (a real redis-server on a free loopback port), then measures in
one run: `get_online_features` latency for one playlist's query features and for 100 and 1,000
tracks' candidate features, raw and through `OnlineFeatureReader` (found/missing marking);
materialize rows/s;
and `build_examples` examples/s.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from segue.batch.build_examples import build_examples
from segue.batch.build_features import build_features
from segue.batch.ingest_mpd import ingest
from segue.batch.spark_session import build_spark
from segue.batch.synth import generate
from segue.features.materialize import materialize
from segue.features.online import OnlineFeatureReader
from segue.features.store import REPO_PATH, apply_definitions, open_store
from segue.logs import configure_logging
from segue.settings import load_settings

from bench_record import new_record, write_record
from latency import latency_ms  # benchmarks/ is on sys.path when a benchmark runs

REPO = Path(__file__).resolve().parents[1]


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def online_latencies(store, pids: list[int], tracks: list[str], rng: random.Random) -> dict:
    query = store.get_feature_service("playlist_query_v1")
    candidate = store.get_feature_service("track_candidate_v1")
    out = {}
    out["raw_1_playlist"] = latency_ms(
        lambda: store.get_online_features(features=query, entity_rows=[{"pid": rng.choice(pids)}]).to_dict(), 300)
    playlists = OnlineFeatureReader(store, "playlist_query_v1", "pid")
    candidates = OnlineFeatureReader(store, "track_candidate_v1", "track_uri")
    out["reader_1_playlist"] = latency_ms(lambda: playlists.read([rng.choice(pids)]), 300)
    for n, repeats in ((100, 100), (1000, 30)):
        out[f"raw_{n}_tracks"] = latency_ms(lambda: store.get_online_features(
            features=candidate, entity_rows=[{"track_uri": t} for t in rng.sample(tracks, n)]).to_dict(), repeats)
        out[f"reader_{n}_tracks"] = latency_ms(lambda: candidates.read(rng.sample(tracks, n)), repeats)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--playlists", type=int, default=10_000)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "features.json")
    args = p.parse_args(argv)
    configure_logging()  # the jobs' step lines are the progress of a long run
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="segue-bench-features-") as tmp:
        root = Path(tmp)
        redis, redis_url = start_redis(root)
        try:
            settings = load_settings(paths={"data_dir": root}, features={"redis_connection_string": redis_url})
            spark = build_spark("bench-features", settings.spark)
            generate(root / "mpd", playlists=args.playlists, seed=7, tastes=32, start=date(2011, 1, 1),
                     end=date(2017, 11, 1), challenge_playlists=100, progress=False)
            ingest(spark, root / "mpd", settings.paths.warehouse_dir, root / "mpd" / "metadata")
            t = time.perf_counter()
            features = build_features(spark, settings.paths.warehouse_dir, settings.paths.features_dir,
                                      settings.features)
            build_features_s = time.perf_counter() - t
            repo = root / "feature_repo"
            shutil.copytree(REPO_PATH, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
            timeline = pq.read_table(settings.paths.features_dir / "playlist_timeline",
                                     columns=["pid", "track_uri"]).to_pandas()
            pids = timeline.pid.unique().tolist()
            tracks = timeline.track_uri.unique().tolist()
            offline_rows = sum(features["counts"][n] for n in ("playlist_snapshots", "track_features", "artist_features"))
            result = {"playlists": args.playlists, "build_features_s": round(build_features_s, 1),
                      "feature_rows": features["counts"], "profiles": {}}
            for profile in ("local", "redis"):
                apply_definitions(settings, profile, repo)
                store = open_store(settings, profile, repo)
                t = time.perf_counter()
                materialize(store, spark, datetime.now(timezone.utc))
                seconds = time.perf_counter() - t
                result["profiles"][profile] = {
                    "materialize_s": round(seconds, 1),
                    "materialize_offline_rows_per_s": round(offline_rows / seconds),
                    "online_entities": len(pids) + len(tracks) + features["counts"]["artist_features"],
                    "online": online_latencies(store, pids, tracks, rng)}
                print(json.dumps({profile: result["profiles"][profile]}), flush=True)
            store = open_store(settings, "local", repo)
            manifest = build_examples(spark, settings, store, settings.paths.examples_dir)
            result["build_examples"] = {"examples": sum(manifest["counts"].values()),
                                        "seconds": manifest["seconds"], "examples_per_s": manifest["examples_per_s"]}
        finally:
            redis.terminate()
    record = {**new_record("features"), **result}
    write_record(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
