"""Materialize side by side: Feast's own local engine against `segue features materialize`.

    python benchmarks/bench_materialize.py --work DIR [--engines feast segue] [--out FILE]

`--work` is a `bench_scale.py` work folder that has run up to `apply` (feature tables and a Feast
registry, redis profile). Each engine materializes the whole history into its own fresh
`redis-server`, in a child process whose wall time and peak resident memory (whole process tree,
and its largest process) are recorded. Then the two Redis databases are compared: the same number
of keys, and byte-equal hashes (every feature's serialized value and event time) for a sample of
keys, so the faster engine is shown to write the same online store.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import datetime, timezone
from pathlib import Path

import redis

from bench_record import new_record, write_record
from bench_scale import free_port, run_stage, stage_env, start_redis

ENGINES = ("feast", "segue")


def feast_engine() -> None:
    """Feast's `materialize` over the whole history, as `feast materialize` runs it."""
    from segue.features.materialize import HISTORY_START
    from segue.features.store import open_store
    from segue.settings import load_settings

    open_store(load_settings()).materialize(start_date=HISTORY_START, end_date=datetime.now(timezone.utc))


def engine_command(engine: str) -> list[str]:
    if engine == "feast":
        return [sys.executable, str(Path(__file__).resolve()), "feast-engine"]
    return [str(Path(sys.executable).parent / "segue"), "features", "materialize", "--full"]


def same_hashes(ports: list[int], sample: int, seed: int = 0) -> dict:
    """Key counts of each server, and how many of `sample` random keys of the first hold equal hashes."""
    clients = [redis.Redis(port=p) for p in ports]
    keys = list(clients[0].scan_iter(count=10_000))
    picked = random.Random(seed).sample(keys, min(sample, len(keys)))
    equal = sum(len({tuple(sorted(c.hgetall(k).items())) for c in clients}) == 1 for k in picked)
    return {"keys": [c.dbsize() for c in clients], "sampled": len(picked), "equal": equal}


def main(argv: list[str] | None = None) -> int:
    if sys.argv[1:2] == ["feast-engine"]:
        feast_engine()
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="a bench_scale.py work folder, run up to `apply`")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--sample", type=int, default=5_000, help="keys compared between the engines' stores")
    p.add_argument("--limit-s", type=float, default=3600)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    record = {**new_record("materialize"), "work": str(args.work), "engines": {}}
    servers, ports = [], []
    try:
        for engine in args.engines:
            port = free_port()
            servers.append(start_redis(args.work, port))
            ports.append(port)
            env = stage_env(args.work, mpd=None, redis_port=port)
            print(f"[materialize] {engine}: {' '.join(engine_command(engine))}", flush=True)
            result = run_stage(engine_command(engine), env, args.work / f"materialize-{engine}.log", args.limit_s)
            result["redis_keys"] = redis.Redis(port=port).dbsize()
            record["engines"][engine] = result
            print(json.dumps({engine: {k: v for k, v in result.items() if k != "last_lines"}}), flush=True)
        ok = [e for e in args.engines if record["engines"][e]["outcome"] == "ok"]
        if len(ok) == 2:
            record["same_online_store"] = same_hashes(ports, args.sample)
            feast, segue = (record["engines"][e] for e in ENGINES)
            record["segue_vs_feast"] = {"time": round(segue["seconds"] / feast["seconds"], 2),
                                        "peak_rss": round(segue["peak_rss_mib"] / feast["peak_rss_mib"], 2)}
    finally:
        for server in servers:
            server.terminate()
    write_record(record, args.out or args.work / "materialize.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
