"""Batch-stage benchmark: generator playlists/s, ingest playlists/s and peak memory at two sizes.

    python benchmarks/bench_batch.py [--sizes 10000 100000] [--out docs/benchmarks/batch.json]

Ingest runs through `spark-submit` as users run it; peak memory is the resident set of the whole
process tree (Python driver + JVM), sampled every 0.2 s. Sizes run side by side in one process so
the ratio between them is comparable even on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import psutil

from segue.batch.synth import generate

from bench_record import new_record, write_record  # benchmarks/ is on sys.path when a benchmark runs

REPO = Path(__file__).resolve().parents[1]


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(cmd: list[str], log: Path) -> tuple[float, int]:
    """Wall seconds and peak tree RSS (bytes) of a command; raises if it fails."""
    start = time.perf_counter()
    # spark-submit finds Spark through the Python on PATH, as in an activated virtualenv.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYSPARK_PYTHON": sys.executable}
    with log.open("w") as err:
        # Under spark-submit the Python driver's stderr arrives on the JVM's stdout.
        proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, env=env)
        ps, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss(ps))
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{log.read_text()[-3000:]}")
    return seconds, peak


def bench_size(n: int, work: Path) -> dict:
    mpd = work / f"mpd-{n}"
    t = time.perf_counter()
    report = generate(mpd, playlists=n, seed=7, tastes=32, start=date(2011, 1, 1),
                      end=date(2017, 11, 1), challenge_playlists=1000, progress=False)
    gen_total = time.perf_counter() - t
    spark_submit = Path(sys.executable).parent / "spark-submit"
    seconds, peak = run_measured([str(spark_submit), "--master", "local[*]", "--driver-memory", "6g",
                                  "--driver-java-options",
                                  f"-Dlog4j2.configurationFile={REPO / 'batch' / 'log4j2.properties'}",
                                  str(REPO / "batch" / "ingest_mpd.py"), "--input", str(mpd),
                                  "--output", str(work / f"warehouse-{n}")], work / f"ingest-{n}.log")
    manifest = json.loads((work / f"warehouse-{n}" / "_manifest.json").read_text())
    return {
        "playlists": n,
        "track_entries": report["statistics"]["track_entries"],
        "generate_slices_playlists_per_s": round(report["timings"]["playlists_per_s"]),
        "generate_total_s": round(gen_total, 1),
        "ingest_s": round(seconds, 1),
        "ingest_playlists_per_s": round(n / seconds),
        "ingest_peak_rss_mib": round(peak / 2**20),
        "ingest_steps_s": manifest["seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "batch.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="segue-bench-") as tmp:
        results = []
        for n in args.sizes:
            results.append(bench_size(n, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
            shutil.rmtree(Path(tmp) / f"mpd-{n}", ignore_errors=True)
    small, large = results[0], results[-1]
    record = {
        **new_record("batch"),
        "results": results,
        "ratio_large_to_small": {
            "playlists": large["playlists"] / small["playlists"],
            "ingest_seconds": round(large["ingest_s"] / small["ingest_s"], 2),
            "ingest_peak_rss": round(large["ingest_peak_rss_mib"] / small["ingest_peak_rss_mib"], 2),
        },
    }
    write_record(record, args.out, echo=False)
    print(json.dumps(record["ratio_large_to_small"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
