"""Scale benchmark: every batch stage at one size, as a user runs it, with time and peak memory.

    python benchmarks/bench_scale.py --mpd DIR --work DIR [--stages ingest features ...]
        [--limit-s 3600] [--out docs/benchmarks/scale-<playlists>k.json]
    python benchmarks/bench_scale.py table docs/benchmarks/scale-*.json    (the markdown table)

Runs each stage's command (`spark-submit batch/ingest_mpd.py`, `segue batch features`,
`segue features apply`, `segue features materialize --full`, `segue batch examples`,
`segue batch neighbours`, `segue train`, `segue evaluate`) in a child process on the slices in
`--mpd` (from `segue data generate`), with its data under `--work`, and records for each the wall
time and the peak resident memory of its whole process tree (Python, the JVM, workers) and of its
largest process, sampled every 0.5 s. The feature store profile is `redis`: materialize writes
into a real `redis-server` the benchmark starts. A stage that runs past `--limit-s` is stopped and
recorded as such, with the last lines it logged (how far it got); the stages after it are not run.
The record is rewritten after every stage, so a long run that is stopped keeps what it measured,
and `--stages` resumes later stages on the same `--work`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench_record import new_record, write_record  # benchmarks/ is on sys.path when a benchmark runs

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "features", "apply", "materialize", "examples", "neighbours", "train", "evaluate")


def _tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """The resident memory of a process tree, and of its largest process."""
    sizes = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            sizes.append(p.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return sum(sizes), max(sizes, default=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(folder: Path, port: int) -> subprocess.Popen:
    """A real redis-server on loopback, nothing persisted: the online store of one run."""
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def stage_commands(mpd: Path, work: Path, driver_memory: str) -> dict[str, list[str]]:
    """Each stage's command line, as the README gives it."""
    bin_dir = Path(sys.executable).parent
    segue = [str(bin_dir / "segue")]
    return {
        "ingest": [str(bin_dir / "spark-submit"), "--master", "local[*]", "--driver-memory", driver_memory,
                   "--driver-java-options", f"-Dlog4j2.configurationFile={REPO / 'batch' / 'log4j2.properties'}",
                   str(REPO / "batch" / "ingest_mpd.py"), "--input", str(mpd),
                   "--output", str(work / "data" / "warehouse" / "mpd")],
        "features": [*segue, "batch", "features"],
        "apply": [*segue, "features", "apply"],
        "materialize": [*segue, "features", "materialize", "--full"],
        "examples": [*segue, "batch", "examples"],
        "neighbours": [*segue, "batch", "neighbours"],
        "train": [*segue, "train"],
        "evaluate": [*segue, "evaluate"],
    }


