"""The three downstream tasks on frozen representations, one split, selection on validation only.

For every probe seed the task's users are permuted and cut 60/20/20 into probe-train,
validation and test users (AdaptSSR's protocol; LURM §4.2 uses 80/20 with no validation part,
which would leave epoch and weight decay to be chosen on test users) — the same cut for every
model, so models are compared on the same users. Probes and scorers are fitted on probe-train
users; epochs and weight decay are chosen on validation users; test users are scored once, with
the chosen probe. Reported: mean ± std over seeds.

* **profiling** — every label column of ``users.parquet`` with 2–50 values (ML-1M: gender, age,
  occupation). Binary: AUC and accuracy (selected on AUC). Multi-class: accuracy and macro
  one-vs-rest AUC (selected on accuracy). Input: the ``history`` part.
* **category preference** (LURM §4.2) — input: the ``before_cutoff`` part; label: whether the
  user touched each category at or after the cutoff (multi-label sigmoid probe, selected on the
  mean validation AUC). Per-category AUC / accuracy and their mean over categories.
* **next item**, leave-one-out — validation: ``history`` -> second-to-last item; test:
  ``history_test`` -> last item. Ranked against the full catalogue with the user's input history
  masked (the target never is) and against 100 negatives sampled by popularity (pretraining
  counts) from items outside the history. ATRank and DSS score items with their own pretrained
  scorer. Every other representation gets the *documented scorer*: the probe MLP with a softmax
  over all items (output bias initialised to log-popularity), trained on probe-train users only,
  with two examples each (``history`` -> second-to-last item, ``history_test`` -> last item),
  selected on validation NDCG@10. Popularity scores every item by its pretraining count.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from pydantic import Field, model_validator

from raylurm.config import typed_config
from raylurm.evaluate import metrics, probe
from raylurm.evaluate.probe import ProbeConfig  # by name: the field ``probe`` hides the module in the class body
from raylurm.evaluate.represent import Representation, item_counts, item_index, item_popularity, item_term_counts, tfidf
from raylurm.evaluate.split import Split

log = logging.getLogger(__name__)

TASK_PARTS = {"profiling": "history", "category": "before_cutoff", "next_item": ("history", "history_test")}
MAX_LABEL_VALUES = 50


@typed_config
class EvalConfig:
    seeds: Annotated[tuple[int, ...], Field(description="probe seeds: each draws its own user cut and probe")] = (
        0, 1, 2)
    fractions: Annotated[tuple[float, float, float], Field(
        description="probe-train / validation / test shares of the users")] = (0.6, 0.2, 0.2)
    negatives: Annotated[int, Field(ge=1, description="next item: popularity-sampled negatives per target")] = 100
    probe: ProbeConfig = ProbeConfig()
    tasks: Annotated[tuple[str, ...], Field(description="a subset of profiling, category, next_item")] = (
        "profiling", "category", "next_item")

    @model_validator(mode="after")
    def _rules(self) -> EvalConfig:
        if len(self.seeds) < 1 or abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) <= 0:
            raise ValueError(f"need >= 1 seed and three positive fractions summing to 1, got seeds={self.seeds}, "
                             f"fractions={self.fractions}")
        if set(self.tasks) - set(TASK_PARTS):
            raise ValueError(f"tasks must be a subset of {sorted(TASK_PARTS)}, got {self.tasks}")
        return self


def assign(num_users: int, seed: int, fractions=(0.6, 0.2, 0.2)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint probe-train / validation / test row indices of ``num_users`` sorted users."""
    order = np.random.default_rng(seed).permutation(num_users)
    a = int(round(fractions[0] * num_users))
    b = a + int(round(fractions[1] * num_users))
    return np.sort(order[:a]), np.sort(order[a:b]), np.sort(order[b:])


def align(rep: Representation, users: np.ndarray, what: str) -> Representation:
    """``rep`` reordered to ``users`` (every user must be present)."""
    position = {u: i for i, u in enumerate(rep.user_ids.tolist())}
    missing = [u for u in users.tolist() if u not in position]
    if missing:
        raise ValueError(f"{what}: {len(missing)} users have no representation, e.g. {missing[:3]}")
    rows = np.array([position[u] for u in users.tolist()], dtype=np.int64)
    return Representation(users, rep.features[rows], None if rep.scores is None else rep.scores[rows])


