"""`make demo`: every stage built so far, end to end, with progress and a closing summary."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from segue.settings import SegueSettings


@dataclass
class StepResult:
    name: str
    seconds: float
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Demo:
    steps: list[StepResult] = field(default_factory=list)

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        n = len(self.steps) + 1
        click.secho(f"\n[{n}] {name} ...", bold=True)
        t = time.perf_counter()
        facts = fn()
        self.steps.append(StepResult(name, time.perf_counter() - t, facts))
        click.echo(f"[{n}] {name}: done in {self.steps[-1].seconds:.1f}s")
        return facts

    def summary(self) -> str:
        width = max(len(s.name) for s in self.steps)
        lines = [f"{'step':<{width}}  {'seconds':>8}  facts", "-" * (width + 40)]
        for s in self.steps:
            facts = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in s.facts.items())
            lines.append(f"{s.name:<{width}}  {s.seconds:8.1f}  {facts}")
        lines.append(f"{'total':<{width}}  {sum(s.seconds for s in self.steps):8.1f}")
        return "\n".join(lines)


def run_demo(settings: SegueSettings, out: Path, mpd: Path | None, playlists: int | None) -> int:
    from segue.batch.contracts import ContractViolation
    from segue.batch.ingest_mpd import ingest
    from segue.batch.mpd import MpdFormatError, read_playlists
    from segue.batch.spark_session import build_spark
    from segue.batch.synth import generate

    demo = Demo()
    mpd_dir = mpd or out / "mpd"
    warehouse = out / "warehouse" / "mpd"
    try:
        if mpd is None:
            gen = settings.generate.model_copy(update={"playlists": playlists} if playlists else {})
            demo.run("generate MPD-shaped sample", lambda: _generated_facts(generate(
                mpd_dir, playlists=gen.playlists, seed=gen.seed, tastes=gen.tastes, start=gen.start,
                end=gen.end, challenge_playlists=gen.challenge_playlists, slice_size=gen.slice_size)))

        def validate() -> dict[str, Any]:
            n = entries = 0
            for p in read_playlists(mpd_dir):
                n, entries = n + 1, entries + len(p["tracks"])
            return {"playlists": n, "track_entries": entries}

        demo.run("validate slices (strict reader)", validate)

        metadata = mpd_dir / "metadata"

        def run_ingest() -> dict[str, Any]:
            spark = build_spark("segue-demo-ingest", settings.spark)
            manifest = ingest(spark, mpd_dir, warehouse, metadata if metadata.is_dir() else None)
            return {**manifest["counts"], "metadata": "yes" if manifest["metadata"] else "none",
                    "contracts": f"{sum(r['rules_checked'] for r in manifest['contracts'])} rules held"}

        demo.run("Spark ingest + data contracts", run_ingest)
    except Exception as e:  # the summary below still says how far it got
        if not isinstance(e, (MpdFormatError, ContractViolation, FileNotFoundError)):
            traceback.print_exc()
        click.secho(f"\ndemo stopped: {e}", fg="red", err=True)
        return 1
    finally:
        if demo.steps:
            click.secho("\nSummary", bold=True)
            click.echo(demo.summary())

    click.echo(f"\nArtifacts:\n  MPD slices      {mpd_dir}\n  Parquet tables  {warehouse}"
               f"  (manifest: {warehouse / '_manifest.json'})")
    report = mpd_dir / "generator_report.md"
    if report.is_file():
        click.echo(f"  yardsticks      {report}")
    return 0


def _generated_facts(report: dict[str, Any]) -> dict[str, Any]:
    stats = report["statistics"]
    facts = {k: stats[k] for k in ("playlists", "track_entries", "unique_tracks", "challenge_playlists")}
    for name, result in report["yardsticks"].items():
        facts[f"{name} R-prec"] = f"{result['overall']['r_precision']:.3f}"
    return facts
