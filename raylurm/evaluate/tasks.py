"""The three downstream tasks on frozen representations, one split, selection on validation only.

Users are cut by :func:`raylurm.evaluate.cohorts.assign`: a fixed hash-chosen share of the users
(the *selection* users, shared with Tune) chooses every epoch and weight decay; each probe
seed permutes the other users into probe-train and test users (60/20 of all users by default,
AdaptSSR's shares; LURM §4.2 uses 80/20 with no validation part, which would leave choices to
test users). The same cut for every model, so models are compared on the same users. Test users
are scored once with the chosen probe; every per-user result goes to ``results_by_user.parquet``
so that every "A vs B" claim is a paired test (:mod:`raylurm.evaluate.stats`).

* **profiling** (:mod:`raylurm.evaluate.profiling`) — every label column of ``users.parquet``.
* **category preference** (:mod:`raylurm.evaluate.category`) — LURM §4.2.
* **next item** (:mod:`raylurm.evaluate.next_item`) — leave-one-out on every user, full ranking.
* **recovery** (:mod:`raylurm.evaluate.recovery`, synthetic data only) — the first year's true topic
  mixture read back from the representation.

Baselines beside every method: ``majority`` (label prior), ``popularity``, raw BoI, TF-IDF, and
each method's random initialisation (``raylurm.evaluate.harness``).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from raylurm.evaluate import prefixes as prefix_examples
from raylurm.evaluate import probe
from raylurm.evaluate.category import category, category_labels
from raylurm.evaluate.next_item import NextItemData, next_item, next_item_data
from raylurm.evaluate.profiling import MAX_LABEL_VALUES, label_columns, log_skipped, profiling, regression_columns
from raylurm.evaluate.protocol import TASKS, USER_COLUMNS, EvalConfig, Subject, align
from raylurm.evaluate.recovery import first_year_mixtures, recovery
from raylurm.evaluate.represent import item_counts, item_index, item_popularity, item_term_counts, tfidf
from raylurm.evaluate.split import Split

__all__ = ["EvalConfig", "Subject", "Context", "run", "align", "label_columns", "MAX_LABEL_VALUES", "TASKS"]

log = logging.getLogger(__name__)

TASK_PARTS = {"profiling": "history", "category": "before_cutoff", "next_item": ("history", "history_test")}


class Context:
    """Everything that is the same for every model: users, labels, targets, masks, popularity, prefixes."""

    def __init__(self, split: Split, config: EvalConfig):
        self.split, self.config = split, config
        self.index = item_index(split.boi("pretrain"))
        self.num_items = len(self.index)
        self.users = {part: np.array(sorted(pq.read_table(split.boi(part) / "users", columns=["user_id"])["user_id"].to_pylist()),
                                     dtype=object) for part in ("history", "history_test", "before_cutoff")}
        self.counts = {part: item_counts(split.dataset(part), self.users[part], self.index) for part in self.users}
        self.popularity = item_popularity(split.dataset("pretrain"), self.index)
        self._item_terms = None
        self._features: dict = {}

    @functools.cached_property
    def catalogue(self) -> np.ndarray:
        """Bool (items,): the next-item candidates (items with an event in the dataset, or every item)."""
        if self.config.catalogue == "vocabulary":
            return np.ones(self.num_items, dtype=bool)
        return item_popularity(self.split.source, self.index) > 0

    @functools.cached_property
    def labels(self) -> dict[str, dict]:
        users_path = self.split.dataset("history") / "users.parquet"
        log_skipped(users_path)
        return label_columns(users_path)

    @functools.cached_property
    def numeric_labels(self) -> dict[str, dict]:
        return regression_columns(self.split.dataset("history") / "users.parquet")

    @functools.cached_property
    def truth(self) -> dict | None:
        """user -> first-year topic mixture (synthetic data: the source's truth.parquet), else None."""
        return first_year_mixtures(self.split.source)

    @functools.cached_property
    def categories(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        return category_labels(self)

    @functools.cached_property
    def next_item(self) -> NextItemData:
        return next_item_data(self)

    @functools.cached_property
    def prefixes(self) -> "HeadExamples":
        return HeadExamples.build(self)

    @property
    def item_terms(self) -> sp.csr_matrix:
        if self._item_terms is None:
            self._item_terms = item_term_counts(self.split.source, self.index)[0]
        return self._item_terms

    def counts_for(self, part: str, users: np.ndarray) -> sp.csr_matrix:
        position = {u: i for i, u in enumerate(self.users[part].tolist())}
        return self.counts[part][np.array([position[u] for u in users.tolist()], dtype=np.int64)]

    def features(self, subject: Subject, part: str, users: np.ndarray, train: np.ndarray) -> probe.Features:
        """Probe inputs of ``users`` (rows) from ``part``; TF-IDF fits its IDF on ``train`` rows only."""
        if subject.tfidf:
            return probe.Features(tfidf(self.counts_for(part, users), self.item_terms, train))
        key = (subject.name, subject.run, part)
        if key not in self._features:  # one aligned matrix per subject and part; tasks take their users' rows
            self._features = {k: v for k, v in self._features.items() if k[:2] == key[:2]}
            self._features[key] = align(subject.represent(part), self.users[part], f"{subject.name} on {part}")
        rep = self._features[key]
        position = {u: i for i, u in enumerate(self.users[part].tolist())}
        return probe.Features(rep.features[np.array([position[u] for u in users.tolist()], dtype=np.int64)])


class HeadExamples:
    """The next-item head's (prefix -> next item) examples, aligned with ``Context.next_item.users``."""

    def __init__(self, boi, ids: np.ndarray, user_row: np.ndarray, target: np.ndarray, counts: sp.csr_matrix):
        self.boi, self.ids, self.user_row, self.target, self.counts = boi, ids, user_row, target, counts

    @classmethod
    def build(cls, context: Context) -> "HeadExamples":
        built = prefix_examples.build(context.split, per_user=context.config.head_prefixes, seed=0)
        row_of = {u: i for i, u in enumerate(context.next_item.users.tolist())}
        user_row = np.array([row_of.get(u, -1) for u in built.user_id.tolist()], dtype=np.int64)
        target = np.array([context.index.get(i, -1) for i in built.target_item.tolist()], dtype=np.int64)
        keep = (user_row >= 0) & (target >= 0)
        counts = built.item_counts(context.index)[np.flatnonzero(keep)]
        log.info("next-item head: %d (prefix -> next item) examples from %d users", int(keep.sum()), len(set(user_row[keep])))
        return cls(built.boi, np.asarray(built.prefix_id, dtype=object)[keep], user_row[keep], target[keep], counts)


def run(subject: Subject, context: Context) -> tuple[list[dict], pd.DataFrame]:
    """All configured tasks for one subject -> long-format rows (task, target, metric, seed, value) and per-user rows."""
    rows: list[dict] = []
    frames: list[pd.DataFrame] = []
    if "profiling" in context.config.tasks and not subject.popularity:
        more, users = profiling(subject, context)
        rows, frames = rows + more, frames + users
    if "category" in context.config.tasks and not subject.popularity:
        more, users = category(subject, context)
        rows, frames = rows + more, frames + users
    if "recovery" in context.config.tasks and not subject.popularity:
        more, users = recovery(subject, context)
        rows, frames = rows + more, frames + users
    if "next_item" in context.config.tasks and not subject.majority:
        more, users = next_item(subject, context)
        rows, frames = rows + more, frames + users
    for row in rows:
        row.setdefault("model", subject.name)
        row.update(group=subject.group, run=subject.run)
    per_user = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(USER_COLUMNS))
    if "model" not in per_user.columns:
        per_user["model"] = subject.name
    per_user["model"] = per_user["model"].fillna(subject.name)
    per_user = per_user.assign(group=subject.group, run=subject.run)
    return rows, per_user[list(USER_COLUMNS)]
