"""Next item, leave-one-out, on every user: the anchors' full ranking and a sampled protocol.

Validation: ``history`` (every event but the last two) -> second-to-last item; test:
``history_test`` (every event but the last) -> last item. Every user with >= 3 events is scored.
Candidates are the catalogue (``EvalConfig.catalogue``: items with events by default), the
user's input history masked (``mask_history``), the target never. A second protocol ranks the
target against ``negatives`` sampled items (by popularity or uniformly) from outside the history.

Scorers, one row each:

* **own** — ATRank and DSS score items with their pretrained scorer (``score_items``).
* **head** — every representation (and, as extra rows, ATRank's and DSS's embeddings) gets
  the same head: the probe MLP with a softmax over all items (output bias = centred
  log-popularity), trained on many (prefix -> next item) examples drawn from the users'
  pretraining events (``head_prefixes`` per user, prefixes encoded by the frozen encoder as
  real users are; :mod:`raylurm.evaluate.prefixes`) plus each user's (history -> validation
  item). Users are scored by K-fold cross-fitting (``head_folds``): the head that scores fold k
  never saw fold k's users, picks its epoch on fold k's *validation* items and scores their
  test items once, so every user is scored and the head measures the representation, not its
  own data.
* **popularity** — every item by its pretraining count.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from raylurm.evaluate import cohorts, metrics, probe
from raylurm.evaluate.protocol import Subject, align, user_frame
from raylurm.evaluate.represent import tfidf

log = logging.getLogger(__name__)


@dataclasses.dataclass
class NextItemData:
    users: np.ndarray
    valid_item: np.ndarray
    test_item: np.ndarray
    history_mask: sp.csr_matrix  # inputs of validation (history part)
    test_mask: sp.csr_matrix  # inputs of test (history_test part)
    valid_exclude: np.ndarray  # (n, items) bool: candidates out of the validation ranking
    test_exclude: np.ndarray  # (n, items) bool: candidates out of the test ranking


def next_item_data(context) -> NextItemData:
    targets = pq.read_table(context.split.targets).to_pylist()
    both = set(context.users["history"].tolist()) & set(context.users["history_test"].tolist())
    rows = sorted((r for r in targets if r["user_id"] in both and r["valid_item"] in context.index and r["test_item"] in context.index),
                  key=lambda r: r["user_id"])
    if len(rows) < len(targets):
        log.warning("next item: %d of %d users kept (input rows and known target items)", len(rows), len(targets))
    users = np.array([r["user_id"] for r in rows], dtype=object)
    valid_item = np.array([context.index[r["valid_item"]] for r in rows], dtype=np.int64)
    test_item = np.array([context.index[r["test_item"]] for r in rows], dtype=np.int64)
    history, test_input = context.counts_for("history", users), context.counts_for("history_test", users)
    return NextItemData(users, valid_item, test_item, history, test_input,
                        exclusions(history, valid_item, context.catalogue, context.config.mask_history),
                        exclusions(test_input, test_item, context.catalogue, context.config.mask_history))


def exclusions(inputs: sp.csr_matrix, targets: np.ndarray, catalogue: np.ndarray, mask_history: bool) -> np.ndarray:
    """(n, items) bool: items outside the catalogue and (optionally) the input history, never the target."""
    exclude = np.broadcast_to(~catalogue, inputs.shape).copy()
    if mask_history:
        exclude |= inputs.toarray() > 0
    exclude[np.arange(len(targets)), targets] = False
    return exclude


def negatives(exclude: np.ndarray, weights: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` distinct candidates per row drawn ∝ ``weights`` among non-excluded items -> (n, count); -1 pads.

    ``exclude`` must mark the target too (callers pass the test exclusions with the target set)."""
    rng = np.random.default_rng(seed)
    n, num_items = exclude.shape
    out = np.full((n, count), -1, dtype=np.int64)
    todo = np.arange(n)
    for _ in range(20):
        if not len(todo):
            break
        draws = rng.choice(num_items, size=(len(todo), 4 * count), p=weights / weights.sum())
        ok = ~exclude[todo[:, None], draws]
        order = np.argsort(draws, axis=1, kind="stable")  # first occurrence of each item per row
        sorted_draws = np.take_along_axis(draws, order, axis=1)
        repeat = np.zeros_like(ok)
        repeat_sorted = np.zeros(sorted_draws.shape, dtype=bool)
        repeat_sorted[:, 1:] = sorted_draws[:, 1:] == sorted_draws[:, :-1]
        np.put_along_axis(repeat, order, repeat_sorted, axis=1)
        ok &= ~repeat
        first = np.argsort(~ok, axis=1, kind="stable")[:, :count]
        picked = np.take_along_axis(draws, first, axis=1)
        enough = ok.sum(axis=1) >= count
        out[todo[enough]] = picked[enough]
        available = ((~exclude[todo]) & (weights > 0)).sum(axis=1)
        small = ~enough & (available < 4 * count)
        for row, k in zip(todo[small].tolist(), np.flatnonzero(small).tolist()):  # tiny catalogues only
            pool = np.flatnonzero(~exclude[row] & (weights > 0))
            take = rng.choice(pool, size=min(count, len(pool)), replace=False, p=weights[pool] / weights[pool].sum())
            out[row, :len(take)] = take
        todo = todo[~enough & ~small]
    return out


