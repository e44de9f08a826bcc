"""The RecSys 2018 metrics on small hand-worked examples."""

import math

import pytest

from segue.batch.mpd.metrics import clicks, evaluate_rankings, ndcg, r_precision, recall_at_k


def test_r_precision_counts_hits_in_the_first_len_g():
    # G = {b, d, e}, |G| = 3; R[1..3] = a, b, c holds b only -> 1/3.
    assert r_precision(["a", "b", "c", "d"], ["b", "d", "e"]) == pytest.approx(1 / 3)
    assert r_precision(["b", "d", "e"], ["e", "d", "b"]) == 1.0
    assert r_precision([], ["a"]) == 0.0


def test_ndcg_uses_idcg_over_the_hits_found():
    # Hits at ranks 2 and 4: DCG = 1/log2(2) + 1/log2(4) = 1.5.
    # |G ∩ R| = 2: IDCG = 1 + 1/log2(2) = 2 -> 0.75.
    assert ndcg(["a", "b", "c", "d"], ["b", "d", "e"]) == pytest.approx(0.75)
    # Hits at ranks 1 and 3: DCG = 1 + 1/log2(3) = 1.6309; IDCG = 2 -> 0.8155.
    assert ndcg(["b", "x", "d"], ["b", "d"]) == pytest.approx((1 + 1 / math.log2(3)) / 2)
    # All hits first: DCG = IDCG.
    assert ndcg(["a", "b", "c", "x"], ["c", "b", "a"]) == pytest.approx(1.0)
    assert ndcg(["x", "y"], ["a"]) == 0.0


def test_repeated_items_count_once():
    # Distinct ranking is a, b: b is at rank 2, DCG = 1/log2(2) = 1, one hit so IDCG = 1.
    assert ndcg(["a", "a", "b"], ["b"]) == pytest.approx(1.0)
    # R[1..|G|] = R[1..1] = a.
    assert r_precision(["a", "a", "b"], ["b"]) == 0.0


def test_clicks_are_pages_of_ten_before_the_first_hit():
    filler = [f"x{i}" for i in range(600)]
    assert clicks(["a"] + filler, ["a"]) == 0  # rank 1: floor(0/10)
    assert clicks(filler[:9] + ["a"], ["a"]) == 0  # rank 10: floor(9/10)
    assert clicks(filler[:10] + ["a"], ["a"]) == 1  # rank 11: floor(10/10)
    assert clicks(filler[:24] + ["a"], ["a"]) == 2  # rank 25: floor(24/10)
    assert clicks(filler[:499] + ["a"], ["a"]) == 49  # rank 500: floor(499/10)
    assert clicks(filler[:500] + ["a"], ["a"]) == 51  # rank 501 is past the 500 ranked
    assert clicks(filler, ["a"]) == 51


def test_recall_at_k():
    # G = {b, d, e}: first 2 hold b -> 1/3; first 4 hold b, d -> 2/3.
    assert recall_at_k(["a", "b", "c", "d"], ["b", "d", "e"], 2) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "b", "c", "d"], ["b", "d", "e"], 4) == pytest.approx(2 / 3)


def test_an_empty_ground_truth_is_an_error():
    with pytest.raises(ValueError):
        r_precision(["a"], [])


def test_evaluate_rankings_means_overall_and_by_category():
    holdouts = {1: ["a", "b"], 2: ["c"], 3: ["d"]}
    rankings = {
        1: ["a", "x", "b"],  # R-prec 1/2; DCG 1 + 1/log2(3), IDCG 2; clicks 0; recall 1
        2: ["x"] * 3 + ["y", "c"],  # distinct x, y, c: R-prec 0; NDCG 1/log2(3) / 1; clicks 0
        # pid 3 missing: everything 0, clicks 51
    }
    result = evaluate_rankings(rankings, holdouts, {1: "t", 2: "t", 3: "u"})
    ndcg_1 = (1 + 1 / math.log2(3)) / 2
    ndcg_2 = 1 / math.log2(3)
    overall = result["overall"]
    assert overall["playlists"] == 3
    assert overall["r_precision"] == pytest.approx(0.5 / 3)
    assert overall["ndcg"] == pytest.approx((ndcg_1 + ndcg_2) / 3)
    assert overall["clicks"] == pytest.approx(51 / 3)
    assert overall["recall@500"] == pytest.approx(2 / 3)
    assert result["by_category"]["t"]["ndcg"] == pytest.approx((ndcg_1 + ndcg_2) / 2)
    assert result["by_category"]["u"] == {"r_precision": 0.0, "ndcg": 0.0, "clicks": 51.0,
                                          "recall@10": 0.0, "recall@50": 0.0, "recall@100": 0.0,
                                          "recall@500": 0.0, "playlists": 1}


def test_evaluate_rankings_only_scores_the_first_500():
    ranked = [f"x{i}" for i in range(500)] + ["a"]
    result = evaluate_rankings({1: ranked}, {1: ["a"]})
    assert result["overall"]["recall@500"] == 0.0
    assert result["overall"]["clicks"] == 51
    assert result["by_category"] == {}
