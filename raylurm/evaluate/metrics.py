"""Metrics of the harness.

Classification: AUC is scikit-learn's ``roc_auc_score`` (ties get half credit — the
Mann–Whitney statistic); ``macro_ovr_auc`` averages one-vs-rest AUCs of class *probabilities*
over the classes present in ``y_true`` with at least one negative; balanced accuracy is
scikit-learn's (mean recall over classes). Regression: MAE, R² and Spearman's ρ.

Ranking: from the *rank* of each target among its candidates,
``rank = #{candidates scoring >= the target}`` (the target excluded) — ties count against the
target, so a constant scorer gets no credit:

* ``HR@k   = mean(rank < k)``
* ``NDCG@k = mean(1 / log2(rank + 2) if rank < k else 0)`` (one relevant item, so IDCG = 1)
* ``MRR@k  = mean(1 / (rank + 1) if rank < k else 0)``; ``MRR`` without a cutoff

Beside them, two properties of the top-10 lists (not per user): ``coverage@10``, the share of
the catalogue that appears in some user's top 10, and ``pop pct@10``, the mean popularity
percentile (0–100) of the recommended items — a model that only learnt popularity shows ~100
and a tiny coverage.
"""

from __future__ import annotations

import math

import numpy as np

HR_CUTOFFS = (1, 5, 10, 20)
NDCG_CUTOFFS = (5, 10, 20)
MRR_CUTOFF = 10
TOP = 10  # the list length of coverage@10 and pop pct@10


def auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC AUC; NaN when ``y_true`` holds one class only."""
    from sklearn.metrics import roc_auc_score  # lazy: scikit-learn loads in ~1 s

    y_true = np.asarray(y_true).astype(bool)
    if y_true.all() or not y_true.any():
        return math.nan
    return float(roc_auc_score(y_true, np.asarray(score, dtype=np.float64)))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def macro_ovr_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean one-vs-rest AUC over classes that occur (and do not fill) ``y_true``; probabilities (n, C)."""
    values = [auc(y_true == c, probabilities[:, c]) for c in range(probabilities.shape[1])]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else math.nan


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score  # lazy: scikit-learn

    return float(balanced_accuracy_score(np.asarray(y_true), np.asarray(y_pred))) if len(y_true) else math.nan


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr  # lazy: scipy.stats
    from sklearn.metrics import mean_absolute_error, r2_score  # lazy: scikit-learn

    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    constant = np.ptp(y_pred) == 0 if len(y_pred) else True
    return {"MAE": float(mean_absolute_error(y_true, y_pred)), "R²": float(r2_score(y_true, y_pred)),
            "Spearman": math.nan if constant else float(spearmanr(y_true, y_pred).statistic)}


def target_ranks(scores: np.ndarray, target: np.ndarray, exclude: np.ndarray | None = None, what: str = "scores") -> np.ndarray:
    """0-based pessimistic rank of ``target[i]`` in row ``scores[i]``; ``exclude`` (n, C) bool masks candidates out.

    ``exclude`` must not mark the target itself (the caller unmasks it). Non-finite scores of
    candidates that count are refused (``what`` names the model in the error): a NaN compares
    false with everything and would otherwise rank its target first."""
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(len(scores))
    counted = np.ones(scores.shape, dtype=bool) if exclude is None else ~exclude
    counted[rows, target] = True
    bad = ~np.isfinite(scores) & counted & ~np.isneginf(scores)  # -inf: a padded candidate, never ahead of the target
    if bad.any() or np.isneginf(scores[rows, target]).any():
        users = np.flatnonzero(bad.any(axis=1) | np.isneginf(scores[rows, target]))
        raise ValueError(f"{what}: non-finite item scores for {len(users)} of {len(scores)} users (e.g. row {users[0]}); "
                         "a NaN or inf score cannot be ranked")
    target_score = scores[rows, target]
    at_least = scores >= target_score[:, None]
    at_least[rows, target] = False
    at_least &= counted
    return at_least.sum(axis=1)


def per_user_gains(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Each ranking metric's per-user value (its mean is the metric)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {f"HR@{k}": (ranks < k).astype(np.float64) for k in HR_CUTOFFS}
    gain = 1.0 / np.log2(ranks + 2.0)
    out.update({f"NDCG@{k}": np.where(ranks < k, gain, 0.0) for k in NDCG_CUTOFFS})
    out[f"MRR@{MRR_CUTOFF}"] = np.where(ranks < MRR_CUTOFF, 1.0 / (ranks + 1.0), 0.0)
    out["MRR"] = 1.0 / (ranks + 1.0)
    return out


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    if len(ranks) == 0:
        return {name: math.nan for name in metric_names()}
    return {name: float(values.mean()) for name, values in per_user_gains(ranks).items()}


def metric_names() -> list[str]:
    return [f"HR@{k}" for k in HR_CUTOFFS] + [f"NDCG@{k}" for k in NDCG_CUTOFFS] + [f"MRR@{MRR_CUTOFF}", "MRR"]


def top_items(scores: np.ndarray, exclude: np.ndarray, k: int = TOP) -> np.ndarray:
    """The ``k`` best non-excluded items of each row -> (n, k) item indices (unordered within the top k)."""
    masked = np.where(exclude, -np.inf, np.asarray(scores, dtype=np.float64))
    k = min(k, masked.shape[1])
    return np.argpartition(-masked, k - 1, axis=1)[:, :k]


def list_metrics(top: np.ndarray, catalogue: np.ndarray, popularity: np.ndarray) -> dict[str, float]:
    """coverage@k and pop pct@k of top-k lists; ``catalogue`` bool (items,), ``popularity`` (items,)."""
    from scipy.stats import rankdata  # lazy: scipy.stats

    items = np.flatnonzero(catalogue)
    percentile = np.full(len(catalogue), np.nan)
    percentile[items] = 100.0 * (rankdata(popularity[items], method="average") - 0.5) / len(items)
    shown = np.unique(top)
    return {f"coverage@{top.shape[1]}": float(np.isin(items, shown).mean()),
            f"pop pct@{top.shape[1]}": float(np.nanmean(percentile[top]))}
