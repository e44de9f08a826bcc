"""Index search benchmark: latency p50/p99, queries/s and Recall@100 of Segue's Milvus profiles
against numpy brute force, faiss HNSW and the TFRS ScaNN layer, on the same embeddings.

    python benchmarks/bench_index_search.py [--sizes 100000,1000000] [--out docs/benchmarks/index_search.json]
    python benchmarks/bench_index_search.py --quick            (20k rows, few queries, no JSON)
    python benchmarks/bench_index_search.py --embeddings tracks.npy   (real embeddings, one size)

The embeddings are synthetic clustered 64-d vectors unless --embeddings names a file: uniform random
vectors have no neighbourhood structure, which makes every ANN index look worse than on two-tower
embeddings. Queries are separate draws from the same mixture, sent one per request as serving does.
Recall@100 is measured against exact inner-product search (numpy, which is also the ground truth).

Engines, all side by side in one process and one run per size:
- numpy brute force (exact);
- faiss IndexHNSWFlat, inner product, M=16, efConstruction=200, efSearch sweep;
- TFRS ScaNN layer, Segue's settings (sqrt(n) leaves, re-scoring 4k), leaves-to-search sweep;
- Milvus standalone server, profile cpu_hnsw (HNSW, IP, M=16, efConstruction=200, ef sweep);
- Milvus standalone server, profile cpu_ivf (IVF_FLAT, IP, nlist ~ 4 sqrt(n), nprobe sweep);
- milvus-lite, profile embedded (FLAT), only up to 100k rows: it scans rows in Python per query.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keeps TF's and ScaNN's info logs out of the progress lines

import numpy as np

from bench_record import new_record, write_record
from latency import latency_ms  # benchmarks/ is on sys.path when a benchmark runs

REPO = Path(__file__).resolve().parents[1]
K = 100
DIM = 64
HNSW_EFS = (100, 200, 400)  # Milvus refuses ef < limit
IVF_NPROBES = (16, 32, 64)
SCANN_SEARCH_FRACTIONS = (20, 10, 5)  # leaves // fraction searched; 10 is Segue's setting
LITE_MAX_ROWS = 100_000


def clustered_embeddings(n: int, n_queries: int, seed: int = 7, clusters: int = 4096):
    """Catalogue and queries from one mixture of Gaussian clusters on the unit sphere, with
    Zipf-like cluster sizes and per-cluster spread, as trained towers produce."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.permutation(1 / np.arange(1, clusters + 1) ** 0.8)
    weights /= weights.sum()
    spread = (0.1 * rng.lognormal(0, 0.4, clusters)).astype(np.float32)

    def draw(count, rng):
        c = rng.choice(clusters, size=count, p=weights)
        x = centres[c] + rng.standard_normal((count, DIM), dtype=np.float32) * spread[c, None]
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    # The query stream is seeded apart so that every size gets the same queries.
    return draw(n, np.random.default_rng([seed, n])), draw(n_queries, np.random.default_rng([seed, 0]))


def file_embeddings(path: Path, n_queries: int, seed: int = 7):
    """Rows of a .npy file, normalised; `n_queries` random rows are held out as queries."""
    x = np.load(path).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order[n_queries:]], x[order[:n_queries]]


def exact_top_k(catalogue: np.ndarray, queries: np.ndarray, chunk: int = 50) -> np.ndarray:
    # Chunked so that the score matrix stays ~200 MB at 1M rows.
    return np.concatenate([np.argpartition(-(queries[i:i + chunk] @ catalogue.T), K, axis=1)[:, :K]
                           for i in range(0, len(queries), chunk)])


def time_queries(search, queries: np.ndarray, warmup: int = 10):
    """Latency of one query per call, sequential queries/s, and each query's top-k ids."""
    for q in queries[:warmup]:
        search(q)
    found = [None] * len(queries)
    order = iter(range(len(queries)))

    def one():
        i = next(order)
        found[i] = search(queries[i])

    start = time.perf_counter()
    stats = latency_ms(one, len(queries), warmup=0)
    stats["qps"] = round(len(queries) / (time.perf_counter() - start), 1)
    return stats, found


def recall_at_k(found, truth: np.ndarray) -> float:
    return round(float(np.mean([len(set(np.asarray(f)[:K]) & set(t)) / K for f, t in zip(found, truth)])), 4)


