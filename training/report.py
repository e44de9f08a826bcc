"""The evaluation report: JSON for machines, a Markdown table for people, a Recall@K plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display here or on servers
import matplotlib.pyplot as plt  # noqa: E402

from segue.batch.mpd.categories import CATEGORIES  # noqa: E402

_COLUMNS = ("recall@10", "recall@50", "recall@100", "recall@500", "ndcg", "r_precision", "clicks")


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def metrics_table(report: dict[str, Any]) -> str:
    """Models x metrics (overall), plus cold-start Recall@500, as a Markdown table."""
    head = ["model", *_COLUMNS, "cold-start recall@500"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, result in report["models"].items():
        row = [_fmt(result["overall"][c]) if c != "clicks" else f"{result['overall'][c]:.2f}" for c in _COLUMNS]
        lines.append(f"| {name} | " + " | ".join(row) + f" | {_fmt(result['cold_start']['recall@500'])} |")
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
        ax.plot(ks, [result["overall"][f"recall@{k}"] for k in ks], marker="o", label=name)
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


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    md = [f"# Evaluation of `{report['model']}`", "",
          f"{report['heldout_playlists']} held-out playlists edited after {report['split_time']}, "
          f"ranked against the full catalog of {report['catalog_tracks']} tracks (seeds excluded); "
          f"{report['cold_start_tracks']} tracks are cold-start (first seen after the split).", "",
          "## Overall", "", metrics_table(report), "",
          "## Recall@100 by challenge category", "", category_table(report), "",
          "![Recall@K](recall_at_k.png)", ""]
    (out_dir / "metrics.md").write_text("\n".join(md))
    _plot(report, out_dir / "recall_at_k.png")
