"""The RecSys Challenge 2018 metrics (shared/notes/mpd-format.md), per playlist and averaged.

`ranked` is a ranked list of recommended items (best first), `relevant` the held-out items. Items
can be any hashable (track URIs, track indices). Only the first occurrence of an item in `ranked`
counts, as a submission must not repeat tracks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

MAX_RANKED = 500  # a submission ranks 500 tracks per playlist
NO_CLICK = 51  # clicks when no relevant track is in the first 500
RECALL_KS = (10, 50, 100, 500)


def _relevant_set(relevant: Sequence[Hashable]) -> set:
    found = set(relevant)
    if not found:
        raise ValueError("a playlist needs at least one relevant (held-out) item to be scored")
    return found


def _hits(ranked: Sequence[Hashable], relevant: set) -> list[bool]:
    """Whether each distinct ranked item is relevant, in rank order."""
    return [item in relevant for item in dict.fromkeys(ranked)]


def r_precision(ranked: Sequence[Hashable], relevant: Sequence[Hashable]) -> float:
    """|G ∩ R[1..|G|]| / |G|."""
    truth = _relevant_set(relevant)
    return sum(_hits(ranked, truth)[:len(truth)]) / len(truth)


def ndcg(ranked: Sequence[Hashable], relevant: Sequence[Hashable]) -> float:
    """DCG / IDCG with DCG = rel_1 + Σ_{i≥2} rel_i / log2(i), IDCG over |G ∩ R| hits."""
    hits = _hits(ranked, _relevant_set(relevant))
    dcg = sum(1.0 if i == 1 else 1.0 / math.log2(i)
              for i, hit in enumerate(hits, start=1) if hit)
    n_hits = sum(hits)
    if n_hits == 0:
        return 0.0
    idcg = 1.0 + sum(1.0 / math.log2(i) for i in range(2, n_hits + 1))
    return dcg / idcg


def clicks(ranked: Sequence[Hashable], relevant: Sequence[Hashable]) -> int:
    """Recommended Songs clicks: floor((rank of first relevant - 1) / 10), 51 if none in 500."""
    hits = _hits(ranked, _relevant_set(relevant))[:MAX_RANKED]
    for rank, hit in enumerate(hits, start=1):
        if hit:
            return (rank - 1) // 10
    return NO_CLICK


def recall_at_k(ranked: Sequence[Hashable], relevant: Sequence[Hashable], k: int) -> float:
    """Share of the relevant items found in the first k ranked."""
    truth = _relevant_set(relevant)
    return sum(_hits(ranked, truth)[:k]) / len(truth)


def _score(ranked: Sequence[Hashable], relevant: Sequence[Hashable]) -> dict[str, float]:
    ranked = list(dict.fromkeys(ranked))[:MAX_RANKED]
    return {"r_precision": r_precision(ranked, relevant), "ndcg": ndcg(ranked, relevant),
            "clicks": float(clicks(ranked, relevant)),
            **{f"recall@{k}": recall_at_k(ranked, relevant, k) for k in RECALL_KS}}


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
    means = {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}
    return {**means, "playlists": len(rows)}


def evaluate_rankings(rankings: Mapping[Hashable, Sequence[Hashable]],
                      holdouts: Mapping[Hashable, Sequence[Hashable]],
                      categories: Mapping[Hashable, str] | None = None) -> dict:
    """Scores rankings (first 500 items) against held-out items, overall and per category.

    Args:
        rankings: pid -> ranked items; a missing pid counts as an empty ranking.
        holdouts: pid -> held-out items; every pid here is scored.
        categories: optional pid -> category name.

    Returns:
        `{"overall": {metric: mean, "playlists": n}, "by_category": {name: {...}}}` with metrics
        r_precision, ndcg, clicks and recall@{10,50,100,500}.
    """
    if not holdouts:
        raise ValueError("no held-out playlists to evaluate")
    scores = {pid: _score(rankings.get(pid, ()), truth) for pid, truth in holdouts.items()}
    by_category: dict[str, list[dict[str, float]]] = defaultdict(list)
    if categories is not None:
        for pid, row in scores.items():
            by_category[categories[pid]].append(row)
    return {"overall": _means(list(scores.values())),
            "by_category": {name: _means(rows) for name, rows in by_category.items()}}
