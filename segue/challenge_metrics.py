"""The RecSys Challenge 2018 metrics, per playlist and averaged.

`ranked` is a ranked list of recommended items (best first), `relevant` the held-out items. Items
can be any hashable (track URIs, track indices). Only the first occurrence of an item in `ranked`
counts, as a submission must not repeat tracks.

Uncertainty: `evaluate_rankings(..., per_playlist=True)` also returns each playlist's scores
(`PlaylistScores`); `bootstrap_intervals` turns them into percentile bootstrap intervals of the
means, and `paired_comparison` / `compare` into intervals of the difference (and ratio) of two
models' means over the same playlists, resampled together, with a verdict that says `better` or
`worse` only when the difference interval excludes 0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MAX_RANKED = 500  # a submission ranks 500 tracks per playlist
NO_CLICK = 51  # clicks when no relevant track is in the first 500
RECALL_KS = (10, 50, 100, 500)
METRICS = ("r_precision", "ndcg", "clicks", *(f"recall@{k}" for k in RECALL_KS))
LOWER_IS_BETTER = frozenset({"clicks"})
COMPARED_METRICS = ("recall@100", "recall@500", "r_precision", "ndcg")


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


@dataclass(frozen=True)
class PlaylistScores:
    """Per-playlist scores: `scores[i, j]` is metric `metrics[j]` of playlist `pids[i]`."""

    pids: tuple
    metrics: tuple[str, ...]
    scores: np.ndarray  # float64, shape (len(pids), len(metrics))

    def __post_init__(self) -> None:
        if self.scores.shape != (len(self.pids), len(self.metrics)):
            raise ValueError(f"scores shape {self.scores.shape} != ({len(self.pids)}, {len(self.metrics)})")

    def column(self, metric: str) -> np.ndarray:
        return self.scores[:, self.metrics.index(metric)]

    def means(self) -> dict[str, float]:
        return {m: float(v) for m, v in zip(self.metrics, self.scores.mean(axis=0))}

    def aligned_to(self, pids: Sequence[Hashable]) -> PlaylistScores:
        """The same scores in the order of `pids` (which must be exactly this set of playlists)."""
        if tuple(pids) == self.pids:
            return self
        row = {pid: i for i, pid in enumerate(self.pids)}
        if len(pids) != len(self.pids) or set(pids) != row.keys():
            raise ValueError("the two score sets cover different playlists; a paired comparison needs the same")
        return PlaylistScores(tuple(pids), self.metrics, self.scores[[row[p] for p in pids]])


def evaluate_rankings(rankings: Mapping[Hashable, Sequence[Hashable]],
                      holdouts: Mapping[Hashable, Sequence[Hashable]],
                      categories: Mapping[Hashable, str] | None = None, *,
                      per_playlist: bool = False) -> dict:
    """Scores rankings (first 500 items) against held-out items, overall and per category.

    Args:
        rankings: pid -> ranked items; a missing pid counts as an empty ranking.
        holdouts: pid -> held-out items; every pid here is scored.
        categories: optional pid -> category name.
        per_playlist: also return each playlist's scores, under `"per_playlist"`, as
            `PlaylistScores` (rows in `holdouts` order; not JSON-serialisable, so off by default).

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
    result = {"overall": _means(list(scores.values())),
              "by_category": {name: _means(rows) for name, rows in by_category.items()}}
    if per_playlist:
        matrix = np.array([[row[m] for m in METRICS] for row in scores.values()], dtype=np.float64)
        result["per_playlist"] = PlaylistScores(tuple(scores), METRICS, matrix.reshape(len(scores), len(METRICS)))
    return result


# --- bootstrap ---------------------------------------------------------------------------------

_CHUNK_CELLS = 1 << 22  # resample-weight cells (resamples x playlists) built at a time, ~32 MB


def _resample_weights(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of (rows, n) multiplicities: row r counts how often each playlist is drawn in
    resample r (n draws with replacement). Deterministic for (n, resamples, seed)."""
    if n < 1:
        raise ValueError("bootstrapping needs at least one playlist")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, rows):
        block = min(rows, resamples - start)
        draws = rng.integers(0, n, size=(block, n)) + (np.arange(block) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=block * n).reshape(block, n).astype(np.float64)


def _resampled_means(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, k) means of the (n, k) `columns` over bootstrap resamples of the n rows."""
    n = columns.shape[0]
    return np.concatenate([w @ columns for w in _resample_weights(n, resamples, seed)]) / n


def _percentiles(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < level < 1:
        raise ValueError("level must be between 0 and 1")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail], axis=0)
    return lo, hi