def stage_env(work: Path, mpd: Path | None, redis_port: int, extra: dict[str, str] | None = None) -> dict:
    """The environment of a stage's process: Segue's settings pointing at `work` (its data and its copy
    of the feature repo), the redis profile on `redis_port`, and any `extra` settings."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYSPARK_PYTHON": sys.executable,
            "TF_USE_LEGACY_KERAS": "1", "SEGUE_PATHS__DATA_DIR": str(work / "data"),
            **({"SEGUE_PATHS__MPD_DIR": str(mpd)} if mpd else {}),
            "SEGUE_FEATURES__REPO_PATH": str(work / "feature_repo"), "SEGUE_FEATURES__PROFILE": "redis",
            "SEGUE_FEATURES__REDIS_CONNECTION_STRING": f"127.0.0.1:{redis_port}", **(extra or {})}


def run_stage(cmd: list[str], env: dict, log: Path, limit_s: float) -> dict:
    """Wall seconds, peak tree RSS and outcome of one command, stopped after `limit_s`."""
    start = time.perf_counter()
    with log.open("w") as out:
        # Under spark-submit the Python driver's stderr arrives on the JVM's stdout.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        ps, peak, largest, stopped = psutil.Process(proc.pid), 0, 0, False
        while proc.poll() is None:
            tree, biggest = _tree_rss(ps)
            peak, largest = max(peak, tree), max(largest, biggest)
            if time.perf_counter() - start > limit_s:
                os.killpg(proc.pid, signal.SIGTERM)
                stopped = True
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                break
            time.sleep(0.5)
    seconds = time.perf_counter() - start
    lines = log.read_text(errors="replace").splitlines()
    outcome = "stopped at the limit" if stopped else ("ok" if proc.returncode == 0 else f"failed ({proc.returncode})")
    result = {"seconds": round(seconds, 1), "peak_rss_mib": round(peak / 2**20),
              "peak_process_rss_mib": round(largest / 2**20), "outcome": outcome,
              "log": str(log), "last_lines": lines[-12:]}
    if outcome != "ok":
        # A JVM stack trace fills the tail with frames; the cause is in its first lines.
        result["error_lines"] = [line for line in lines if _ERROR_MARK.search(line)][:12]
    return result


_ERROR_MARK = re.compile(r"(Error|Exception|Caused by|Traceback|Killed)\b")


def scale_table(records: list[dict]) -> str:
    """Markdown: each stage's seconds and peak tree memory at each size, and the ratio between
    consecutive sizes (10x the playlists should cost about 10x)."""
    records = sorted(records, key=lambda r: r["playlists"])
    sizes = [f"{r['playlists']:,}" for r in records]
    head = ["stage", *[f"{n} s" for n in sizes],
            *[f"time {b['playlists'] // 1000}k / {a['playlists'] // 1000}k" for a, b in zip(records, records[1:])],
            *[f"{n} peak GiB" for n in sizes]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]

    def cell(r: dict, stage: str, key: str) -> float | None:
        got = r["stages"].get(stage)
        return got[key] if got and got["outcome"] == "ok" else None

    for stage in STAGES:
        if not any(stage in r["stages"] for r in records):
            continue
        secs = [cell(r, stage, "seconds") for r in records]
        peaks = [cell(r, stage, "peak_rss_mib") for r in records]
        ratios = [f"{b / a:.1f}x" if a and b else "" for a, b in zip(secs, secs[1:])]
        shown = [f"{v:,.0f}" if v is not None else r["stages"].get(stage, {}).get("outcome", "not run")
                 for v, r in zip(secs, records)]
        lines.append("| " + " | ".join([stage, *shown, *ratios,
                                         *[f"{v / 1024:.1f}" if v is not None else "" for v in peaks]]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["table"]:
        print(scale_table([json.loads(Path(f).read_text()) for f in sys.argv[2:]]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mpd", type=Path, required=True, help="slices from `segue data generate`")
    p.add_argument("--work", type=Path, required=True, help="data, feature repo, Redis and logs of this run")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--limit-s", type=float, default=3600, help="a stage running longer is stopped")
    p.add_argument("--driver-memory", default="6g", help="spark-submit's --driver-memory for ingest")
    p.add_argument("--set", action="append", default=[], metavar="SEGUE_KEY=VALUE",
                   help="extra settings as environment variables, e.g. SEGUE_SPARK__SHUFFLE_PARTITIONS=64")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    playlists = sum(_slice_playlists(f) for f in args.mpd.glob("mpd.slice.*.json"))
    out = args.out or REPO / "docs" / "benchmarks" / f"scale-{playlists // 1000}k.json"
    record = json.loads(out.read_text()) if out.is_file() else {**new_record("scale"), "stages": {}}
    # Slices deleted after ingest (to free the disk) leave the count the ingest run recorded.
    record.update(playlists=playlists or record.get("playlists", 0), mpd=str(args.mpd))

    args.work.mkdir(parents=True, exist_ok=True)
    repo = args.work / "feature_repo"
    if not repo.is_dir():
        shutil.copytree(REPO / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    port = free_port()
    env = stage_env(args.work, args.mpd, port, dict(kv.split("=", 1) for kv in args.set))
    record["settings"] = {k: v for k, v in env.items() if k.startswith("SEGUE_") and "REDIS" not in k}
    commands = stage_commands(args.mpd, args.work, args.driver_memory)
    redis = start_redis(args.work, port) if "materialize" in args.stages else None
    try:
        for stage in args.stages:
            print(f"[scale] {stage}: {' '.join(commands[stage])}", flush=True)
            result = run_stage(commands[stage], env, args.work / f"{stage}.log", args.limit_s)
            if stage == "materialize" and redis is not None:
                result["redis_used_memory_mib"] = _redis_used_mib(port)
            record["stages"][stage] = result
            write_record(record, out, echo=False)
            print(json.dumps({stage: {k: v for k, v in result.items() if k != "last_lines"}}), flush=True)
            if result["outcome"] != "ok":
                break
    finally:
        if redis is not None:
            redis.terminate()
    return 0


def _slice_playlists(path: Path) -> int:
    first, last = path.name.split(".")[2].split("-")  # mpd.slice.<first>-<last>.json
    return int(last) - int(first) + 1


def _redis_used_mib(port: int) -> int:
    info = subprocess.run(["redis-cli", "-p", str(port), "info", "memory"], capture_output=True, text=True).stdout
    used = next(line for line in info.splitlines() if line.startswith("used_memory:"))
    return round(int(used.split(":")[1]) / 2**20)


if __name__ == "__main__":
    sys.exit(main())
