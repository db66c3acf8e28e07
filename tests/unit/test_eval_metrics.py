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
    assert set(out) == set(metrics.metric_names())
