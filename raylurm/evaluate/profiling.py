"""User profiling: every label column of ``users.parquet``, probed from the ``history`` part.

Which columns are labels (each skipped column is logged with its reason):

* **classification** — 2–50 distinct values (ML-1M: gender, age buckets, occupation). Binary:
  AUC, accuracy and balanced accuracy, probe selected on validation AUC. Multi-class: accuracy,
  balanced accuracy and macro one-vs-rest AUC of the class probabilities, selected on validation
  macro AUC (what Tune selects on).
* **regression** — numeric columns with more than 50 distinct values (raw ages, incomes): an MSE
  probe on the standardised value, selected on validation R²; MAE, R² and Spearman's ρ.

Users are cut by :func:`raylurm.evaluate.cohorts.assign` (the selection users choose, each seed's
test users are scored once). The ``majority`` subject predicts the probe-train users' majority
class (constant score = their prior) or their mean: an accuracy a constant reaches is no result.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raylurm.evaluate import cohorts, metrics, probe
from raylurm.evaluate.protocol import Subject, user_frame

log = logging.getLogger(__name__)

MAX_LABEL_VALUES = 50


def _columns(users_path: Path) -> tuple[dict[str, dict], dict[str, dict], dict[str, str]]:
    """(classification columns, regression columns, skipped column -> reason)."""
    if not users_path.exists():
        return {}, {}, {}
    table = pq.read_table(users_path)
    classes, numeric, skipped = {}, {}, {}
    ids = table["user_id"].to_pylist()
    for name in table.column_names:
        if name == "user_id":
            continue
        values = table[name].to_pylist()
        distinct = sorted({v for v in values if v is not None}, key=str)
        is_number = pa.types.is_integer(table.schema.field(name).type) or pa.types.is_floating(table.schema.field(name).type)
        if 2 <= len(distinct) <= MAX_LABEL_VALUES:
            classes[name] = dict(zip(ids, values)) | {"__classes__": distinct}
        elif len(distinct) > MAX_LABEL_VALUES and is_number:
            numeric[name] = {u: float(v) for u, v in zip(ids, values) if v is not None and math.isfinite(float(v))}
        elif len(distinct) < 2:
            skipped[name] = f"{len(distinct)} distinct value(s): nothing to predict"
        else:
            skipped[name] = (f"{len(distinct)} distinct non-numeric values (> {MAX_LABEL_VALUES}): not a class label; "
                             "bucket it into <= 50 values to profile it")
    return classes, numeric, skipped


def label_columns(users_path: Path) -> dict[str, dict]:
    """Classification label columns: name -> {user: value, "__classes__": sorted distinct values}."""
    return _columns(users_path)[0]


def regression_columns(users_path: Path) -> dict[str, dict]:
    """Numeric label columns with more than 50 distinct values: name -> {user: float}."""
    return _columns(users_path)[1]


def log_skipped(users_path: Path) -> None:
    for name, reason in _columns(users_path)[2].items():
        log.warning("profiling: column %r of %s skipped: %s", name, users_path, reason)


def profiling(subject: Subject, context) -> tuple[list[dict], list]:
    rows, frames = [], []
    all_users = context.users["history"]
    for column, mapping in context.labels.items():
        classes = mapping["__classes__"]
        users = np.array([u for u in all_users.tolist() if mapping.get(u) is not None], dtype=object)
        y = np.array([classes.index(mapping[u]) for u in users.tolist()], dtype=np.int64)
        for seed in context.config.seeds:
            train, valid, test = cohorts.assign(users, seed, context.config.fractions)
            values, frame, valid_score = _classify(subject, context, users, y, len(classes), train, valid, test, seed)
            rows += [{"task": "profiling", "target": column, "metric": m, "seed": seed, "value": v, "valid": valid_score,
                      "users": len(test)} for m, v in values.items()]
            frames.append(frame.assign(target=column))
    for column, mapping in context.numeric_labels.items():
        users = np.array([u for u in all_users.tolist() if u in mapping], dtype=object)
        y = np.array([mapping[u] for u in users.tolist()], dtype=np.float64)
        for seed in context.config.seeds:
            train, valid, test = cohorts.assign(users, seed, context.config.fractions)
            values, frame, valid_score = _regress(subject, context, users, y, train, valid, test, seed)
            rows += [{"task": "profiling", "target": column, "metric": m, "seed": seed, "value": v, "valid": valid_score,
                      "users": len(test)} for m, v in values.items()]
            frames.append(frame.assign(target=column))
    return rows, frames


def _classify(subject, context, users, y, num_classes, train, valid, test, seed):
    binary = num_classes == 2
    if subject.majority:
        prior = np.bincount(y[train], minlength=num_classes) / len(train)
        logits = np.broadcast_to(np.log(np.clip(prior, 1e-12, None)), (len(test), num_classes))
        valid_score = math.nan
    else:
        features = context.features(subject, "history", users, train)
        if binary:
            select = lambda p, r: metrics.auc(y[r], p.predict(r)[:, 0])  # noqa: E731
            fitted = probe.fit(features, y[:, None].astype(np.float32), train, valid, "sigmoid", 1, select, seed,
                               context.config.probe)
            logit = fitted.predict(test)[:, 0].astype(np.float64)
            logits = np.stack([np.zeros_like(logit), logit], axis=1)
        else:
            select = lambda p, r: metrics.macro_ovr_auc(y[r], metrics.softmax(p.predict(r)))  # noqa: E731
            fitted = probe.fit(features, y, train, valid, "softmax", num_classes, select, seed, context.config.probe)
            logits = fitted.predict(test).astype(np.float64)
        valid_score = fitted.valid_score
    pred = logits.argmax(1)
    values = {"accuracy": metrics.accuracy(y[test], pred), "balanced accuracy": metrics.balanced_accuracy(y[test], pred)}
    if binary:
        score = logits[:, 1] - logits[:, 0]
        values = {"AUC": metrics.auc(y[test], score), **values}
        frame = user_frame("profiling", "", "binary", seed, users[test], label=y[test], score=score, pred=pred)
    else:
        values["macro AUC"] = metrics.macro_ovr_auc(y[test], metrics.softmax(logits))
        frame = user_frame("profiling", "", "multiclass", seed, users[test], label=y[test], pred=pred)
    return values, frame, valid_score


def _regress(subject, context, users, y, train, valid, test, seed):
    mean, std = float(y[train].mean()), float(y[train].std() + 1e-12)
    if subject.majority:
        prediction, valid_score = np.full(len(test), mean), math.nan
    else:
        features = context.features(subject, "history", users, train)
        target = ((y - mean) / std).astype(np.float32)[:, None]
        select = lambda p, r: metrics.regression_metrics(y[r], mean + std * p.predict(r)[:, 0])["R²"]  # noqa: E731
        fitted = probe.fit(features, target, train, valid, "mse", 1, select, seed, context.config.probe)
        prediction, valid_score = mean + std * fitted.predict(test)[:, 0].astype(np.float64), fitted.valid_score
    frame = user_frame("profiling", "", "regression", seed, users[test], label=y[test], score=prediction)
    return metrics.regression_metrics(y[test], prediction), frame, valid_score
