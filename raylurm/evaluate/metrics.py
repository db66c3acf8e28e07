"""Metrics of the harness.

Classification: AUC is scikit-learn's ``roc_auc_score`` (ties get half credit — the
Mann–Whitney statistic); ``macro_ovr_auc`` averages one-vs-rest AUCs over the classes present in
``y_true`` with at least one negative. Ranking: from the *rank* of each target among its
candidates, ``rank = #{candidates scoring >= the target}`` (the target excluded) — ties count
against the target, so a constant scorer gets no credit:

* ``HR@k   = mean(rank < k)``
* ``NDCG@k = mean(1 / log2(rank + 2) if rank < k else 0)`` (one relevant item, so IDCG = 1)
* ``MRR    = mean(1 / (rank + 1))`` (no cutoff)
"""

from __future__ import annotations

import math

import numpy as np

RANKING_CUTOFFS = {"HR": (1, 5, 10), "NDCG": (5, 10)}


def auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC AUC; NaN when ``y_true`` holds one class only."""
    from sklearn.metrics import roc_auc_score  # lazy: scikit-learn loads in ~1 s

    y_true = np.asarray(y_true).astype(bool)
    if y_true.all() or not y_true.any():
        return math.nan
    return float(roc_auc_score(y_true, np.asarray(score, dtype=np.float64)))


def macro_ovr_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean one-vs-rest AUC over classes that occur (and do not fill) ``y_true``; scores (n, C)."""
    values = [auc(y_true == c, scores[:, c]) for c in range(scores.shape[1])]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else math.nan


def target_ranks(scores: np.ndarray, target: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """0-based pessimistic rank of ``target[i]`` in row ``scores[i]``; ``exclude`` (n, C) bool masks candidates out.

    ``exclude`` must not mark the target itself (the caller unmasks it)."""
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(len(scores))
    target_score = scores[rows, target]
    at_least = scores >= target_score[:, None]
    at_least[rows, target] = False
    if exclude is not None:
        at_least &= ~exclude
    return at_least.sum(axis=1)


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        return {name: math.nan for name in metric_names()}
    out = {f"HR@{k}": float((ranks < k).mean()) for k in RANKING_CUTOFFS["HR"]}
    gain = 1.0 / np.log2(ranks + 2.0)
    out.update({f"NDCG@{k}": float(np.where(ranks < k, gain, 0.0).mean()) for k in RANKING_CUTOFFS["NDCG"]})
    out["MRR"] = float((1.0 / (ranks + 1.0)).mean())
    return out


def metric_names() -> list[str]:
    return [f"HR@{k}" for k in RANKING_CUTOFFS["HR"]] + [f"NDCG@{k}" for k in RANKING_CUTOFFS["NDCG"]] + ["MRR"]
