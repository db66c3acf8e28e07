"""The next-item task without Ray: exclusions, vectorised negatives, the cross-fitted head."""

from __future__ import annotations

import types

import numpy as np
import pytest
import scipy.sparse as sp

from raylurm.evaluate import next_item, probe
from raylurm.evaluate.protocol import EvalConfig, Subject
from raylurm.evaluate.represent import Representation


def test_exclusions_mask_history_and_outside_catalogue_never_the_target():
    inputs = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=np.float32))
    catalogue = np.array([True, True, True, False])
    out = next_item.exclusions(inputs, np.array([2, 3]), catalogue, mask_history=True)
    assert out.tolist() == [[True, False, False, True], [False, True, False, False]]
    assert next_item.exclusions(inputs, np.array([2, 3]), catalogue, mask_history=False).tolist() == [
        [False, False, False, True], [False, False, False, False]]


def test_negatives_are_distinct_allowed_and_follow_the_weights():
    rng = np.random.default_rng(0)
    exclude = rng.random((300, 200)) < 0.3
    weights = np.linspace(1.0, 10.0, 200)
    out = next_item.negatives(exclude, weights, 20, seed=1)
    assert out.shape == (300, 20) and (out >= 0).all()
    assert all(len(set(row)) == 20 for row in out.tolist())
    assert not exclude[np.arange(300)[:, None], out].any()
    assert np.mean(out >= 100) > 0.6  # heavier items are drawn more often
    assert np.array_equal(out, next_item.negatives(exclude, weights, 20, seed=1))  # deterministic by seed


def test_negatives_pad_when_the_catalogue_is_too_small():
    exclude = np.zeros((3, 6), dtype=bool)
    exclude[:, :3] = True
    out = next_item.negatives(exclude, np.ones(6), 5, seed=0)
    assert (np.sort(out, axis=1)[:, :2] == -1).all() and set(out[out >= 0].tolist()) <= {3, 4, 5}


def _world(n_users=240, n_items=40, tastes=4, per_user=6, seed=0):
    """Users with one of ``tastes`` tastes; each taste likes a block of items; next items come from the block."""
    rng = np.random.default_rng(seed)
    taste = rng.integers(0, tastes, size=n_users)
    block = n_items // tastes

    def draw(k):
        return taste[k] * block + rng.integers(0, block)

    users = np.array([f"u{i}" for i in range(n_users)], dtype=object)
    user_row = np.repeat(np.arange(n_users), per_user)
    prefix_target = np.array([draw(k) for k in user_row])
    valid_item = np.array([draw(k) for k in range(n_users)])
    test_item = np.array([draw(k) for k in range(n_users)])
    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    catalogue = np.ones(n_items, dtype=bool)
    data = next_item.NextItemData(users, valid_item, test_item, empty, empty,
                                  next_item.exclusions(empty, valid_item, catalogue, True),
                                  next_item.exclusions(empty, test_item, catalogue, True))
    prefixes = types.SimpleNamespace(ids=np.array([f"p{i}" for i in range(len(user_row))], dtype=object), user_row=user_row,
                                     target=prefix_target, counts=sp.csr_matrix((len(user_row), n_items), dtype=np.float32))
    config = EvalConfig(head_folds=3, head=probe.ProbeConfig(max_epochs=15, patience=3, weight_decays=(0.0,), hidden_dim=32))
    context = types.SimpleNamespace(next_item=data, prefixes=prefixes, popularity=np.ones(n_items), num_items=n_items,
                                    config=config, catalogue=catalogue)
    return context, taste


def _subject(name, context, taste, informative):
    rng = np.random.default_rng(1)
    n = len(context.next_item.users)
    z = np.eye(taste.max() + 1)[taste] if informative else rng.normal(size=(n, 4))
    z = z + 0.05 * rng.normal(size=z.shape)
    reps = {"prefixes": Representation(context.prefixes.ids, z[context.prefixes.user_row]),
            "history": Representation(context.next_item.users, z), "history_test": Representation(context.next_item.users, z)}
    return Subject(name, "pretrained", lambda part: reps[part])


def test_head_learns_from_an_informative_representation_and_not_from_noise(one_thread):
    context, taste = _world()
    ranks = {}
    for name, informative in (("good", True), ("noise", False)):
        scores, valid = next_item.head_scores(_subject(name, context, taste, informative), context, seed=0)
        assert scores.shape == (240, 40) and np.isfinite(valid)
        ranks[name] = next_item.metrics.target_ranks(scores, context.next_item.test_item, context.next_item.test_exclude)
    hr = {k: float((r < 10).mean()) for k, r in ranks.items()}
    assert hr["good"] > 0.8, hr  # the taste block (10 of 40 items) fills the top 10; chance is 0.25
    assert hr["noise"] < 0.4, hr


def test_head_cross_fitting_never_trains_on_the_users_it_scores(monkeypatch, one_thread):
    context, taste = _world()
    n, p = 240, len(context.prefixes.user_row)
    seen = []
    real_fit = probe.fit

    def spy(features, targets, train, valid, *args, **kwargs):
        seen.append((train.copy(), valid.copy()))
        return real_fit(features, targets, train, valid, *args, **kwargs)

    monkeypatch.setattr(next_item.probe, "fit", spy)
    next_item.head_scores(_subject("good", context, taste, True), context, seed=0)
    assert len(seen) == 3
    scored = []
    for train, valid in seen:
        fold_users = valid - p  # validation rows are the fold's users' history rows
        train_users = np.concatenate([context.prefixes.user_row[train[train < p]], train[train >= p] - p])
        assert not np.intersect1d(fold_users, train_users).size, "a head trained on a user it scores"
        scored.append(fold_users)
    assert np.array_equal(np.sort(np.concatenate(scored)), np.arange(n)), "every user is scored exactly once"


def test_own_scores_with_nan_are_refused():
    with pytest.raises(ValueError, match="dss"):
        next_item.metrics.target_ranks(np.array([[np.nan, 1.0]]), np.array([1]), what="dss")
