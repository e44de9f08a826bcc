"""Baselines scored in the same harness as the two-tower model: popularity and co-occurrence.

Both learn only from playlist entries added before the split time, held-out playlists excluded,
which is exactly what the two-tower model's training examples saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse


class TrainingHistory:
    """Playlist x track incidence of the training period."""

    def __init__(self, entries: pd.DataFrame):
        """`entries`: one row per (pid, track_uri) added before the split time."""
        self.tracks, track_index = np.unique(entries.track_uri.to_numpy(dtype=object), return_inverse=True)
        _, playlist_index = np.unique(entries.pid.to_numpy(), return_inverse=True)
        ones = np.ones(len(entries), dtype=np.float32)
        matrix = sparse.csr_matrix((ones, (playlist_index, track_index)),
                                   shape=(playlist_index.max(initial=-1) + 1, len(self.tracks)))
        matrix.data[:] = 1.0  # a track twice in a playlist still co-occurs once
        self.matrix = matrix
        self.position = {uri: i for i, uri in enumerate(self.tracks)}
        self.counts = np.asarray(matrix.sum(axis=0)).ravel()


def top_indices(scores: np.ndarray, exclude: Sequence[int], k: int) -> np.ndarray:
    """Indices of the k highest finite scores, best first, `exclude` left out."""
    scores = scores.astype(np.float64, copy=True)
    scores[list(exclude)] = -np.inf
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return top[np.isfinite(scores[top])]


def popularity_rankings(history: TrainingHistory, seeds: Sequence[Sequence[str]], k: int) -> list[list[str]]:
    """The most-added tracks of the training period, seeds excluded."""
    out = []
    for case in seeds:
        exclude = [history.position[u] for u in case if u in history.position]
        out.append(history.tracks[top_indices(history.counts, exclude, k)].tolist())
    return out


def cooccurrence_rankings(history: TrainingHistory, seeds: Sequence[Sequence[str]], k: int,
                          chunk: int = 256) -> list[list[str]]:
    """Item-to-item co-occurrence: tracks scored by how many training playlists they share with
    the seeds (summed over seeds), popularity breaking ties and filling cases without seeds."""
    n_tracks = len(history.tracks)
    # Popularity as a fraction below 1 only orders tracks with equal co-occurrence.
    tie_break = history.counts / (history.counts.max(initial=0) + 1.0)
    # A block of dense scores stays near 1 GB however large the catalog.
    chunk = max(1, min(chunk, 2**27 // max(1, n_tracks)))
    out: list[list[str]] = []
    for start in range(0, len(seeds), chunk):
        block = seeds[start:start + chunk]
        rows, cols = [], []
        for r, case in enumerate(block):
            idx = [history.position[u] for u in case if u in history.position]
            rows += [r] * len(idx)
            cols += idx
        q = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(block), n_tracks))
        scores = (q @ history.matrix.T @ history.matrix).toarray() + tie_break
        for r, case in enumerate(block):
            exclude = [history.position[u] for u in case if u in history.position]
            out.append(history.tracks[top_indices(scores[r], exclude, k)].tolist())
    return out
