"""What every benchmark records: a header (benchmark, date, machine), the JSON file it writes, and
the `make demo` model the demo-based benchmarks need."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import psutil


def new_record(benchmark: str) -> dict:
    """The record's header: the benchmark's name, the UTC date, and a one-line machine description."""
    return {"benchmark": benchmark, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
                       f"{round(psutil.virtual_memory().total / 2**30)} GiB, Python {platform.python_version()}"}


def write_record(record: dict, out: Path, *, echo: bool = True) -> None:
    """Writes `record` to `out` as indented JSON (creating its folder) and, with `echo`, prints it."""
    text = json.dumps(record, indent=2, default=str)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    if echo:
        print(text)


def demo_model(data: Path) -> Path:
    """`make demo`'s latest model under `data`; exits with a hint when there is none."""
    model = data / "models" / "latest"
    if not (model / "manifest.json").is_file():
        raise SystemExit(f"no model under {data}: run `make demo` first (or pass --data)")
    return model