def _as_matrix(scores: PlaylistScores | Mapping[str, Sequence[float]]) -> tuple[tuple[str, ...], np.ndarray]:
    if isinstance(scores, PlaylistScores):
        return scores.metrics, scores.scores
    names = tuple(scores)
    columns = [np.asarray(scores[m], dtype=np.float64) for m in names]
    if not names or len({len(c) for c in columns}) != 1:
        raise ValueError("per-playlist scores need one equally long column per metric")
    return names, np.stack(columns, axis=1)


def bootstrap_intervals(per_playlist_scores: PlaylistScores | Mapping[str, Sequence[float]],
                        resamples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each metric's mean over playlists.

    Playlists are resampled with replacement (`resamples` times, all metrics on the same
    resamples); each interval is the (1-level)/2 and (1+level)/2 percentiles of the resampled
    means. Deterministic for a seed.

    Args:
        per_playlist_scores: `PlaylistScores`, or metric -> per-playlist values (same length).

    Returns:
        metric -> (lo, hi).
    """
    names, matrix = _as_matrix(per_playlist_scores)
    lo, hi = _percentiles(_resampled_means(matrix, resamples, seed), level)
    return {m: (float(a), float(b)) for m, a, b in zip(names, lo, hi)}


def verdict(interval: tuple[float, float], metric: str = "") -> str:
    """`better` / `worse` when the interval of A - B excludes 0 (direction by metric), else `tie`."""
    lo, hi = interval
    sign = -1 if metric in LOWER_IS_BETTER else 1
    if lo > 0:
        return "better" if sign > 0 else "worse"
    if hi < 0:
        return "worse" if sign > 0 else "better"
    return "tie"


def _as_scores(values: PlaylistScores | Sequence[float], metric: str) -> PlaylistScores:
    if isinstance(values, PlaylistScores):
        return values
    column = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return PlaylistScores(tuple(range(len(column))), (metric,), column)


def compare(a: PlaylistScores, b: PlaylistScores, metrics: Sequence[str] = COMPARED_METRICS,
            resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """Paired bootstrap of model A against model B on the same playlists, per metric.

    Each resample draws one set of playlists and scores both models on it, so the spread of
    the difference excludes the between-playlist variance the two models share.

    Returns:
        metric -> {"a", "b": means; "difference": mean(A) - mean(B) and "difference_interval";
        "ratio": mean(A) / mean(B) and "ratio_interval" (None where B's mean is 0);
        "verdict": `better` / `worse` when the difference interval excludes 0, else `tie`
        (for clicks, lower is better)}.
    """
    metrics = tuple(metrics)
    b = b.aligned_to(a.pids)
    xa = np.stack([a.column(m) for m in metrics], axis=1)
    xb = np.stack([b.column(m) for m in metrics], axis=1)
    k = len(metrics)
    # One pass over the same resamples: means of A, of B, and of A - B (exactly 0 for A = B).
    means = _resampled_means(np.concatenate([xa, xb, xa - xb], axis=1), resamples, seed)
    ma, mb, md = means[:, :k], means[:, k:2 * k], means[:, 2 * k:]
    d_lo, d_hi = _percentiles(md, level)
    out = {}
    for j, metric in enumerate(metrics):
        mean_a, mean_b = float(xa[:, j].mean()), float(xb[:, j].mean())
        diff = float((xa[:, j] - xb[:, j]).mean())
        interval = (float(d_lo[j]), float(d_hi[j]))
        if mean_b == 0 or np.any(mb[:, j] == 0):
            ratio, ratio_interval = (None if mean_b == 0 else mean_a / mean_b), None
        else:
            r_lo, r_hi = _percentiles(ma[:, j] / mb[:, j], level)
            ratio, ratio_interval = mean_a / mean_b, (float(r_lo), float(r_hi))
        out[metric] = {"a": mean_a, "b": mean_b, "difference": diff, "difference_interval": interval,
                       "ratio": ratio, "ratio_interval": ratio_interval, "verdict": verdict(interval, metric)}
    return out


def paired_comparison(a: PlaylistScores | Sequence[float], b: PlaylistScores | Sequence[float],
                      metric: str = "recall@100", resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """`compare` for one metric; `a` and `b` may also be plain per-playlist arrays of that metric
    (same playlists, same order)."""
    return compare(_as_scores(a, metric), _as_scores(b, metric), (metric,), resamples, seed, level)[metric]
