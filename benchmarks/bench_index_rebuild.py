"""Index rebuild benchmark: the nightly job's tracks/s (embed + write + index + validate + swap).

    python benchmarks/bench_index_rebuild.py --data demo-data [--sizes 100000,1000000]
        [--profiles embedded,cpu_hnsw,cpu_ivf] [--out docs/benchmarks/index_rebuild.json]

Uses `make demo`'s model and Feast store. The catalogue is read from Feast once, through the
`track_candidate_v1` service, and timed. It is then replicated up to each size with new track URIs and
jittered numbers (popularity, duration), so every row carries real features. Each size and
profile runs `rebuild_index` on that snapshot, with the Beam pipeline on the DirectRunner, into
Milvus Lite (embedded) or the PyPI `milvus` standalone server (cpu_* profiles), which the
benchmark starts itself.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segue.features.store import open_store
from segue.indexing.rebuild import rebuild_index, write_snapshot
from segue.logs import configure_logging
from segue.settings import IndexSettings, load_settings

from bench_record import demo_model, new_record, write_record  # benchmarks/ is on sys.path when a benchmark runs

REPO = Path(__file__).resolve().parents[1]


def replicate(base: pa.Table, rows: int, seed: int = 0) -> pa.Table:
    """`rows` tracks: the catalogue, then copies of it with new URIs and jittered popularity and
    duration (the originals keep their URIs, so Feast and the co-occurrence lists know them)."""
    rng = np.random.default_rng(seed)
    copies = -(-rows // len(base))
    parts = []
    for c in range(copies):
        part = base if c == 0 else base.set_column(
            base.schema.get_field_index("track_uri"), "track_uri",
            pc.binary_join_element_wise(base.column("track_uri"), pa.scalar(f"-{c}"), ""))
        for name in ("popularity", "duration_ms"):
            if name in part.column_names and c:
                values = part.column(name).to_numpy(zero_copy_only=False).astype(float)
                jitter = rng.normal(1.0, 0.05, len(values))
                part = part.set_column(part.schema.get_field_index(name), name,
                                       pa.array(np.nan_to_num(values * jitter, nan=0).astype("int64")))
        parts.append(part)
    return pa.concat_tables(parts, promote_options="permissive").slice(0, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "demo-data", help="`make demo`'s folder")
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--profiles", default="embedded,cpu_hnsw,cpu_ivf")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "index_rebuild.json")
    args = p.parse_args(argv)
    configure_logging("text", "WARNING")
    model = demo_model(args.data)
    settings = load_settings(paths={"data_dir": args.data.resolve()})
    store = open_store(settings)
    sizes = [int(s) for s in args.sizes.split(",")]
    profiles = args.profiles.split(",")
    result = {**new_record("index_rebuild"),
              "runner": "Beam DirectRunner (in-process)", "runs": []}
    with tempfile.TemporaryDirectory(prefix="segue-bench-index-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        base_rows = write_snapshot(store, tmp / "catalog.parquet", datetime.now(timezone.utc))
        result["feast_snapshot"] = {"tracks": base_rows, "seconds": round(time.perf_counter() - t, 2)}
        print(f"Feast snapshot of {base_rows:,} tracks in {result['feast_snapshot']['seconds']} s", flush=True)
        base = pq.read_table(tmp / "catalog.parquet")
        server = uri = None
        if any(name != "embedded" for name in profiles):
            from segue.indexing.milvus_server import LocalMilvusServer
            from segue.local_ports import free_port

            server = LocalMilvusServer(tmp / "milvus-server", free_port()).start()
            uri = server.uri
        try:
            for size in sizes:
                snapshot = tmp / f"catalog-{size}.parquet"
                pq.write_table(replicate(base, size), snapshot)
                for name in profiles:
                    run_settings = settings.model_copy(update={
                        "index": IndexSettings(profile=name, alias=f"bench_{name}_{size}",
                                               **({} if name == "embedded" else {"uri": uri})),
                        "paths": settings.paths.model_copy(update={"index_dir": tmp / f"index-{name}-{size}"})})
                    t = time.perf_counter()
                    report = rebuild_index(run_settings, store, model, snapshot=snapshot)
                    total = time.perf_counter() - t
                    run = {"profile": name, "tracks": size, "seconds": round(total, 1),
                           "tracks_per_s": round(size / total), "steps_s": report.seconds,
                           "ann_recall_at_100": report.validation["checks"]["ann_recall"]["recall"]}
                    result["runs"].append(run)
                    print(json.dumps(run), flush=True)
        finally:
            if server is not None:
                server.stop()
    write_record(result, args.out, echo=False)
    print("\n| profile | tracks | total s | tracks/s | embed+write s | index s | validate s | ANN recall@100 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["runs"]:
        s = r["steps_s"]
        print(f"| {r['profile']} | {r['tracks']:,} | {r['seconds']} | {r['tracks_per_s']:,} | "
              f"{s['embed_and_write']} | {s['index']} | {s['validate']} | {r['ann_recall_at_100']} |")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
