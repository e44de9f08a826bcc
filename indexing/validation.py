"""Checks a freshly built collection must pass before the serving alias may point at it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pymilvus import MilvusClient

from segue.indexing.profiles import TOP_K, IndexProfile


@dataclass
class Validation:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks.values())

    @property
    def reasons(self) -> list[str]:
        return [c["why"] for c in self.checks.values() if not c["ok"]]

    def record(self, name: str, ok: bool, why: str, **facts: Any) -> None:
        self.checks[name] = {"ok": bool(ok), "why": why, **facts}

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def mean_pairwise_cosine(vectors: np.ndarray, sample: int, rng: np.random.Generator) -> float:
    picked = vectors[rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)]
    unit = picked / np.maximum(np.linalg.norm(picked, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    n = len(unit)
    return float((sims.sum() - np.trace(sims)) / max(n * (n - 1), 1))


def ann_recall(client: MilvusClient, collection: str, profile: IndexProfile, vectors: np.ndarray,
               queries: int, rng: np.random.Generator) -> tuple[float, int]:
    """Recall@k of the collection's ANN search against exact inner product over `vectors`.

    Sampled tracks' own embeddings are the queries: they come from the distribution the index
    serves. A hit counts if it scores at least the exact k-th best score, so tracks with equal
    embeddings (one recording on several albums) are interchangeable, as they are to a user.
    """
    k = min(TOP_K, len(vectors))
    picked = rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False)
    scores = vectors[picked] @ vectors.T
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    hits = client.search(collection, data=vectors[picked].tolist(), limit=k,
                         search_params=profile.search_request(), consistency_level="Strong")
    tolerance = 1e-5  # float32 scores from two engines differ in the last bits
    found = [sum(h["distance"] >= kth[i] - tolerance for h in row) / k for i, row in enumerate(hits)]
    return float(np.mean(found)), k


def row_count(client: MilvusClient, collection: str) -> int:
    return int(client.query(collection, filter="", output_fields=["count(*)"],
                            consistency_level="Strong")[0]["count(*)"])


def validate_build(client: MilvusClient, collection: str, profile: IndexProfile, uris: np.ndarray,
                   vectors: np.ndarray, expected_rows: int, queries: int, min_recall: float,
                   max_mean_cosine: float, live_rows: int | None = None, min_rows_share: float = 0.0,
                   seed: int = 0) -> Validation:
    """Row count, no shrink against the live collection, finite embeddings, no collapse, ANN
    Recall@100 >= min_recall; each recorded."""
    result = Validation()
    rng = np.random.default_rng(seed)
    rows = row_count(client, collection)
    result.record("row_count", rows == expected_rows,
                  f"the collection holds {rows} rows, the catalogue {expected_rows}",
                  rows=int(rows), expected=int(expected_rows))
    if live_rows:
        # A catalogue read half-way (a failed feature run, a wrong path) must not replace a whole index.
        share = rows / live_rows
        result.record("no_shrink", share >= min_rows_share,
                      f"{rows} rows against {live_rows} in the live collection ({share:.0%}; at least "
                      f"{min_rows_share:.0%}, `index.min_rows_share`)"
                      + ("; if the catalogue really shrank, rebuild with --force" if share < min_rows_share else ""),
                      rows=int(rows), live_rows=int(live_rows), share=round(share, 4))
    if len(vectors) == 0:
        result.record("embeddings", False, "no embeddings were written")
        return result
    finite = bool(np.isfinite(vectors).all())
    result.record("finite", finite, "embeddings hold NaN or infinity" if not finite else "all finite")
    if not finite:
        return result
    cosine = mean_pairwise_cosine(vectors, 2000, rng)
    result.record("not_collapsed", cosine <= max_mean_cosine,
                  f"mean pairwise cosine {cosine:.3f} (limit {max_mean_cosine}): "
                  + ("the tower maps tracks to nearly one point" if cosine > max_mean_cosine else "spread"),
                  mean_cosine=round(cosine, 4))
    recall, k = ann_recall(client, collection, profile, vectors, queries, rng)
    result.record("ann_recall", recall >= min_recall,
                  f"ANN Recall@{k} against exact search {recall:.3f} (minimum {min_recall})",
                  recall=round(recall, 4), k=k, queries=min(queries, len(uris)))
    return result
