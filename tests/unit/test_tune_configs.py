"""Every sweep in tune_configs/ loads, and every sampled config builds a model that trains one step."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raylurm.methods import METHODS
from raylurm.train.batch import DataInfo, synthetic_rows
from tests.helpers import training_batch
from raylurm.tune import sweeps

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "tune_configs").glob("*.py"))
INFO = DataInfo(num_interests=40, num_items=30, num_behaviors=3, scales=("month", "year"), max_sequence_length=12,
                item_category=tuple(i % 4 for i in range(30)), num_categories=4)


def test_the_required_sweeps_exist():
    assert {"lurm", "atrank", "dss", "adaptssr", "study", "smoke"} <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_sampled_config_builds_and_trains(path):
    sweep = sweeps.load(path)
    table = synthetic_rows(16, INFO.num_interests, INFO.num_items, seed=1)
    rng = np.random.default_rng(0)
    for method, space in sweep.methods.items():
        for _ in range(3):
            values = sweeps.sample(space, rng)
            values.pop("batch_size", None)  # a training option, not a model shape
            torch.manual_seed(0)
            model = METHODS[method](sweeps.method_config(method, values), INFO)
            batch = training_batch(model, table)
            loss = model(batch)["loss"]
            loss.backward()
            assert math.isfinite(float(loss.detach())), (path.stem, method, values)
            assert model.embed(batch).shape[0] == 16


def test_a_typo_fails_when_the_sweep_is_loaded(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ray import tune\nMETHODS = {'lurm': {'num_anchor': tune.choice([1, 2])}}\n")
    with pytest.raises(ValueError, match=r"bad.py: lurm has no option\(s\) \['num_anchor'\]"):
        sweeps.load(bad)
    bad.write_text("METHODS = {'lurm': {}}\nTRAIN = {'epoch': 3}\n")
    with pytest.raises(ValueError, match="TRAIN has unknown key"):
        sweeps.load(bad)
    bad.write_text("METHODS = {'gru4rec': {}}\n")
    with pytest.raises(ValueError, match="unknown method 'gru4rec'"):
        sweeps.load(bad)


def test_sampling_draws_from_the_space():
    from ray import tune

    rng = np.random.default_rng(0)
    draws = [sweeps.sample({"a": tune.choice([1, 2, 3]), "b": tune.loguniform(1e-4, 1e-2), "c": 7,
                            "d": tune.grid_search(["x", "y"])}, rng) for _ in range(50)]
    assert {d["a"] for d in draws} == {1, 2, 3} and {d["d"] for d in draws} == {"x", "y"}
    assert all(1e-4 <= d["b"] <= 1e-2 and d["c"] == 7 for d in draws)


def test_smoke_test_keeps_the_spaces_and_shrinks_the_budget():
    from raylurm.tune.run import scheduler, smoke

    sweep = sweeps.load(next(p for p in CONFIGS if p.stem == "lurm"))
    small = smoke(sweep)
    assert small.methods == sweep.methods
    assert small.train["epochs"] == 2 and small.train["max_steps_per_epoch"] == 2 and small.search["num_samples"] == 2
    asha = scheduler(small.search, max_t=small.train["epochs"])
    assert type(asha).__name__ == "AsyncHyperBandScheduler" and asha._time_attr == "epoch"
    assert type(scheduler({"scheduler": "fifo"}, 3)).__name__ == "FIFOScheduler"


def test_the_tune_benchmark_writes_a_loadable_sweep(tmp_path):
    from raylurm.bench.tune import _sweep

    sweep = _sweep(tmp_path, trials=3, epochs=2)
    assert sweep.methods["lurm"]["num_anchors"] == {"grid_search": [1, 2, 3]}
    assert sweep.train == {"epochs": 2} and sweep.search["scheduler"] == "fifo"


def test_a_relative_storage_path_becomes_absolute_and_a_uri_passes_through(tmp_path, monkeypatch):
    """``--storage-path results/ml-1m/sweeps`` failed in Tune with "URI has empty scheme"."""
    from raylurm.tune.run import experiment_dir

    monkeypatch.chdir(tmp_path)
    assert experiment_dir("results/sweeps", "budget") == str(tmp_path / "results" / "sweeps" / "budget")
    assert experiment_dir("s3://bucket/tune/", "budget") == "s3://bucket/tune/budget"
