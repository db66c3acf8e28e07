"""Profiling without Ray: which columns are labels, the regression probe, the majority predictor, per-user rows."""

from __future__ import annotations

import logging
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylurm.evaluate import cohorts, probe, profiling
from raylurm.evaluate.protocol import USER_COLUMNS, EvalConfig, Subject


def _users(tmp_path, n=600, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 79, size=n)  # 61 raw values: a regression label
    table = pa.table({"user_id": np.arange(n), "gender": rng.choice(["F", "M"], size=n, p=[0.3, 0.7]), "age": age,
                      "zip": [f"z{i}" for i in range(n)], "country": ["NL"] * n})
    path = tmp_path / "users.parquet"
    pq.write_table(table, path)
    return path, table


def test_columns_classes_numeric_and_logged_skips(tmp_path, caplog):
    path, _ = _users(tmp_path)
    assert list(profiling.label_columns(path)) == ["gender"]
    assert list(profiling.regression_columns(path)) == ["age"]
    with caplog.at_level(logging.WARNING, logger="raylurm.evaluate.profiling"):
        profiling.log_skipped(path)
    text = caplog.text
    assert "'zip'" in text and "not a class label" in text and "'country'" in text and "nothing to predict" in text
    assert "'age'" not in text and "'gender'" not in text


def _context(path, table, z):
    labels = profiling.label_columns(path)
    numeric = profiling.regression_columns(path)
    users = np.array(table["user_id"].to_pylist(), dtype=object)
    row = {u: i for i, u in enumerate(users.tolist())}
    config = EvalConfig(seeds=(0, 1), probe=probe.ProbeConfig(max_epochs=30, patience=5, weight_decays=(0.0,)))

    def features(subject, part, wanted, train):
        return probe.Features(z[[row[u] for u in wanted.tolist()]])
    return types.SimpleNamespace(users={"history": users}, labels=labels, numeric_labels=numeric, config=config, features=features)


def test_regression_probe_learns_age_and_majority_is_a_constant(tmp_path, one_thread):
    path, table = _users(tmp_path)
    age = np.asarray(table["age"]).astype(np.float64)
    gender = (np.asarray(table["gender"]) == "M").astype(np.float64)
    rng = np.random.default_rng(1)
    z = np.stack([(age - 48) / 18 + 0.1 * rng.normal(size=len(age)), gender + 0.3 * rng.normal(size=len(age)),
                  rng.normal(size=len(age))], axis=1)
    context = _context(path, table, z)
    rows, frames = profiling.profiling(Subject("rep", "pretrained", None), context)
    value = {(r["target"], r["metric"], r["seed"]): r["value"] for r in rows}
    assert value[("age", "R²", 0)] > 0.8 and value[("age", "Spearman", 0)] > 0.9 and value[("age", "MAE", 0)] < 5
    assert value[("gender", "AUC", 0)] > 0.9 and value[("gender", "balanced accuracy", 0)] > 0.8
    rows, frames = profiling.profiling(Subject("majority", "baseline", None, majority=True), context)
    value = {(r["target"], r["metric"], r["seed"]): r["value"] for r in rows}
    assert value[("gender", "AUC", 0)] == 0.5 and value[("gender", "balanced accuracy", 0)] == 0.5
    assert value[("gender", "accuracy", 0)] == pytest.approx(0.7, abs=0.06)  # the prevalence of the majority class
    assert value[("age", "R²", 0)] <= 0.0 + 1e-3  # the training mean explains nothing
    per_user = frames[0]
    assert set(per_user.columns) >= set(USER_COLUMNS) - {"model", "group", "run"}
    test = cohorts.assign(np.array(table["user_id"].to_pylist(), dtype=object), 0)[2]
    assert len(per_user[(per_user.seed == 0)]) == len(test)
    assert (per_user.pred == 1).all()  # the majority class, M
