"""Ranking-stage benchmark: the served ranker against retrieval only, side by side in one run, and
the offline rates of the stages it depends on.

    python benchmarks/bench_ranking.py --data demo-data [--seconds 60] [--out docs/benchmarks/ranking.json]

Needs `make demo`'s data (a model version with a ranker, the neighbour table materialized, the
index built). `segue serve` runs as its own process on that data (embedded profile, SQLite online
store). One keep-alive connection sends known playlists, k=10, alternating `"ranked": true` and
`"ranked": false` request by request, so both paths see the same playlists and the same machine
load; latency is the client's, the stages are the server's own `timings_ms`.
The offline figures (examples/s, training examples/s, ranker rows/s, neighbour job seconds) are
read from the manifests the demo's jobs wrote.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import new_record, write_record  # noqa: E402
from bench_serving import _load, start_api  # noqa: E402
from segue.settings import ServeSettings, load_settings  # noqa: E402
from segue.local_ports import free_port  # noqa: E402

STAGES = ("playlist_features", "query_tower", "search", "neighbours", "candidate_facts", "ranker", "metadata")


def bodies(snapshots: Path, n: int, seed: int = 3) -> list[bytes]:
    pids = np.unique(pq.read_table(snapshots, columns=["pid"]).column("pid").to_numpy())
    chosen = np.random.default_rng(seed).choice(pids, n // 2)
    out = []
    for pid in chosen:
        for ranked in (True, False):
            raw = json.dumps({"playlist_id": int(pid), "k": 10, "ranked": ranked}).encode()
            out.append(b"POST /v1/recommendations HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw)
    return out


def summary(rows: list[tuple[float, dict]]) -> dict:
    latency = np.array([t for t, _ in rows])
    return {"requests": len(rows),
            "latency_ms": {f"p{q}": round(float(np.percentile(latency, q)), 2) for q in (50, 95, 99)},
            "stage_ms_mean": {s: round(float(np.mean([timings.get(s, 0.0) for _, timings in rows])), 2)
                              for s in STAGES}}


def offline_rates(data: Path) -> dict:
    examples = json.loads((data / "examples" / "_manifest.json").read_text())
    model = json.loads((data / "models" / "latest" / "manifest.json").read_text())
    neighbours = json.loads((data / "neighbours" / "_manifest.json").read_text())
    ranker = model.get("ranker") or {}
    return {"examples_per_s": examples.get("examples_per_s"), "training_examples_per_s": model["speed"]["examples_per_s"],
            "ranker_rows": ranker.get("rows"), "ranker_rows_per_s": ranker.get("rows_per_s"),
            "ranker_seconds": ranker.get("seconds"), "neighbours_seconds": neighbours.get("seconds"),
            "neighbour_pairs": neighbours.get("pairs_kept")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("demo-data"))
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/benchmarks/ranking.json")
    args = p.parse_args(argv)
    import asyncio

    data = args.data.resolve()
    port = free_port()
    settings = load_settings(paths={"data_dir": data})
    settings = settings.model_copy(update={"serve": ServeSettings(port=port)})
    with tempfile.TemporaryDirectory() as tmp:
        api = start_api(settings, Path(tmp), port)
        try:
            requests = bodies(data / "features" / "playlist_snapshots", 2000)
            asyncio.run(_load(port, requests[:40], 1, 5))  # warm-up
            out, errors, wall = asyncio.run(_load(port, requests, 1, args.seconds))
        finally:
            api.terminate()
            api.wait(30)
    if errors:  # a failed request would shift the alternation below
        raise SystemExit(f"{len(errors)} requests failed (statuses {sorted(set(errors))}); see the server log")
    # _load sends the bodies in order on one connection: even requests ranked, odd ones retrieval only.
    ranked, fused = out[0::2], out[1::2]
    result = {
        **new_record("ranking"),
        "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "data": str(args.data), "seconds": args.seconds, "errors": len(errors), "k": 10,
        "ranker": summary(ranked), "retrieval_only": summary(fused),
        "p99_ratio": round(summary(ranked)["latency_ms"]["p99"] / summary(fused)["latency_ms"]["p99"], 3),
        "p50_ratio": round(summary(ranked)["latency_ms"]["p50"] / summary(fused)["latency_ms"]["p50"], 3),
        "offline": offline_rates(data),
    }
    write_record(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