def rank_rows(scores: np.ndarray, targets: np.ndarray, exclude: np.ndarray, sampled: np.ndarray | None, what: str):
    """Full-ranking ranks, sampled-protocol ranks (or None) and the top-10 lists."""
    full = metrics.target_ranks(scores, targets, exclude, what=what)
    top = metrics.top_items(scores, exclude)  # the lists a user would see: target a candidate, history masked
    if sampled is None:
        return full, None, top
    candidates = np.concatenate([targets[:, None], np.where(sampled < 0, targets[:, None], sampled)], axis=1)
    sampled_scores = np.take_along_axis(np.asarray(scores, np.float64), candidates, axis=1)
    sampled_scores[:, 1:][sampled < 0] = -np.inf
    return full, metrics.target_ranks(sampled_scores, np.zeros(len(targets), dtype=np.int64), what=what), top


def next_item(subject: Subject, context) -> tuple[list[dict], list]:
    data = context.next_item
    n = len(data.users)
    if n < 10:
        log.warning("next item skipped: %d users with >= 3 events", n)
        return [], []
    own_scores = None
    if subject.represent is not None and not subject.tfidf:
        test_input = align(subject.represent("history_test"), data.users, f"{subject.name} on history_test")
        own_scores = test_input.scores
    scorers = []  # (model name, scorer kind, seed -> (scores, valid score))
    if subject.popularity:
        scorers.append((subject.name, "popularity", lambda s: (np.broadcast_to(context.popularity, (n, context.num_items)), math.nan)))
    else:
        if own_scores is not None:
            if np.isnan(own_scores).all(axis=1).any():
                raise RuntimeError(f"{subject.name}: item scores missing for some users")
            scorers.append((subject.name, "own", lambda s: (own_scores, math.nan)))
        if own_scores is None or context.config.own_scorer_head:
            name = subject.name if own_scores is None else f"{subject.name} (head)"
            scorers.append((name, "head", lambda s: head_scores(subject, context, s)))
    rows, frames = [], []
    for seed in context.config.next_item_seeds:
        weights = context.popularity if context.config.negative_sampling == "popularity" else context.catalogue.astype(np.float64)
        sampled = negatives(data.test_exclude | _target_mask(data), weights, context.config.negatives, seed)
        for model, kind, score in scorers:
            scores, valid_score = score(seed)
            full, sampled_ranks, top = rank_rows(scores, data.test_item, data.test_exclude, sampled, model)
            lists = metrics.list_metrics(top, context.catalogue, context.popularity)
            for protocol, ranks in (("full", full), ("sampled", sampled_ranks)):
                values = metrics.ranking_metrics(ranks) | (lists if protocol == "full" else {})
                rows += [{"task": "next_item", "target": protocol, "metric": m, "seed": seed, "value": v, "valid": valid_score,
                          "scorer": kind, "users": n, "model": model,
                          "catalogue": int(context.catalogue.sum())} for m, v in values.items()]
                frames.append(user_frame("next_item", protocol, "ranking", seed, data.users, rank=ranks).assign(model=model))
    return rows, frames


def _target_mask(data: NextItemData) -> np.ndarray:
    mask = np.zeros_like(data.test_exclude)
    mask[np.arange(len(data.test_item)), data.test_item] = True
    return mask


def head_scores(subject: Subject, context, seed: int) -> tuple[np.ndarray, float]:
    """Cross-fitted head scores of every user's test input -> ((n, items), mean validation NDCG@10 over folds)."""
    data, prefixes = context.next_item, context.prefixes
    n, p = len(data.users), len(prefixes.target)
    features = _head_features(subject, context)
    targets = np.concatenate([prefixes.target, data.valid_item, data.test_item])
    bias = np.log1p(context.popularity)
    bias = (bias - bias.mean()).astype(np.float32)
    fold = cohorts.folds(n, context.config.head_folds, seed)
    prefix_fold = fold[prefixes.user_row]
    scores = np.zeros((n, context.num_items), dtype=np.float32)
    valid_scores = []
    for k in range(context.config.head_folds):
        users = np.flatnonzero(fold == k)
        train = np.concatenate([np.flatnonzero(prefix_fold != k), p + np.flatnonzero(fold != k)])
        valid, test = p + users, p + n + users
        fold_features = features(train) if callable(features) else features

        def select(fitted: probe.FittedProbe, rows: np.ndarray) -> float:
            ranks = metrics.target_ranks(fitted.predict(rows), targets[rows], data.valid_exclude[rows - p], what=subject.name)
            return metrics.ranking_metrics(ranks)["NDCG@10"]

        fitted = probe.fit(fold_features, targets, train, valid, "softmax", context.num_items, select, seed + k,
                           context.config.head, output_bias=bias)
        scores[users] = fitted.predict(test)
        valid_scores.append(fitted.valid_score)
        log.info("next-item head %s, fold %d/%d: %d training examples, epoch %d, validation NDCG@10 %.4f", subject.name,
                 k + 1, context.config.head_folds, len(train), fitted.epoch, fitted.valid_score)
    return scores, float(np.mean(valid_scores))


def _head_features(subject: Subject, context):
    """Features of [prefixes; history; history_test] rows, or (TF-IDF) a function of the training rows."""
    data, prefixes = context.next_item, context.prefixes
    if subject.tfidf:
        stacked = sp.vstack([prefixes.counts, data.history_mask, data.test_mask]).tocsr()
        return lambda train: probe.Features(tfidf(stacked, context.item_terms, train))
    parts = [align(subject.represent("prefixes"), prefixes.ids, f"{subject.name} on prefixes").features,
             align(subject.represent("history"), data.users, f"{subject.name} on history").features,
             align(subject.represent("history_test"), data.users, f"{subject.name} on history_test").features]
    return probe.Features(sp.vstack(parts).tocsr() if sp.issparse(parts[0]) else np.concatenate(parts))
