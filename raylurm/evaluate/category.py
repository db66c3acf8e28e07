"""Category preference (LURM §4.2): will the user touch each category at or after the cutoff T?

Input: the ``before_cutoff`` part (events before T); label: the multi-hot set of categories of
the user's events at or after T; a multi-label sigmoid probe, selected on the mean validation
AUC. Per-category AUC / accuracy and their mean over categories. The ``majority`` subject
predicts each category's probe-train prior (a constant per category: AUC 0.5, accuracy =
max(prior, 1 − prior)) — on ML-1M it already reaches ≈ 0.72 mean accuracy, so accuracy here is
read against it.

Caveat (written into RESULTS.md): pretraining and the interest vocabulary use every event but
each user's last two, including events after T; the labels themselves are never a pretraining
target, and every row (baselines included: raw BoI and TF-IDF read the same vocabulary or items)
shares this, so rows compare with each other, but the task is transductive rather than a
forecast of unseen time.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from raylurm.evaluate import cohorts, metrics, probe
from raylurm.evaluate.protocol import Subject, user_frame

log = logging.getLogger(__name__)


def category_labels(context) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Users with input before and events after the cutoff, their multi-hot future categories, names."""
    future = pq.read_table(context.split.future).to_pylist()
    names = sorted({c for row in future for c in row["categories"]})
    have_input = set(context.users["before_cutoff"].tolist())
    rows = sorted((r for r in future if r["user_id"] in have_input), key=lambda r: r["user_id"])
    users = np.array([r["user_id"] for r in rows], dtype=object)
    y = np.zeros((len(rows), len(names)), dtype=np.float32)
    column = {n: j for j, n in enumerate(names)}
    for i, r in enumerate(rows):
        y[i, [column[c] for c in r["categories"]]] = 1.0
    return users, y, names


def mean_auc(y: np.ndarray, scores: np.ndarray) -> float:
    values = [metrics.auc(y[:, j], scores[:, j]) for j in range(y.shape[1])]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def category(subject: Subject, context) -> tuple[list[dict], list]:
    users, y, names = context.categories
    if len(users) < 10 or not names:
        log.warning("category preference skipped: %d users with events on both sides of the cutoff", len(users))
        return [], []
    rows, frames = [], []
    for seed in context.config.seeds:
        train, valid, test = cohorts.assign(users, seed, context.config.fractions)
        if subject.majority:
            prior = np.clip(y[train].mean(axis=0), 1e-6, 1 - 1e-6)
            logits, valid_score = np.broadcast_to(np.log(prior / (1 - prior)), (len(test), len(names))), math.nan
        else:
            features = context.features(subject, "before_cutoff", users, train)
            select = lambda p, r: mean_auc(y[r], p.predict(r))  # noqa: E731
            fitted = probe.fit(features, y, train, valid, "sigmoid", len(names), select, seed, context.config.probe)
            logits, valid_score = fitted.predict(test), fitted.valid_score
        aucs = [metrics.auc(y[test, j], logits[:, j]) for j in range(len(names))]
        accs = [metrics.accuracy(y[test, j] > 0.5, logits[:, j] > 0) for j in range(len(names))]
        for j, name in enumerate(names):
            rows += [{"task": "category", "target": name, "metric": "AUC", "seed": seed, "value": aucs[j], "users": len(test)},
                     {"task": "category", "target": name, "metric": "accuracy", "seed": seed, "value": accs[j], "users": len(test)}]
            frames.append(user_frame("category", name, "multilabel", seed, users[test], label=y[test, j], score=logits[:, j],
                                     pred=(logits[:, j] > 0)))
        rows += [{"task": "category", "target": "mean", "metric": "AUC", "seed": seed, "value": float(np.nanmean(aucs)),
                  "valid": valid_score, "users": len(test)},
                 {"task": "category", "target": "mean", "metric": "accuracy", "seed": seed, "value": float(np.nanmean(accs)),
                  "valid": valid_score, "users": len(test)}]
    return rows, [pd.concat(frames, ignore_index=True)] if frames else []
