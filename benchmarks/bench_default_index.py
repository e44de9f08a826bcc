"""Which Milvus the default profile should use: every candidate that runs on one machine without
Docker, searched side by side on the same embeddings, with each one's ratio to numpy exact search.

    python benchmarks/bench_default_index.py [--size 100000] [--out docs/benchmarks/default_index.json]

Candidates (issue #17: the default must let the API, the stream daemon and the rebuild run as
separate processes, and search within 3x of numpy exact at 100k tracks):
- Milvus Lite opened by file, as pymilvus does it (its server runs in a thread of the caller);
- Milvus Lite's own server mode (`python -m milvus_lite server`), a separate process, FLAT and HNSW;
- the Milvus standalone server of the `milvus` package, as `segue milvus start` runs it, FLAT and HNSW.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_index_search import (DIM, K, REPO, Results, bench_milvus, bench_milvus_lite, bench_numpy,
                                clustered_embeddings, exact_top_k, machine_info, milvus_server)
from bench_record import new_record, write_record

HNSW = {"M": 16, "efConstruction": 200}


@contextlib.contextmanager
def lite_server_process():
    """Milvus Lite's gRPC server in a process of its own, and a client to it."""
    from pymilvus import MilvusClient

    from segue.local_ports import free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="segue-bench-lite-server-") as data_dir:
        proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", data_dir,
                                 "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client = MilvusClient(f"http://127.0.0.1:{port}", timeout=2)
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            yield client
            client.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--lite-queries", type=int, default=30, help="queries for the Milvus Lite candidates (slow)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "default_index.json")
    args = p.parse_args(argv)

    started = time.perf_counter()
    catalogue, queries = clustered_embeddings(args.size, args.queries)
    truth = exact_top_k(catalogue, queries)
    results = Results(truth)
    print(f"{args.size:,} synthetic clustered {DIM}-d tracks, top {K}, one query per call", flush=True)
    bench_numpy(results, catalogue, queries)
    bench_milvus_lite(results, catalogue, queries[:args.lite_queries])
    results.rows[-1]["engine"] = "Milvus Lite, opened by file (in-process server)"
    with lite_server_process() as client:
        bench_milvus(results, client, "lite_server_flat", catalogue, queries[:args.lite_queries], "FLAT", {}, "", ())
        bench_milvus(results, client, "lite_server_hnsw", catalogue, queries[:args.lite_queries], "HNSW", HNSW,
                     "ef", (200,))
    with milvus_server() as client:
        bench_milvus(results, client, "local_flat", catalogue, queries, "FLAT", {}, "", ())
        bench_milvus(results, client, "local_hnsw", catalogue, queries, "HNSW", HNSW, "ef", (100, 200))

    floor = results.rows[0]["p50_ms"]
    lines = [f"### Default index candidates, {args.size:,} tracks, top {K}", "",
             "| engine | setting | queries | p50 (ms) | p99 (ms) | p50 / numpy | Recall@100 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results.rows:
        r["p50_ratio_to_numpy"] = round(r["p50_ms"] / floor, 2)
        lines.append(f"| {r['engine']} | {r['setting']} | {r['queries']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['p50_ratio_to_numpy']:.1f}x | {r['recall_at_100']:.4f} |")
    report = {**new_record("default_index"),
              "machine": machine_info(), "tracks": args.size, "dim": DIM, "k": K, "rows": results.rows,
              "runtime_s": round(time.perf_counter() - started, 1)}
    print("\n" + "\n".join(lines), flush=True)
    write_record(report, args.out, echo=False)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
