"""Selection users (raylurm.evaluate.cohorts): shared by Tune and every probe seed, never a test user."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylurm.evaluate import cohorts

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = range(10)


def test_parts_are_disjoint_and_cover_every_user():
    users = np.array([f"u{k}" for k in range(101)], dtype=object)
    for seed in SEEDS:
        train, valid, test = cohorts.assign(users, seed)
        assert not set(train) & set(valid) and not set(train) & set(test) and not set(valid) & set(test)
        assert sorted([*train, *valid, *test]) == list(range(101))
    assert not np.array_equal(cohorts.assign(users, 0)[2], cohorts.assign(users, 1)[2]), "seeds re-draw train / test"


def test_selection_users_are_the_same_for_every_seed_and_every_task():
    ids = np.arange(5_000)
    reference = set(ids[cohorts.assign(ids, 0)[1]].tolist())
    for seed in SEEDS:
        assert set(ids[cohorts.assign(ids, seed)[1]].tolist()) == reference
    # another task sees another subset of the same users (e.g. those with a label, or with events after T)
    rng = np.random.default_rng(0)
    for _ in range(3):
        subset = np.sort(rng.choice(ids, size=2_000, replace=False))
        for seed in (0, 7):
            assert set(subset[cohorts.assign(subset, seed)[1]].tolist()) == reference & set(subset.tolist())


def test_no_test_user_is_ever_a_selection_user():
    ids = np.array([f"user-{k}" for k in range(3_000)], dtype=object)
    selection = set(ids[cohorts.selection_mask(ids, 0.2)].tolist())
    for seed in SEEDS:
        train, _valid, test = cohorts.assign(ids, seed)
        assert not selection & set(ids[test].tolist()) and not selection & set(ids[train].tolist())


def test_shares_are_close_to_the_fractions():
    ids = np.arange(10_000)
    for fractions in ((0.6, 0.2, 0.2), (0.7, 0.1, 0.2)):
        for seed in (0, 3):
            train, valid, test = cohorts.assign(ids, seed, fractions)
            for part, share in zip((train, valid, test), fractions):
                # binomial sd of a 0.2 share of 10k: 0.004; 4 sd
                assert abs(len(part) / len(ids) - share) < 0.016, (fractions, seed, len(part))


def test_hash_is_stable_and_uniform():
    # a function of the id alone (its text): the selection users do not move between runs or processes
    assert cohorts.user_hash(["1"]).tolist() == cohorts.user_hash([1]).tolist()
    h = cohorts.user_hash(np.arange(10_000))
    assert 0.0 <= h.min() and h.max() < 1.0 and abs(h.mean() - 0.5) < 0.01
    assert np.array_equal(h, cohorts.user_hash(np.arange(10_000)))


def _history_boi(root: Path, users: list) -> Path:
    """A minimal history BoI: ProfilingValidation reads only ``users/``'s ``user_id`` before encoding."""
    (root / "users").mkdir(parents=True)
    pq.write_table(pa.table({"user_id": users, "num_events": np.full(len(users), 3, dtype=np.int64)}),
                   root / "users" / "part-00000.parquet")
    return root


def test_tune_validation_never_sees_a_test_user_of_any_seed(tmp_path):
    """The users Tune's ProfilingValidation encodes, trains its probes on and scores are selection users only,
    so none of them is a test user of the evaluator's profiling task for any seed."""
    from raylurm.tune.validation import ProfilingValidation, ValidationConfig

    rng = np.random.default_rng(0)
    users = [f"u{k}" for k in range(400)]
    boi_users = users[:380]  # 20 users have no history row: they are no one's users
    labelled = [u for u in users if u != "u7"]  # one user without any label
    gender = {u: ("F" if rng.random() < 0.5 else "M") for u in labelled}
    age = {u: str(rng.choice(["18-24", "25-34", "35-44"])) if rng.random() < 0.9 else None for u in labelled}
    pq.write_table(pa.table({"user_id": labelled, "gender": [gender[u] for u in labelled], "age": [age[u] for u in labelled]}),
                   tmp_path / "users.parquet")
    boi = _history_boi(tmp_path / "history", boi_users)
    for tune_seed in (0, 1):
        validation = ProfilingValidation(boi, tmp_path / "users.parquet", ValidationConfig(seed=tune_seed))
        seen = validation.users
        for column, _classes, chosen, _y, fold in validation.columns:
            assert set(chosen.tolist()) <= seen and sorted(np.unique(fold).tolist()) == [0, 1]
        assert seen and seen <= set(boi_users)
        # the evaluator's profiling users of each column: history rows with a label (raylurm.evaluate.profiling)
        for labels in (gender, age):
            task_users = np.array([u for u in sorted(boi_users) if labels.get(u) is not None], dtype=object)
            selection = set(task_users[cohorts.assign(task_users, 0)[1]].tolist())
            column_seen = {u for u in seen if labels.get(u) is not None}
            assert column_seen <= selection
            for seed in SEEDS:
                _train, _valid, test = cohorts.assign(task_users, seed)
                assert not seen & set(task_users[test].tolist()), (tune_seed, seed)
    # and the metric runs on those users alone (a representation that knows gender scores well on it)
    rows = validation.table["user_id"].to_pylist()
    z = np.stack([[1.0 if gender.get(u) == "F" else -1.0, rng.normal()] for u in rows]).astype(np.float32)
    scores = validation.score_features(z)
    assert set(scores) == {"val_auc", "val_auc/gender", "val_auc/age"}
    assert scores["val_auc/gender"] > 0.95 and not math.isnan(scores["val_auc"])
