"""The ranking stage's pure parts: merging candidate sources and the ranker's features."""

import numpy as np
import pytest

from segue.ranking.candidates import (
    NeighbourList, artist_shares, merge_candidates, neighbour_candidates, seeds_to_read)
from segue.ranking.ranker_features import FEATURES, ranker_features


def test_neighbour_counts_are_summed_over_seeds_and_seeds_are_never_proposed():
    lists = {"s1": NeighbourList(["a", "b", "s2"], [5, 3, 9]), "s2": NeighbourList(["b", "c", "s1"], [4, 4, 9])}
    uris, counts, hits = neighbour_candidates(lists, exclude={"s1", "s2"}, limit=10)
    assert uris == ["b", "a", "c"]  # b: 3 + 4 = 7 from two seeds; a and c: 5 and 4
    assert counts.tolist() == [7, 5, 4] and hits.tolist() == [2, 1, 1]
    assert neighbour_candidates(lists, exclude={"s1", "s2"}, limit=1)[0] == ["b"]


def test_equal_sums_are_ordered_by_agreeing_seeds_then_uri_whatever_the_input_order():
    forward = {"s1": NeighbourList(["x", "y"], [2, 1]), "s2": NeighbourList(["y", "z"], [1, 2])}
    backward = dict(reversed(list(forward.items())))
    assert neighbour_candidates(forward, set(), 5)[0] == neighbour_candidates(backward, set(), 5)[0] == ["y", "x", "z"]


def test_the_newest_distinct_seeds_are_read():
    assert seeds_to_read(["a", "b", "c", "b", "d"], 3) == ["d", "b", "c"]


def test_merged_candidates_keep_each_track_once_with_its_rank_in_each_source():
    c = merge_candidates(["t1", "t2", "n1"], ["n1", "n2"], np.array([9.0, 4.0]), np.array([3, 1]), seeds_read=3)
    assert c.track_uri.tolist() == ["t1", "t2", "n1", "n2"]
    assert c.tower_rank.tolist() == [1, 2, 3, 0] and c.neighbour_rank.tolist() == [0, 0, 1, 2]
    assert c.neighbour_count.tolist() == [0, 0, 9, 4] and c.neighbour_hits.tolist() == [0, 0, 3, 1]
    assert c.sources() == ["tower", "tower", "tower+neighbours", "neighbours"]
    # Proposed by both, n1 is first by reciprocal-rank fusion.
    assert c.track_uri[c.fused_order()].tolist()[0] == "n1"


def test_ranker_features_follow_their_names_and_need_every_fact():
    c = merge_candidates(["t1"], ["n1"], np.array([6.0]), np.array([2]), seeds_read=4)
    with pytest.raises(ValueError, match="missing"):
        ranker_features(c)
    c.tower_score, c.popularity = np.array([0.5, 0.1]), np.array([10.0, 0.0])
    c.artist_share = artist_shares(["ar1", None], ["ar1", "ar1", "ar2", None])
    x = dict(zip(FEATURES, ranker_features(c).T))
    assert x["tower_score"].tolist() == pytest.approx([0.5, 0.1])
    assert x["in_tower"].tolist() == [1, 0] and x["in_neighbours"].tolist() == [0, 1]
    assert x["neighbour_hit_share"].tolist() == pytest.approx([0, 0.5])
    assert x["neighbour_share"].tolist() == pytest.approx([0, 1])
    assert x["artist_share"].tolist() == pytest.approx([2 / 3, 0])
    assert x["popularity_log"][0] == pytest.approx(np.log1p(10))
