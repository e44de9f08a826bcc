"""The RecSys 2018 metrics on small hand-worked examples."""

import math

import numpy as np
import pytest

from segue.challenge_metrics import (METRICS, PlaylistScores, bootstrap_intervals, clicks, compare,
                                     evaluate_rankings, ndcg, paired_comparison, r_precision, recall_at_k, verdict)


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


def test_evaluate_rankings_can_return_per_playlist_scores():
    holdouts = {1: ["a", "b"], 2: ["c"], 3: ["d"]}
    rankings = {1: ["a", "x", "b"], 2: ["x", "y", "c"]}
    plain = evaluate_rankings(rankings, holdouts, {1: "t", 2: "t", 3: "u"})
    result = evaluate_rankings(rankings, holdouts, {1: "t", 2: "t", 3: "u"}, per_playlist=True)
    scores = result.pop("per_playlist")
    assert result == plain  # the default output is unchanged
    assert scores.pids == (1, 2, 3) and scores.metrics == METRICS and scores.scores.shape == (3, 7)
    assert scores.means() == pytest.approx({m: plain["overall"][m] for m in METRICS})
    assert scores.column("clicks").tolist() == [0.0, 0.0, 51.0]
    assert scores.column("recall@500").tolist() == [1.0, 1.0, 0.0]


def _scores(n, seed=1, shift=0.0, noise=None):
    """Synthetic per-playlist scores for every metric: recall-like values in [0, 1]."""
    rng = np.random.default_rng(seed)
    base = rng.beta(2, 5, size=(n, len(METRICS)))
    if noise is not None:
        base = base + noise
    base = np.clip(base + shift, 0, 1)
    return PlaylistScores(tuple(range(n)), METRICS, base)


def test_bootstrap_intervals_contain_the_mean():
    scores = _scores(400)
    intervals = bootstrap_intervals(scores, resamples=1000, seed=0)
    assert set(intervals) == set(METRICS)
    for metric, mean in scores.means().items():
        lo, hi = intervals[metric]
        assert lo < mean < hi, (metric, lo, mean, hi)
        # Roughly mean ± 1.96 standard errors.
        se = scores.column(metric).std() / math.sqrt(400)
        assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_bootstrap_intervals_accept_columns_by_metric():
    values = np.random.default_rng(3).random(200)
    assert bootstrap_intervals({"ndcg": values}, seed=5) == bootstrap_intervals(
        PlaylistScores(tuple(range(200)), ("ndcg",), values[:, None]), seed=5)


def test_bootstrap_intervals_shrink_with_more_playlists():
    small = bootstrap_intervals(_scores(100), seed=0)
    large = bootstrap_intervals(_scores(2500), seed=0)
    for metric in METRICS:
        width_small = small[metric][1] - small[metric][0]
        width_large = large[metric][1] - large[metric][0]
        assert width_large < 0.4 * width_small, metric  # sqrt(25) = 5 times narrower, about


def test_bootstrap_intervals_are_deterministic_for_a_seed():
    scores = _scores(300)
    assert bootstrap_intervals(scores, seed=11) == bootstrap_intervals(scores, seed=11)
    assert bootstrap_intervals(scores, seed=11) != bootstrap_intervals(scores, seed=12)
    # A wider level gives a wider interval on the same resamples.
    narrow, wide = bootstrap_intervals(scores, level=0.8), bootstrap_intervals(scores, level=0.99)
    assert all(wide[m][0] < narrow[m][0] and narrow[m][1] < wide[m][1] for m in METRICS)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        bootstrap_intervals({"ndcg": []})
    with pytest.raises(ValueError):
        bootstrap_intervals(_scores(10), level=1.5)


def test_a_model_compared_with_itself_differs_by_exactly_zero():
    scores = _scores(500)
    for metric, row in compare(scores, scores, METRICS).items():
        assert row["difference"] == 0.0 and row["difference_interval"] == (0.0, 0.0), metric
        assert row["ratio"] == 1.0 and row["ratio_interval"] == (1.0, 1.0)
        assert row["verdict"] == "tie"
    one = paired_comparison(scores.column("ndcg"), scores.column("ndcg"), "ndcg")
    assert one["difference_interval"] == (0.0, 0.0) and one["verdict"] == "tie"


def test_a_clearly_better_model_is_better_and_an_identical_one_ties():
    baseline = _scores(500, seed=2)
    gain = np.random.default_rng(9).normal(0, 0.05, size=(500, len(METRICS)))
    better = _scores(500, seed=2, shift=0.05, noise=gain)
    # Same playlists in another order: the comparison pairs them by pid.
    order = list(reversed(range(500)))
    shuffled = PlaylistScores(tuple(order), METRICS, baseline.scores[order])
    result = compare(better, shuffled, ("recall@100", "ndcg"))
    assert result["recall@100"]["verdict"] == "better"
    lo, hi = result["recall@100"]["difference_interval"]
    assert 0 < lo <= result["recall@100"]["difference"] <= hi
    assert result["recall@100"]["ratio_interval"][0] > 1
    assert compare(baseline, better, ("ndcg",))["ndcg"]["verdict"] == "worse"
    assert compare(baseline, shuffled, ("recall@100",))["recall@100"]["verdict"] == "tie"


def test_unrelated_models_of_equal_quality_tie():
    a, b = _scores(300, seed=4), _scores(300, seed=5)
    assert paired_comparison(a, b, "recall@500")["verdict"] == "tie"


def test_pairing_narrows_the_difference_interval():
    # Playlists differ a lot in difficulty; the model adds a small, steady gain. Resampling the
    # playlists for both together keeps the difficulty out of the difference.
    rng = np.random.default_rng(0)
    difficulty = rng.random(400)
    a = difficulty + 0.01 + rng.normal(0, 0.005, 400)
    result = paired_comparison(a, difficulty, "recall@100")
    assert result["verdict"] == "better"
    unpaired_width = 2 * 1.96 * math.sqrt(a.var() / 400 + difficulty.var() / 400)
    lo, hi = result["difference_interval"]
    assert hi - lo < 0.1 * unpaired_width


def test_verdict_direction_follows_the_metric():
    assert verdict((0.01, 0.02), "recall@100") == "better"
    assert verdict((-0.02, -0.01), "ndcg") == "worse"
    assert verdict((-0.01, 0.02), "ndcg") == "tie"
    assert verdict((0.0, 0.0), "ndcg") == "tie"
    assert verdict((-3.0, -1.0), "clicks") == "better"  # fewer clicks is better
    assert verdict((1.0, 3.0), "clicks") == "worse"


def test_paired_comparison_needs_the_same_playlists():
    with pytest.raises(ValueError):
        compare(_scores(10), _scores(11))
    with pytest.raises(ValueError):
        paired_comparison(np.zeros(3), np.zeros(4))
