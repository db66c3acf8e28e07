"""Recovery of the generating interests (synthetic data only): the first year's topic mixture, read back.

A dataset written by :mod:`raylurm.data.synth` keeps its ground truth, ``truth.parquet``: every
user's topic mixture of every year. Its labels are drawn from the FIRST year's mixture (LURM's
lifelong premise: what a label depends on can lie years before the latest events). This task asks
the representation for that mixture directly: an MLP probe with a softmax over the topics, trained
on the probe-train users by cross-entropy against the true mixture (soft targets), epoch and weight
decay chosen on the selection users by mean cosine, then scored once on each seed's test users:

* **cosine** — cosine similarity of the predicted and the true first-year mixture, per user;
* **accuracy** — whether the predicted top topic is the user's true top topic.

``majority`` predicts the probe-train users' mean mixture for everyone (what a constant reaches).
The input is the ``history`` part, as for profiling: every event but the last two.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raylurm.evaluate import cohorts, metrics, probe
from raylurm.evaluate.protocol import Subject, user_frame

TARGET = "first-year mixture"
TRUTH_FILE = "truth.parquet"


def has_truth(dataset: Path) -> bool:
    """Whether ``dataset`` keeps its generating truth (a synthetic dataset's ``truth.parquet``)."""
    return (Path(dataset) / TRUTH_FILE).exists()


def first_year_mixtures(dataset: Path) -> dict[object, np.ndarray] | None:
    """user id -> the mixture (K,) of the earliest year in ``dataset/truth.parquet``; None without one."""
    if not has_truth(dataset):
        return None
    table = pq.read_table(Path(dataset) / TRUTH_FILE, columns=["user_id", "year", "mixture"])
    table = table.filter(pc.equal(table["year"], pc.min(table["year"])))
    mixtures = np.asarray(table["mixture"].combine_chunks().flatten().to_numpy(), np.float32).reshape(table.num_rows, -1)
    return dict(zip(table["user_id"].to_pylist(), mixtures))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (n, K) arrays (0 for a zero row)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide((a * b).sum(1), norms, out=np.zeros(len(a)), where=norms > 0)


def recovery(subject: Subject, context) -> tuple[list[dict], list]:
    truth = context.truth
    if truth is None:
        return [], []
    users = np.array([u for u in context.users["history"].tolist() if u in truth], dtype=object)
    y = np.stack([truth[u] for u in users.tolist()]).astype(np.float32)  # (n, K)
    rows, frames = [], []
    for seed in context.config.seeds:
        train, valid, test = cohorts.assign(users, seed, context.config.fractions)
        if subject.majority:
            predicted, valid_score = np.broadcast_to(y[train].mean(0), (len(test), y.shape[1])), math.nan
        else:
            features = context.features(subject, "history", users, train)
            select = lambda p, r: float(cosine_rows(metrics.softmax(p.predict(r)), y[r]).mean())  # noqa: E731
            fitted = probe.fit(features, y, train, valid, "soft", y.shape[1], select, seed, context.config.probe)
            predicted, valid_score = metrics.softmax(fitted.predict(test).astype(np.float64)), fitted.valid_score
        cosine = cosine_rows(np.asarray(predicted, np.float64), y[test].astype(np.float64))
        top, true_top = np.asarray(predicted).argmax(1), y[test].argmax(1)
        values = {"cosine": float(cosine.mean()), "accuracy": float((top == true_top).mean())}
        rows += [{"task": "recovery", "target": TARGET, "metric": m, "seed": seed, "value": v, "valid": valid_score,
                  "users": len(test)} for m, v in values.items()]
        frames.append(user_frame("recovery", TARGET, "recovery", seed, users[test], label=true_top, score=cosine, pred=top))
    return rows, frames
