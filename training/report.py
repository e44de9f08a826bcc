"""The evaluation report: JSON for machines, a Markdown table for people, a Recall@K plot.

Uncertainty: each model's overall means carry 95% percentile bootstrap intervals over the held-out
playlists (`intervals`), and each model is compared with the co-occurrence baseline by a paired
bootstrap (`comparisons`): `better` / `worse` only when the interval of the difference excludes 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display here or on servers
import matplotlib.pyplot as plt  # noqa: E402

from segue.vocabulary import CATEGORIES  # noqa: E402
from segue.challenge_metrics import COMPARED_METRICS, PlaylistScores, bootstrap_intervals, compare  # noqa: E402

_COLUMNS = ("recall@10", "recall@50", "recall@100", "recall@500", "ndcg", "r_precision", "clicks")
BASELINE = "cooccurrence"  # what every model is compared with, when it was scored
RANKED = "full_pipeline"
RETRIEVAL_ORDERS = ("merged_sources", "two_tower")  # the same merge without the ranker; the towers alone
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95


def _fmt(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _signed(value: float, digits: int = 4) -> str:
    return f"{value:+.{digits}f}"


def bootstrap_summary(scores: dict[str, PlaylistScores], baseline: str = BASELINE,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                      level: float = BOOTSTRAP_LEVEL) -> tuple[dict[str, dict[str, list[float]]], dict[str, Any]]:
    """Per-model overall intervals and the paired comparisons with `baseline`, JSON-ready.

    Every model is resampled with the same seed, so all intervals and comparisons draw the same
    playlists. Returns `(intervals, comparisons)`: intervals is model -> {metric: [lo, hi]};
    comparisons is `{"baseline", "metrics", "models": {model: {metric: {"difference",
    "interval", "ratio", "ratio_interval", "verdict"}}}}`, or `{}` when the baseline was not scored.
    """
    intervals = {name: {m: [lo, hi] for m, (lo, hi) in
                        bootstrap_intervals(s, resamples=resamples, seed=seed, level=level).items()}
                 for name, s in scores.items()}
    if baseline not in scores:
        return intervals, {}
    models = {name: _paired(s, scores[baseline], resamples, seed, level)
              for name, s in scores.items() if name != baseline}
    return intervals, {"baseline": baseline, "metrics": list(COMPARED_METRICS), "models": models}


def ranker_comparison(scores: dict[str, PlaylistScores], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                      level: float = BOOTSTRAP_LEVEL) -> dict[str, Any]:
    """The ranking stage against the retrieval orders it replaces (the same merged candidates in
    fusion's order, and the towers' search alone), by the same paired bootstrap; `{}` for a model
    without the ranking stage."""
    if RANKED not in scores:
        return {}
    return {"model": RANKED, "against": {name: _paired(scores[RANKED], scores[name], resamples, seed, level)
                                          for name in RETRIEVAL_ORDERS if name in scores}}


def _paired(model: PlaylistScores, baseline: PlaylistScores, resamples: int, seed: int,
            level: float) -> dict[str, dict[str, Any]]:
    compared = compare(model, baseline, COMPARED_METRICS, resamples=resamples, seed=seed, level=level)
    return {m: {"difference": c["difference"], "interval": list(c["difference_interval"]), "ratio": c["ratio"],
                "ratio_interval": None if c["ratio_interval"] is None else list(c["ratio_interval"]),
                "verdict": c["verdict"]}
            for m, c in compared.items()}


def _cell(result: dict[str, Any], metric: str) -> str:
    digits = 2 if metric == "clicks" else 4
    value = result["overall"][metric]
    interval = (result.get("intervals") or {}).get(metric)
    if interval is None:
        return _fmt(value, digits)
    digits -= 1  # a value with its interval: one digit fewer keeps the table readable
    return f"{_fmt(value, digits)} [{_fmt(interval[0], digits)}, {_fmt(interval[1], digits)}]"


def metrics_table(report: dict[str, Any]) -> str:
    """Models x metrics (overall), plus cold-start Recall@500, as a Markdown table.

    Where the report has bootstrap intervals, each value is shown with its interval:
    `0.318 [0.301, 0.335]`.
    """
    head = ["model", *_COLUMNS, "cold-start recall@500"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, result in report["models"].items():
        row = [_cell(result, c) for c in _COLUMNS]
        lines.append(f"| {name} | " + " | ".join(row) + f" | {_fmt(result['cold_start']['recall@500'])} |")
    return "\n".join(lines)


def comparisons_table(report: dict[str, Any]) -> str:
    """Each model minus the baseline: difference [interval] and verdict per metric; empty if none."""
    comparisons = report.get("comparisons") or {}
    if not comparisons.get("models"):
        return ""
    return _paired_table(comparisons["models"])


def _paired_table(models: dict[str, dict[str, dict[str, Any]]]) -> str:
    metrics = list(next(iter(models.values())))
    head = ["model", *(f"{m} difference" for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in models.items():
        cells = [f"{_signed(rows[m]['difference'], 3)} [{_signed(rows[m]['interval'][0], 3)}, "
                 f"{_signed(rows[m]['interval'][1], 3)}] {rows[m]['verdict']}" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def category_table(report: dict[str, Any], metric: str = "recall@100") -> str:
    """Challenge categories x models for one metric."""
    models = list(report["models"])
    lines = ["| category | playlists | " + " | ".join(models) + " |", "|" + "---|" * (len(models) + 2)]
    for cat in (c.name for c in CATEGORIES):
        rows = [report["models"][m]["by_category"].get(cat) for m in models]
        if rows[0] is None:
            continue
        lines.append(f"| {cat} | {rows[0]['playlists']} | " + " | ".join(_fmt(r[metric]) for r in rows) + " |")
    return "\n".join(lines)


def _plot(report: dict[str, Any], path: Path) -> None:
    ks = report["recall_ks"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, result in report["models"].items():
        values = [result["overall"][f"recall@{k}"] for k in ks]
        intervals = result.get("intervals")
        if intervals:  # bootstrap intervals as asymmetric error bars
            yerr = [[max(0.0, v - intervals[f"recall@{k}"][0]) for v, k in zip(values, ks)],
                    [max(0.0, intervals[f"recall@{k}"][1] - v) for v, k in zip(values, ks)]]
            ax.errorbar(ks, values, yerr=yerr, marker="o", capsize=3, label=name)
        else:
            ax.plot(ks, values, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K (full catalog)")
    ax.set_ylabel("Recall@K")
    ax.set_title(f"Held-out playlists after {report['split_time'][:10]} (n={report['heldout_playlists']})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _uncertainty_section(report: dict[str, Any]) -> list[str]:
    boot = report.get("bootstrap")
    if not boot:
        return []
    lines = [f"Brackets: {boot['level']:.0%} percentile bootstrap intervals of the mean over the "
             f"{report['heldout_playlists']} held-out playlists ({boot['resamples']} resamples, "
             f"seed {boot['seed']}).", ""]
    table = comparisons_table(report)
    if table:
        lines += [f"## Compared with `{report['comparisons']['baseline']}`", "",
                  "Difference of means (model − baseline) with its paired bootstrap interval (same playlists "
                  "resampled for both); `better` / `worse` only when the interval excludes 0, else `tie`.", "",
                  table, ""]
    ranker = report.get("ranker_vs_retrieval") or {}
    if ranker.get("against"):
        lines += [f"## The ranker against the retrieval orders (`{ranker['model']}` − each, paired)", "",
                  _paired_table(ranker["against"]), ""]
    return lines


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    md = [f"# Evaluation of `{report['model']}`", "",
          f"{report['heldout_playlists']} held-out playlists edited after {report['split_time']}, "
          f"ranked against the full catalog of {report['catalog_tracks']} tracks (seeds excluded); "
          f"{report['cold_start_tracks']} tracks are cold-start (first seen after the split).", "",
          "## Overall", "", metrics_table(report), "", *_uncertainty_section(report),
          "## Recall@100 by challenge category", "", category_table(report), "",
          "![Recall@K](recall_at_k.png)", ""]
    (out_dir / "metrics.md").write_text("\n".join(md))
    _plot(report, out_dir / "recall_at_k.png")