class Results:
    """The rows of one size, printed as each engine/setting finishes. Engines with fewer queries
    get a prefix of the queries, so the truth's prefix scores them."""

    def __init__(self, truth: np.ndarray):
        self.truth = truth
        self.rows: list[dict] = []

    def add(self, engine: str, setting: str, search, queries: np.ndarray, **timings):
        stats, found = time_queries(search, queries)
        row = {"engine": engine, "setting": setting, **timings, "queries": stats["n"], "p50_ms": stats["p50_ms"],
               "p99_ms": stats["p99_ms"], "qps": stats["qps"], "recall_at_100": recall_at_k(found, self.truth[:len(found)])}
        self.rows.append(row)
        print(f"  {engine:<16} {setting:<28} p50 {row['p50_ms']:>8.3f} ms  p99 {row['p99_ms']:>8.3f} ms  "
              f"{row['qps']:>8.1f} q/s  recall@100 {row['recall_at_100']:.4f}", flush=True)


def seconds_of(fn):
    start = time.perf_counter()
    value = fn()
    return round(time.perf_counter() - start, 2), value


def bench_numpy(results: Results, catalogue, queries):
    def search(q):
        scores = catalogue @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    results.add("numpy", "brute force (exact)", search, queries, build_s=0.0)


def bench_faiss_hnsw(results: Results, catalogue, queries):
    import faiss

    index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 200
    build_s, _ = seconds_of(lambda: index.add(catalogue))
    for ef in HNSW_EFS:
        index.hnsw.efSearch = ef
        results.add("faiss HNSW", f"M=16 efC=200 ef={ef}", lambda q: index.search(q[None], K)[1][0], queries,
                    build_s=build_s)


def bench_tfrs_scann(results: Results, catalogue, queries):
    import scann  # noqa: F401  (registers the ScaNN ops)
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    leaves = max(2, int(np.sqrt(len(catalogue))))
    candidates = tf.constant(catalogue)
    for fraction in SCANN_SEARCH_FRACTIONS:
        to_search = max(1, leaves // fraction)
        layer = tfrs.layers.factorized_top_k.ScaNN(k=K, num_leaves=leaves, num_leaves_to_search=to_search,
                                                   num_reordering_candidates=4 * K)
        build_s, _ = seconds_of(lambda: layer.index(candidates))
        # A batch of one through a tf.function, as the exported retrieval model serves it.
        top_k = tf.function(lambda q: layer(q)[1], input_signature=[tf.TensorSpec([1, DIM], tf.float32)])
        results.add("TFRS ScaNN", f"leaves={leaves} search={to_search} reorder={4 * K}",
                    lambda q: top_k(q[None]).numpy()[0], queries, build_s=build_s)


@contextlib.contextmanager
def milvus_server():
    """A Milvus standalone server as `segue milvus start` runs it, on a throwaway data dir, and a client."""
    from pymilvus import MilvusClient

    from segue.indexing.milvus_server import LocalMilvusServer
    from segue.local_ports import free_port

    with tempfile.TemporaryDirectory(prefix="segue-bench-milvus-") as data_dir:
        with LocalMilvusServer(Path(data_dir), port=free_port()) as server:
            client = MilvusClient(server.uri)
            yield client
            client.close()


def bench_milvus(results: Results, client, profile: str, catalogue, queries, index_type: str, build_params: dict,
                 sweep_key: str, sweep: tuple):
    """One Milvus profile: insert + flush, build the index, load, then search at each sweep value."""
    from pymilvus import DataType

    name = f"bench_{profile}"
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)  # lite keys hits by this name, the server by "id"
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
    client.create_collection(name, schema=schema)
    try:
        def insert():
            for i in range(0, len(catalogue), 10_000):
                client.insert(name, [{"id": j, "embedding": catalogue[j]}
                                     for j in range(i, min(i + 10_000, len(catalogue)))])
            client.flush(name)

        insert_s, _ = seconds_of(insert)
        params = client.prepare_index_params()
        params.add_index("embedding", index_type=index_type, metric_type="IP", params=build_params)
        build_s, _ = seconds_of(lambda: client.create_index(name, params))  # waits until the index is built
        load_s, _ = seconds_of(lambda: client.load_collection(name))
        # What the server says it built, to catch parameters it dropped.
        described = client.describe_index(name, client.list_indexes(name)[0])
        print(f"  {profile}: {len(catalogue):,} rows inserted in {insert_s}s, index built in {build_s}s, "
              f"loaded in {load_s}s; describe_index: {described}", flush=True)
        built = " ".join([index_type, *(f"{k}={v}" for k, v in build_params.items())])
        for search_args in [{sweep_key: value} for value in sweep] or [{}]:
            search_params = {"metric_type": "IP", "params": search_args}

            def search(q):
                hits = client.search(name, [q.tolist()], limit=K, search_params=search_params)[0]
                return [hit["id"] for hit in hits]

            setting = " ".join([built, *(f"{k}={v}" for k, v in search_args.items())])
            results.add(f"Milvus {profile}", setting, search, queries, insert_s=insert_s, build_s=build_s,
                        load_s=load_s, described_index={k: str(v) for k, v in described.items()})
    finally:
        client.drop_collection(name)