@dataclasses.dataclass
class Subject:
    """Something to evaluate: a representation source per dataset part (or a fixed scorer)."""

    name: str
    group: str  # "pretrained" | "random init" | "baseline"
    represent: Callable[[str], Representation] | None  # part -> representation (None: no representation)
    tfidf: bool = False  # features are user × item counts to turn into TF-IDF per seed
    popularity: bool = False  # next item only: score by popularity


class Context:
    """Everything that is the same for every model: users, labels, targets, masks, popularity."""

    def __init__(self, split: Split, config: EvalConfig):
        self.split, self.config = split, config
        self.index = item_index(split.boi("pretrain"))
        self.num_items = len(self.index)
        self.users = {part: np.array(sorted(pq.read_table(split.boi(part) / "users", columns=["user_id"])["user_id"].to_pylist()),
                                     dtype=object) for part in ("history", "history_test", "before_cutoff")}
        self.counts = {part: item_counts(split.dataset(part), self.users[part], self.index) for part in self.users}
        self.popularity = item_popularity(split.dataset("pretrain"), self.index)
        self._item_terms = None

    @functools.cached_property
    def labels(self) -> dict[str, dict]:
        return label_columns(self.split.dataset("history") / "users.parquet")

    @functools.cached_property
    def categories(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        return category_labels(self)

    @functools.cached_property
    def next_item(self) -> "NextItemData":
        return next_item_data(self)

    @property
    def item_terms(self) -> sp.csr_matrix:
        if self._item_terms is None:
            self._item_terms = item_term_counts(self.split.source, self.index)[0]
        return self._item_terms

    def counts_for(self, part: str, users: np.ndarray) -> sp.csr_matrix:
        position = {u: i for i, u in enumerate(self.users[part].tolist())}
        return self.counts[part][np.array([position[u] for u in users.tolist()], dtype=np.int64)]


def run(subject: Subject, context: Context) -> list[dict]:
    """All configured tasks for one subject -> long-format rows (task, target, metric, seed, value)."""
    rows: list[dict] = []
    if "profiling" in context.config.tasks and not subject.popularity:
        rows += profiling(subject, context)
    if "category" in context.config.tasks and not subject.popularity:
        rows += category(subject, context)
    if "next_item" in context.config.tasks:
        rows += next_item(subject, context)
    for row in rows:
        row.update(model=subject.name, group=subject.group)
    return rows


def _features(subject: Subject, context: Context, part: str, users: np.ndarray, train: np.ndarray | None = None):
    if subject.tfidf:
        return probe.Features(tfidf(context.counts_for(part, users), context.item_terms, train))
    return probe.Features(align(subject.represent(part), users, f"{subject.name} on {part}").features)


# ----------------------------------------------------------------------------------------- profiling
def label_columns(users_path: Path) -> dict[str, dict]:
    if not users_path.exists():
        return {}
    table = pq.read_table(users_path)
    out = {}
    for name in table.column_names:
        if name == "user_id":
            continue
        values = table[name].to_pylist()
        distinct = sorted({v for v in values if v is not None}, key=str)
        if 2 <= len(distinct) <= MAX_LABEL_VALUES:
            out[name] = dict(zip(table["user_id"].to_pylist(), values)) | {"__classes__": distinct}
    return out


def profiling(subject: Subject, context: Context) -> list[dict]:
    rows = []
    labels = context.labels
    all_users = context.users["history"]
    cache = {}
    for column, mapping in labels.items():
        classes = mapping["__classes__"]
        users = np.array([u for u in all_users.tolist() if mapping.get(u) is not None], dtype=object)
        y = np.array([classes.index(mapping[u]) for u in users.tolist()], dtype=np.int64)
        binary = len(classes) == 2
        for seed in context.config.seeds:
            train, valid, test = assign(len(users), seed, context.config.fractions)
            key = (len(users), seed) if subject.tfidf else len(users)
            if key not in cache:
                cache[key] = _features(subject, context, "history", users, train)
            features = cache[key]
            if binary:
                select = lambda p, r: metrics.auc(y[r], p.predict(r)[:, 0])  # noqa: E731
                fitted = probe.fit(features, y[:, None].astype(np.float32), train, valid, "sigmoid", 1, select, seed,
                                   context.config.probe)
                logit = fitted.predict(test)[:, 0]
                values = {"AUC": metrics.auc(y[test], logit), "accuracy": metrics.accuracy(y[test], logit > 0)}
            else:
                select = lambda p, r: metrics.accuracy(y[r], p.predict(r).argmax(1))  # noqa: E731
                fitted = probe.fit(features, y, train, valid, "softmax", len(classes), select, seed, context.config.probe)
                logits = fitted.predict(test)
                values = {"accuracy": metrics.accuracy(y[test], logits.argmax(1)), "macro AUC": metrics.macro_ovr_auc(y[test], logits)}
            rows += [{"task": "profiling", "target": column, "metric": m, "seed": seed, "value": v,
                      "valid": fitted.valid_score, "users": len(test)} for m, v in values.items()]
    return rows


# ------------------------------------------------------------------------------------- category
def category_labels(context: Context) -> tuple[np.ndarray, np.ndarray, list[str]]:
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


def category(subject: Subject, context: Context) -> list[dict]:
    users, y, names = context.categories
    if len(users) < 10 or not names:
        log.warning("category preference skipped: %d users with events on both sides of the cutoff", len(users))
        return []
    rows = []
    features = None
    for seed in context.config.seeds:
        train, valid, test = assign(len(users), seed, context.config.fractions)
        if features is None or subject.tfidf:
            features = _features(subject, context, "before_cutoff", users, train)
        select = lambda p, r: _mean_auc(y[r], p.predict(r))  # noqa: E731
        fitted = probe.fit(features, y, train, valid, "sigmoid", len(names), select, seed, context.config.probe)
        logits = fitted.predict(test)
        aucs = [metrics.auc(y[test, j], logits[:, j]) for j in range(len(names))]
        accs = [metrics.accuracy(y[test, j] > 0.5, logits[:, j] > 0) for j in range(len(names))]
        for j, name in enumerate(names):
            rows += [{"task": "category", "target": name, "metric": "AUC", "seed": seed, "value": aucs[j], "users": len(test)},
                     {"task": "category", "target": name, "metric": "accuracy", "seed": seed, "value": accs[j], "users": len(test)}]
        rows += [{"task": "category", "target": "mean", "metric": "AUC", "seed": seed, "value": float(np.nanmean(aucs)),
                  "valid": fitted.valid_score, "users": len(test)},
                 {"task": "category", "target": "mean", "metric": "accuracy", "seed": seed, "value": float(np.nanmean(accs)),
                  "valid": fitted.valid_score, "users": len(test)}]
    return rows


def _mean_auc(y: np.ndarray, scores: np.ndarray) -> float:
    values = [metrics.auc(y[:, j], scores[:, j]) for j in range(y.shape[1])]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


# ------------------------------------------------------------------------------------ next item
@dataclasses.dataclass
class NextItemData:
    users: np.ndarray
    valid_item: np.ndarray
    test_item: np.ndarray
    history_mask: sp.csr_matrix  # inputs of validation (history part)
    test_mask: sp.csr_matrix  # inputs of test (history_test part)


def next_item_data(context: Context) -> NextItemData:
    targets = pq.read_table(context.split.targets).to_pylist()
    both = set(context.users["history"].tolist()) & set(context.users["history_test"].tolist())
    rows = sorted((r for r in targets if r["user_id"] in both and r["valid_item"] in context.index and r["test_item"] in context.index),
                  key=lambda r: r["user_id"])
    if len(rows) < len(targets):
        log.info("next item: %d of %d users kept (input rows and known target items)", len(rows), len(targets))
    users = np.array([r["user_id"] for r in rows], dtype=object)
    return NextItemData(users, np.array([context.index[r["valid_item"]] for r in rows], dtype=np.int64),
                        np.array([context.index[r["test_item"]] for r in rows], dtype=np.int64),
                        context.counts_for("history", users), context.counts_for("history_test", users))


def negatives(rows: np.ndarray, targets: np.ndarray, mask: sp.csr_matrix, popularity: np.ndarray,
              count: int, seed: int) -> np.ndarray:
    """``count`` distinct items per user, sampled ∝ popularity, outside the history and != target -> (n, count)."""
    rng = np.random.default_rng(seed)
    p = popularity.astype(np.float64)
    p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))
    popular = set(np.flatnonzero(p > 0).tolist())
    out = np.zeros((len(rows), count), dtype=np.int64)
    for k, (row, target) in enumerate(zip(rows, targets)):
        banned = set(mask[row].indices.tolist()) | {int(target)}
        need = min(count, len(popular - banned))
        chosen: list[int] = []
        while len(chosen) < need:
            for item in rng.choice(len(p), size=4 * count, p=p).tolist():
                if item not in banned:
                    banned.add(item)
                    chosen.append(item)
                    if len(chosen) == need:
                        break
        if len(chosen) < count:  # tiny catalogues: -1 pads (scored -inf, never ahead of the target)
            chosen += [-1] * (count - len(chosen))
        out[k] = chosen
    return out


