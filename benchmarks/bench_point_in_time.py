"""Point-in-time join benchmark: Feast's own DuckDB join against the profiles' ASOF JOIN store.

    python benchmarks/bench_point_in_time.py [--config demo-data/segue.yaml] [--chunks 6]
        [--positions 5000] [--out docs/benchmarks/point-in-time.json]

On a world whose feature tables exist and whose repo is applied (after `make demo`, or a
`bench_scale.py` work folder), builds chunks shaped like `segue batch examples`' (a run of
playlists, a share of their positions, two labels each: the next track and a later one) and joins
each through both stores, alternating which goes first, checking that the tables are equal. An
untimed join first brings the chunk's rows into the page cache, so neither store pays the disk
read that the other then skips (its time is recorded as `first_read_s`).
Prints and records seconds per chunk, examples/s and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from segue.batch.example_features import EXAMPLE_COLUMNS, join_chunk
from segue.features.store import open_store
from segue.logs import configure_logging
from segue.settings import load_settings
from segue.vocabulary import PLAYLIST_SERVICE, TRACK_SERVICE

from bench_record import new_record, write_record  # benchmarks/ is on sys.path when a benchmark runs


def chunk_examples(timeline: ds.Dataset, first_pid: int, positions: int, share: float,
                   rng: np.random.Generator) -> pd.DataFrame:
    """Examples for a run of playlists from `first_pid`: about `positions` query positions."""
    pids = np.arange(first_pid, first_pid + max(1, int(positions / 66 / share)))
    rows = timeline.to_table(columns=["pid", "pos", "track_uri", "added_at"],
                             filter=ds.field("pid").isin(pids)).to_pandas().sort_values(["pid", "pos"])
    rows["length"] = rows.groupby("pid").pos.transform("size")
    query = rows[(rng.random(len(rows)) < share) & (rows.pos < rows.length - 1)]
    uri = dict(zip(zip(rows.pid, rows.pos), rows.track_uri))
    added = dict(zip(zip(rows.pid, rows.pos), rows.added_at))
    later = query.pos + 1 + (rng.random(len(query)) * (query.length - query.pos - 1)).astype(int)
    labels = pd.concat([query.assign(label_pos=query.pos + 1), query.assign(label_pos=later)])
    return pd.DataFrame({
        "example_id": np.arange(len(labels)), "pid": labels.pid.values, "pos": labels.pos.values,
        "query_at": labels.added_at.values, "label_pos": labels.label_pos.values,
        "track_uri": [uri[k] for k in zip(labels.pid, labels.label_pos)],
        "added_at": [added[k] for k in zip(labels.pid, labels.label_pos)]})[list(EXAMPLE_COLUMNS)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=Path("demo-data/segue.yaml"))
    p.add_argument("--chunks", type=int, default=6)
    p.add_argument("--positions", type=int, default=5_000, help="query positions per chunk")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/point-in-time.json"))
    args = p.parse_args(argv)
    configure_logging("WARNING")
    settings = load_settings(args.config)
    asof = open_store(settings)
    stock = open_store(settings, offline_store={"type": "duckdb"})
    timeline = ds.dataset(Path(settings.paths.features_dir) / "playlist_timeline")
    pid_max = int(timeline.to_table(columns=["pid"]).column("pid").to_numpy().max())
    rng = np.random.default_rng(7)
    runs = []
    for i, first in enumerate(np.linspace(0, pid_max, args.chunks + 2)[1:-1].astype(int)):
        examples = chunk_examples(timeline, int(first), args.positions, settings.examples.positions_share, rng)
        # Untimed first: it brings the chunk's row groups into the page cache for both stores.
        started = time.perf_counter()
        join_chunk(asof, examples, PLAYLIST_SERVICE, TRACK_SERVICE)
        first_read = time.perf_counter() - started
        seconds, tables = {}, {}
        for name, store in ((("stock", stock), ("asof", asof)) if i % 2 == 0 else (("asof", asof), ("stock", stock))):
            started = time.perf_counter()
            tables[name] = join_chunk(store, examples, PLAYLIST_SERVICE, TRACK_SERVICE)
            seconds[name] = time.perf_counter() - started
        if not tables["asof"].equals(tables["stock"]):
            raise SystemExit(f"chunk from pid {first}: the two stores' tables differ")
        runs.append({"first_pid": int(first), "examples": len(examples),
                     "positions": int(examples[["pid", "pos"]].drop_duplicates().shape[0]),
                     "first_read_s": round(first_read, 3),
                     "stock_s": round(seconds["stock"], 3), "asof_s": round(seconds["asof"], 3)})
        print(runs[-1], file=sys.stderr, flush=True)
    examples = sum(r["examples"] for r in runs)
    stock_s, asof_s = sum(r["stock_s"] for r in runs), sum(r["asof_s"] for r in runs)
    record = {**new_record("point_in_time"), "config": str(args.config), "chunks": runs,
              "playlists_max_pid": pid_max,
              "median_s": {"stock": statistics.median(r["stock_s"] for r in runs),
                           "asof": statistics.median(r["asof_s"] for r in runs)},
              "examples_per_s": {"stock": round(examples / stock_s), "asof": round(examples / asof_s)},
              "speedup": round(stock_s / asof_s, 2), "equal": True}
    write_record(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
