"""Metric functions of the harness against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raylurm.evaluate import metrics


def test_auc_counts_ties_as_half():
    # positive/negative pairs: (0.8 vs 0.8) = 1/2, (0.8 vs 0.1) = 1, (0.3 vs 0.8) = 0, (0.3 vs 0.1) = 1
    assert metrics.auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.8, 0.3, 0.1])) == pytest.approx(2.5 / 4)


def test_auc_perfect_reversed_constant_and_undefined():
    y = np.array([0, 0, 1, 1])
    assert metrics.auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert metrics.auc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert metrics.auc(y, np.zeros(4)) == 0.5
    assert math.isnan(metrics.auc(np.ones(4), np.arange(4.0)))


def test_macro_ovr_auc_by_hand():
    y = np.array([0, 1, 2, 2])
    scores = np.array([[0.9, 0.0, 0.1],    # class 0 ranked first for its user
                       [0.2, 0.5, 0.3],
                       [0.3, 0.6, 0.1],    # class-1 score of a class-2 user beats the class-1 user's
                       [0.1, 0.1, 0.8]])
    # class 0: pos .9 vs negs .2 .3 .1 -> 1; class 1: pos .5 vs negs .0 .6 .1 -> 2/3; class 2: pos .1 .8 vs negs .1 .3 -> (0.5+0+1+1)/4
    assert metrics.macro_ovr_auc(y, scores) == pytest.approx((1 + 2 / 3 + 2.5 / 4) / 3)


def test_accuracy():
    assert metrics.accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 0.5


def test_target_rank_is_pessimistic_about_ties_and_respects_exclusions():
    scores = np.array([[0.1, 0.5, 0.3, 0.5, 0.9]])
    assert metrics.target_ranks(scores, np.array([1]))[0] == 2  # item 4 above, item 3 tied -> counted against
    exclude = np.array([[False, False, False, True, True]])
    assert metrics.target_ranks(scores, np.array([1]), exclude)[0] == 0
    # a constant scorer ranks the target last, never first
    assert metrics.target_ranks(np.zeros((1, 10)), np.array([3]))[0] == 9


def test_ranking_metrics_by_hand():
    ranks = np.array([0, 1, 4, 20])
    out = metrics.ranking_metrics(ranks)
    assert out["HR@1"] == 0.25 and out["HR@5"] == 0.75 and out["HR@10"] == 0.75
    assert out["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert out["NDCG@10"] == pytest.approx(out["NDCG@5"])
    assert out["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 21) / 4)
    assert out["MRR@10"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 4)
    assert out["HR@20"] == 0.75 and out["NDCG@20"] == pytest.approx(out["NDCG@5"])
    assert set(out) == set(metrics.metric_names())
    assert list(metrics.metric_names()) == ["HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@10", "MRR"]


def test_per_user_gains_average_to_the_metrics():
    ranks = np.array([0, 3, 9, 10, 50])
    gains = metrics.per_user_gains(ranks)
    assert {k: float(v.mean()) for k, v in gains.items()} == pytest.approx(metrics.ranking_metrics(ranks))
    assert gains["HR@10"].tolist() == [1, 1, 1, 0, 0]


def test_target_ranks_refuses_non_finite_scores_and_names_the_model():
    scores = np.array([[0.1, np.nan, 0.3], [0.2, 0.1, 0.0]])
    with pytest.raises(ValueError, match="atrank: non-finite item scores for 1 of 2 users"):
        metrics.target_ranks(scores, np.array([0, 0]), what="atrank")
    # a NaN on an excluded candidate does not count; -inf pads (sampled protocol) are never ahead of the target
    exclude = np.array([[False, True, False], [False, False, False]])
    assert metrics.target_ranks(scores, np.array([0, 0]), exclude).tolist() == [1, 0]
    assert metrics.target_ranks(np.array([[0.5, -np.inf, 0.7]]), np.array([0]))[0] == 1
    with pytest.raises(ValueError):
        metrics.target_ranks(np.array([[np.nan, 0.1]]), np.array([0]))  # a NaN target would otherwise rank first


def test_list_metrics_show_a_popularity_only_model():
    popularity = np.arange(1.0, 101.0)  # item i has popularity i + 1
    catalogue = np.ones(100, dtype=bool)
    scores = np.broadcast_to(popularity, (20, 100))
    top = metrics.top_items(scores, np.zeros((20, 100), dtype=bool))
    out = metrics.list_metrics(top, catalogue, popularity)
    assert out["coverage@10"] == pytest.approx(0.10)  # everyone gets the same ten items
    assert out["pop pct@10"] == pytest.approx(95.0)  # the ten most popular: percentiles 90.5 .. 99.5
    rng = np.random.default_rng(0)
    spread = metrics.list_metrics(metrics.top_items(rng.normal(size=(50, 100)), np.zeros((50, 100), dtype=bool)), catalogue, popularity)
    assert spread["coverage@10"] > 0.9 and 40 < spread["pop pct@10"] < 60


def test_balanced_accuracy_and_regression_metrics():
    y = np.array([0, 0, 0, 1])
    assert metrics.accuracy(y, np.zeros(4)) == 0.75
    assert metrics.balanced_accuracy(y, np.zeros(4)) == 0.5  # the majority class alone
    out = metrics.regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 5.0]))
    assert out["MAE"] == pytest.approx(0.5) and out["Spearman"] == pytest.approx(1.0)
    assert out["R²"] == pytest.approx(1 - (0.25 + 0 + 0.25 + 1) / 5)
    assert math.isnan(metrics.regression_metrics(np.arange(4.0), np.ones(4))["Spearman"])  # a constant prediction


def test_macro_auc_takes_probabilities():
    y = np.array([0, 1, 2])
    logits = np.array([[5.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 9.0]])
    probabilities = metrics.softmax(logits)
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(3))
    assert metrics.macro_ovr_auc(y, probabilities) == 1.0