def scored_users(context: Context) -> list:
    """Users whose next-item test scores some seed needs (the union of the seeds' test users)."""
    if "next_item" not in context.config.tasks:
        return []
    users = context.next_item.users
    needed = set()
    for seed in context.config.seeds:
        needed.update(users[assign(len(users), seed, context.config.fractions)[2]].tolist())
    return sorted(needed)


def _rank_rows(scores: np.ndarray, targets: np.ndarray, mask: sp.csr_matrix, sampled: np.ndarray) -> dict[str, np.ndarray]:
    exclude = mask.toarray() > 0
    exclude[np.arange(len(targets)), targets] = False
    full = metrics.target_ranks(scores, targets, exclude)
    candidates = np.concatenate([targets[:, None], np.where(sampled < 0, targets[:, None], sampled)], axis=1)
    sampled_scores = np.take_along_axis(scores, candidates, axis=1)
    sampled_scores[:, 1:][sampled < 0] = -np.inf
    return {"full": full, "sampled": metrics.target_ranks(sampled_scores, np.zeros(len(targets), dtype=np.int64))}


def next_item(subject: Subject, context: Context) -> list[dict]:
    data = context.next_item
    n = len(data.users)
    if n < 10:
        log.warning("next item skipped: %d users with >= 3 events", n)
        return []
    own = subject.represent is not None and not subject.tfidf and not subject.popularity
    history = test_input = None
    if own:
        history = align(subject.represent("history"), data.users, f"{subject.name} on history")
        test_input = align(subject.represent("history_test"), data.users, f"{subject.name} on history_test")
    rows = []
    for seed in context.config.seeds:
        train, valid, test = assign(n, seed, context.config.fractions)
        sampled = negatives(test, data.test_item[test], data.test_mask, context.popularity, context.config.negatives, seed)
        if subject.popularity:
            scores = np.broadcast_to(context.popularity.astype(np.float64), (len(test), context.num_items))
            scorer, valid_score = "popularity", math.nan
        elif own and test_input.scores is not None:
            scores, scorer, valid_score = test_input.scores[test], "own", math.nan
            if np.isnan(scores).any():
                raise RuntimeError(f"{subject.name}: item scores missing for some test users")
        else:
            scores, valid_score = _head_scores(subject, context, data, history, test_input, train, valid, test, seed)
            scorer = "head"
        ranks = _rank_rows(np.asarray(scores), data.test_item[test], data.test_mask[test], sampled)
        for protocol, r in ranks.items():
            rows += [{"task": "next_item", "target": protocol, "metric": m, "seed": seed, "value": v, "valid": valid_score,
                      "scorer": scorer, "users": len(test)} for m, v in metrics.ranking_metrics(r).items()]
    return rows


