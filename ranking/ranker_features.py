"""The ranker's inputs: one numeric row per candidate, computed the same way offline and in serving."""

from __future__ import annotations

import numpy as np

from segue.ranking.candidates import CandidateSet

FEATURES = (
    "tower_score",          # cosine of query and track
    "tower_reciprocal_rank",
    "in_tower",
    "neighbour_log_count",  # co-occurrence counts summed over the seeds read
    "neighbour_share",      # ... over the case's largest sum
    "neighbour_reciprocal_rank",
    "neighbour_hit_share",  # share of the seeds read that list the track
    "in_neighbours",
    "popularity_log",       # playlists holding the track in the training window
    "artist_share",
    "seeds_log",
)


def ranker_features(c: CandidateSet) -> np.ndarray:
    """[candidates, len(FEATURES)] float32, in FEATURES order."""
    if c.tower_score is None or c.popularity is None or c.artist_share is None:
        raise ValueError("candidate set is missing tower scores, popularity or artist shares")
    top = c.neighbour_count.max(initial=0.0)
    seeds = max(c.seeds_read, 1)
    columns = [
        c.tower_score,
        np.where(c.tower_rank > 0, 1.0 / np.maximum(c.tower_rank, 1), 0.0),
        (c.tower_rank > 0).astype(float),
        np.log1p(c.neighbour_count),
        c.neighbour_count / top if top > 0 else np.zeros(len(c)),
        np.where(c.neighbour_rank > 0, 1.0 / np.maximum(c.neighbour_rank, 1), 0.0),
        c.neighbour_hits / seeds,
        (c.neighbour_rank > 0).astype(float),
        np.log1p(c.popularity),
        c.artist_share,
        np.full(len(c), np.log1p(c.seeds_read)),
    ]
    return np.stack([np.asarray(x, np.float32) for x in columns], axis=1) if len(c) else np.zeros((0, len(FEATURES)), np.float32)