def bench_milvus_lite(results: Results, catalogue, queries):
    from pymilvus import MilvusClient

    with tempfile.TemporaryDirectory(prefix="segue-bench-lite-") as data_dir:
        client = MilvusClient(str(Path(data_dir) / "lite.db"))
        try:
            bench_milvus(results, client, "embedded", catalogue, queries, "FLAT", {}, "", ())
        finally:
            client.close()


def ivf_nlist(n: int) -> int:
    return int(2 ** round(np.log2(4 * np.sqrt(n))))


def markdown_table(n: int, rows: list[dict]) -> str:
    lines = [f"### {n:,} tracks, top {K}",
             "",
             "| engine | setting | queries | insert (s) | build (s) | p50 (ms) | p99 (ms) | queries/s | Recall@100 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        insert = f"{r['insert_s']:.1f}" if "insert_s" in r else "-"
        lines.append(f"| {r['engine']} | {r['setting']} | {r['queries']} | {insert} | {r['build_s']:.1f} | "
                     f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['qps']:,.1f} | {r['recall_at_100']:.4f} |")
    return "\n".join(lines)


def machine_info() -> dict:
    import psutil

    libraries = ["numpy", "faiss-cpu", "scann", "tensorflow", "tensorflow-recommenders", "pymilvus", "milvus-lite",
                 "milvus"]
    return {"cpu_count": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30),
            "platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "libraries": {name: version(name) for name in libraries}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000", help="catalogue sizes, comma-separated")
    p.add_argument("--queries", type=int, default=500, help="queries for the in-process engines")
    p.add_argument("--server-queries", type=int, default=200, help="queries for the Milvus server")
    p.add_argument("--lite-queries", type=int, default=30, help="queries for milvus-lite")
    p.add_argument("--embeddings", type=Path, help="a .npy of real embeddings, instead of synthetic ones")
    p.add_argument("--quick", action="store_true", help="20k rows and few queries, to check the script")
    p.add_argument("--out", type=Path, help="JSON output (default docs/benchmarks/index_search.json, none with --quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.server_queries, args.lite_queries = "20000", 100, 50, 20
    out = args.out or (None if args.quick else REPO / "docs" / "benchmarks" / "index_search.json")

    started = time.perf_counter()
    source = (f"real embeddings from {args.embeddings}" if args.embeddings else
              "SYNTHETIC clustered embeddings: 4096 Gaussian clusters on the unit sphere, Zipf-like sizes, "
              "per-cluster spread; queries are separate draws from the same mixture (seed 7)")
    print(f"Embeddings: {source}; {DIM}-d, L2-normalised, inner product.", flush=True)
    sizes = [None] if args.embeddings else [int(s) for s in args.sizes.split(",")]
    report = {**new_record("index_search"),
              "machine": machine_info(), "embeddings": source, "dim": DIM, "k": K,
              "note": "All engines ran side by side in one run, on the same embeddings and queries. Latency is "
                      "one query per call, sequential; queries/s = queries / wall time of the timed calls. "
                      "Recall@100 is against exact inner-product search (numpy).",
              "sizes": []}
    tables = []
    for n in sizes:
        catalogue, queries = (file_embeddings(args.embeddings, args.queries) if args.embeddings
                              else clustered_embeddings(n, args.queries))
        n = len(catalogue)
        print(f"\n{n:,} tracks, {len(queries)} queries", flush=True)
        truth = exact_top_k(catalogue, queries)
        results = Results(truth)
        bench_numpy(results, catalogue, queries)
        bench_faiss_hnsw(results, catalogue, queries)
        bench_tfrs_scann(results, catalogue, queries)
        server_queries = queries[:args.server_queries]
        with milvus_server() as client:
            bench_milvus(results, client, "cpu_hnsw", catalogue, server_queries, "HNSW",
                         {"M": 16, "efConstruction": 200}, "ef", HNSW_EFS)
            bench_milvus(results, client, "cpu_ivf", catalogue, server_queries, "IVF_FLAT",
                         {"nlist": ivf_nlist(n)}, "nprobe", IVF_NPROBES)
        if n <= LITE_MAX_ROWS:
            bench_milvus_lite(results, catalogue, queries[:args.lite_queries])
        tables.append(markdown_table(n, results.rows))
        report["sizes"].append({"tracks": n, "queries": len(queries), "rows": results.rows})
        del catalogue

    report["runtime_s"] = round(time.perf_counter() - started, 1)
    print(f"\nEmbeddings: {source}.\n")
    print("\n\n".join(tables))
    print(f"\nTotal runtime {report['runtime_s']:.0f}s", flush=True)
    if out:
        write_record(report, out, echo=False)
        print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