def _head_scores(subject, context, data, history, test_input, train, valid, test, seed):
    """The documented scorer: MLP -> softmax over items on probe-train users; returns test scores."""
    n = len(data.users)
    if subject.tfidf:
        stacked = sp.vstack([context.counts_for("history", data.users), context.counts_for("history_test", data.users)]).tocsr()
        train_rows = np.concatenate([train, n + train])
        features = probe.Features(tfidf(stacked, context.item_terms, train_rows))
    else:
        x = [history.features, test_input.features]
        features = probe.Features(sp.vstack(x).tocsr() if sp.issparse(x[0]) else np.concatenate(x))
        train_rows = np.concatenate([train, n + train])
    targets = np.concatenate([data.valid_item, data.test_item])
    bias = np.log1p(context.popularity.astype(np.float64))
    bias = (bias - bias.mean()).astype(np.float32)

    def select(p: probe.FittedProbe, rows: np.ndarray) -> float:
        ranks = _rank_rows(p.predict(rows), data.valid_item[rows], data.history_mask[rows], np.full((len(rows), 0), -1))["full"]
        return metrics.ranking_metrics(ranks)["NDCG@10"]

    fitted = probe.fit(features, targets, train_rows, valid, "softmax", context.num_items, select, seed,
                       context.config.probe, output_bias=bias)
    return fitted.predict(n + test), fitted.valid_score
