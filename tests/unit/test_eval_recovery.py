"""Recovery of the first-year topic mixture (synthetic truth) without Ray: truth reading, the soft-target probe,
the constant baseline, per-user rows that the paired tests read, and the report's table."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylurm.evaluate import probe, recovery, report, stats
from raylurm.evaluate.protocol import USER_COLUMNS, EvalConfig, Subject

K = 6


def _truth(tmp_path, n=500, seed=0):
    """Two years per user; the first year's mixture is concentrated on one of K topics, the second is noise."""
    rng = np.random.default_rng(seed)
    first = rng.dirichlet(np.full(K, 0.2), size=n).astype(np.float32)
    later = rng.dirichlet(np.ones(K), size=n).astype(np.float32)
    users = np.arange(n)
    table = pa.table({"user_id": np.concatenate([users, users]),
                      "year": np.concatenate([np.full(n, 1, np.int32), np.full(n, 0, np.int32)]),  # later year first
                      "mixture": pa.array(list(later) + list(first), pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "truth.parquet")
    return users, first


def test_first_year_mixtures_reads_the_earliest_year_and_none_without_truth(tmp_path):
    users, first = _truth(tmp_path)
    truth = recovery.first_year_mixtures(tmp_path)
    assert len(truth) == len(users) and np.allclose(truth[7], first[7])
    assert recovery.first_year_mixtures(tmp_path / "nowhere") is None


def _context(tmp_path, z):
    users, first = _truth(tmp_path)
    config = EvalConfig(seeds=(0,), probe=probe.ProbeConfig(max_epochs=40, patience=5, weight_decays=(0.0,)),
                        tasks=("recovery",))

    def features(subject, part, wanted, train):
        return probe.Features(z[np.asarray(wanted.tolist(), dtype=np.int64)])
    context = types.SimpleNamespace(users={"history": np.array(users.tolist(), dtype=object)}, config=config,
                                    features=features, truth=recovery.first_year_mixtures(tmp_path))
    return context, first


def test_probe_recovers_an_informative_representation_and_the_constant_does_not(tmp_path, one_thread):
    rng = np.random.default_rng(1)
    users, first = _truth(tmp_path)
    informative = np.log(first + 1e-3) + 0.3 * rng.normal(size=first.shape)  # the mixture, noisy
    context, first = _context(tmp_path, informative)
    rows, frames = recovery.recovery(Subject("rep", "pretrained", None), context)
    value = {r["metric"]: r["value"] for r in rows}
    constant_rows, constant_frames = recovery.recovery(Subject("majority", "baseline", None, majority=True), context)
    constant = {r["metric"]: r["value"] for r in constant_rows}
    noise, _ = _context(tmp_path, rng.normal(size=first.shape))
    noise_value = {r["metric"]: r["value"] for r in recovery.recovery(Subject("noise", "pretrained", None), noise)[0]}
    assert value["cosine"] > 0.85 and value["accuracy"] > 0.7
    assert constant["cosine"] < value["cosine"] - 0.2 and constant["accuracy"] < 0.4
    assert noise_value["cosine"] < value["cosine"] - 0.2  # nothing to read back from noise
    frame = frames[0]
    assert set(frame.columns) >= set(USER_COLUMNS) - {"model", "group", "run"} and (frame.kind == "recovery").all()
    # the per-user rows give the harness's numbers back (what the paired bootstrap resamples)
    assert stats.metric_of(frame, "cosine") == pytest.approx(value["cosine"])
    assert stats.metric_of(frame, "accuracy") == pytest.approx(value["accuracy"])
    assert (constant_frames[0].pred == constant_frames[0].pred.iloc[0]).all()  # one topic for everyone


def test_no_truth_no_rows_and_no_report_table(tmp_path):
    context = types.SimpleNamespace(truth=None)
    assert recovery.recovery(Subject("rep", "pretrained", None), context) == ([], [])
    summary = pd.DataFrame([{"task": "profiling", "target": "gender", "metric": "AUC", "model": "a", "group": "pretrained",
                             "mean": 0.7, "std": 0.0, "seeds": 1}])
    assert not any(t.startswith("Recovery") for t in report.tables(summary))
    with_recovery = pd.concat([summary, pd.DataFrame([{"task": "recovery", "target": recovery.TARGET, "metric": "cosine",
                                                      "model": "a", "group": "pretrained", "mean": 0.5, "std": 0.0,
                                                      "seeds": 1}])])
    table = next(t for title, t in report.tables(with_recovery).items() if title.startswith("Recovery"))
    assert "first-year mixture cosine" in table and "0.5000" in table


def test_recovery_is_an_optional_task():
    assert "recovery" not in EvalConfig().tasks  # the default key of stored ML-1M results is unchanged
    assert EvalConfig(tasks=("profiling", "recovery")).tasks == ("profiling", "recovery")
    with pytest.raises(ValueError, match="subset"):
        EvalConfig(tasks=("nonsense",))


def test_tables_of_tasks_not_evaluated_are_left_out():
    """--tasks without next_item: no empty next-item tables ('_not evaluated_') in the report."""
    summary = pd.DataFrame([{"task": "profiling", "target": "gender", "metric": "AUC", "model": "a", "group": "pretrained",
                             "mean": 0.7, "std": 0.0, "seeds": 1},
                            {"task": "next_item", "target": "full", "metric": "HR@10", "model": "a", "group": "pretrained",
                             "mean": 0.2, "std": 0.0, "seeds": 1}])
    titles = list(report.tables(summary))
    assert any(t.startswith("Next item, full") for t in titles) and not any(t.startswith("Category") for t in titles)
    titles = list(report.tables(summary[summary.task == "profiling"]))
    assert titles == ["User profiling (test users; MLP probe on frozen representations)"]
