"""Candidate sets for many queries at once, from a model version's towers and neighbour table:
what ranker training and evaluation use. Exact search over the catalog stands in for the ANN
index; everything after the lists (merge, features) is the code serving runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from segue.ranking.candidates import (
    CandidateSet, NeighbourList, artist_shares, merge_candidates, neighbour_candidates, seeds_to_read)
from segue.settings import CandidateSettings
from segue.training.baselines import top_indices


def read_neighbour_table(path: Path) -> tuple[dict[str, NeighbourList], dict[str, int]]:
    """`track_neighbours` as uri -> its list, and uri -> playlists holding it in the window."""
    table = pq.read_table(path, columns=["track_uri", "playlists", "neighbour_uris", "neighbour_counts"])
    uris = table.column("track_uri").to_pylist()
    lists = {u: NeighbourList(n, c) for u, n, c in zip(uris, table.column("neighbour_uris").to_pylist(),
                                                      table.column("neighbour_counts").to_pylist())}
    return lists, dict(zip(uris, table.column("playlists").to_pylist()))


class OfflineSources:
    """Both candidate sources over a whole catalog, for queries given as embeddings."""

    def __init__(self, catalog_uris: np.ndarray, catalog_embeddings: np.ndarray, catalog_artists: Sequence[Any],
                 neighbour_table: Path, cfg: CandidateSettings):
        self.uris = np.asarray(catalog_uris, dtype=object)
        self.embeddings = catalog_embeddings
        self.position = {u: i for i, u in enumerate(self.uris)}
        self.artists = list(catalog_artists)
        self.lists, self.playlists = read_neighbour_table(neighbour_table)
        self.cfg = cfg

    def neighbour_lists(self, seeds: Sequence[str]) -> tuple[list[str], dict[str, NeighbourList]]:
        read = seeds_to_read(seeds, self.cfg.seed_tracks)
        return read, {u: self.lists[u] for u in read if u in self.lists}

    def candidate_set(self, query: np.ndarray, seeds: Sequence[str], tower_k: int) -> CandidateSet:
        """The merged candidates of one query whose playlist holds `seeds` (oldest first)."""
        exclude = set(seeds)
        scores = self.embeddings @ query
        tower = self.uris[top_indices(scores, [self.position[u] for u in exclude if u in self.position],
                                      tower_k)].tolist()
        read, lists = self.neighbour_lists(seeds)
        c = merge_candidates(tower, *neighbour_candidates(lists, exclude, self.cfg.neighbours), len(read))
        rows = np.array([self.position.get(u, -1) for u in c.track_uri], np.int64)
        c.tower_score = np.where(rows >= 0, scores[rows.clip(0)], 0.0)
        c.popularity = np.array([self.playlists.get(u, 0) for u in c.track_uri], np.float64)
        seed_artists = [self.artists[self.position[u]] if u in self.position else None for u in read]
        c.artist_share = artist_shares([self.artists[r] if r >= 0 else None for r in rows], seed_artists)
        return c

    def candidate_sets(self, queries: np.ndarray, seeds: Sequence[Sequence[str]], tower_k: int) -> list[CandidateSet]:
        return [self.candidate_set(q, s, tower_k) for q, s in zip(queries, seeds)]


def neighbour_rankings(sources: OfflineSources, seeds: Sequence[Sequence[str]], k: int) -> list[list[str]]:
    """The co-occurrence source alone: the table's neighbours of the newest seeds."""
    return [neighbour_candidates(sources.neighbour_lists(case)[1], set(case), k)[0] for case in seeds]


def ordered(c: CandidateSet, order: np.ndarray, k: int) -> list[str]:
    return c.track_uri[order[:k]].tolist()
