"""Sweeps on real Ray Tune: the smoke sweep registers best checkpoints; a killed driver's sweep resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raylurm.boi.build import BuildConfig
from raylurm.boi.embeddings import ItemEmbeddingConfig
from raylurm.boi.pipeline import BoiConfig
from raylurm.boi.vocabulary import VocabularyConfig
from raylurm.data.synth import SynthConfig, generate
from raylurm.evaluate.split import SplitConfig, materialise
from raylurm.registry import Registry
from raylurm.tune import results
from raylurm.tune.__main__ import main as tune_main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUANTILE = "0.8"


@pytest.fixture(scope="module")
def data(ray_runtime, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    generate(SynthConfig(users=120, years=2, items=150, num_topics=5, num_categories=4, seed=23), root / "data", progress=False)
    build = BuildConfig(embedding=ItemEmbeddingConfig(method="cooccurrence", dim=16), vocabulary=VocabularyConfig(num_interests=16),
                        boi=BoiConfig(on_unknown_items="skip"))
    materialise(root / "data", SplitConfig(cutoff_quantile=float(QUANTILE)), build_config=build)  # where the CLI finds it
    return root / "data"


def test_smoke_sweep_reports_validation_metrics_and_registers_the_best(data, tmp_path, capsys):
    storage, registry = tmp_path / "tune", tmp_path / "registry"
    code = tune_main([str(ROOT / "tune_configs" / "smoke.py"), "--data", str(data), "--cutoff-quantile", QUANTILE,
                      "--name", "smoke", "--storage-path", str(storage), "--registry", str(registry), "-q"])
    assert code == 0
    experiment = storage / "smoke"
    trials = results.load_trials(experiment)
    assert sorted(trials) == ["dss", "lurm"] and sum(len(t) for t in trials.values()) >= 4
    for method, group in trials.items():
        for trial in group:
            assert trial.error is None and trial.epochs, (method, trial.trial_id)
            for row in trial.epochs:
                assert 0.0 <= row["val_auc"] <= 1.0 and "val_auc/gender" in row and "checkpoint_path" in row
                assert not any(k.startswith("test") for k in row), "never a test metric while choosing"
    assert list(experiment.glob("lurm/*/events.out.tfevents.*")), "TensorBoard-readable trial logs"
    reg = Registry(registry)
    for method in ("lurm", "dss"):
        entry = reg.current(method)
        assert entry is not None and entry.split is not None
        best = results.best_trials(trials)[method]
        assert entry.value == pytest.approx(best.best_value) and entry.record["trial_id"] == best.trial_id
        from raylurm.train.checkpoint import load_model

        model, meta = load_model(entry.path)  # rebuilt from the entry alone
        assert meta["method"] == method and meta["split"] == entry.split
        boi = json.loads((entry.path / "boi" / "manifest.json").read_text())  # and its inputs from raw events
        assert boi["vocabulary_hash"] == meta["vocabulary_hash"] and (entry.path / "boi" / "vocabulary" / "items.parquet").exists()
    assert "report:" in capsys.readouterr().out
    _serving_inputs_match_the_pipeline(reg, data)
    # the evaluator reads the registry's current entries
    from raylurm.evaluate.__main__ import main as evaluate_main

    out = tmp_path / "evaluation"
    assert evaluate_main(["--registry", str(registry), "--data", str(data), "--cutoff-quantile", QUANTILE, "--seeds", "1",
                          "--tasks", "profiling", "--no-baselines", "--out", str(out), "-q"]) == 0
    evaluated = (out / "results.csv").read_text()
    assert ",lurm," in evaluated and ",dss," in evaluated and "gender" in evaluated
    assert reg.current("lurm").name in (out / "RESULTS.md").read_text()
    # a second sweep of the same name refuses instead of mixing trials
    assert tune_main([str(ROOT / "tune_configs" / "smoke.py"), "--data", str(data), "--cutoff-quantile", QUANTILE,
                      "--name", "smoke", "--storage-path", str(storage), "--registry", str(registry), "-q"]) == 2
    assert "pass --resume" in capsys.readouterr().err


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _trial_id(trial_dir: Path) -> str | None:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return json.loads(lines[0]).get("trial_id") if lines else None


def _terminated(experiment: Path) -> set[str]:
    """Trial ids that Tune's last saved experiment state records as TERMINATED."""
    out = set()
    for path in experiment.glob("experiment_state-*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):  # being rewritten
            continue
        for item in state.get("trial_data", []):
            trial = json.loads(item[0]) if isinstance(item, list) else item
            if trial.get("status") == "TERMINATED":
                out.add(trial.get("trial_id"))
    return out


EPOCHS = 6  # long enough that the next trial is still running when Tune has saved the previous one as finished


def test_a_sweep_whose_driver_is_killed_resumes_and_completes(data, tmp_path, ray_runtime):
    sweep = tmp_path / "resume.py"
    sweep.write_text("from ray import tune\n"
                     "METHODS = {'lurm': {'num_anchors': tune.grid_search([1, 2, 3]), 'hidden_dim': 8, 'batch_size': 8}}\n"
                     f"TRAIN = {{'epochs': {EPOCHS}, 'max_steps_per_epoch': 2}}\n"
                     "SEARCH = {'num_samples': 1, 'scheduler': 'fifo', 'max_concurrent_trials': 1}\n")
    storage = tmp_path / "tune"
    args = [str(sweep), "--data", str(data), "--cutoff-quantile", QUANTILE, "--name", "killed", "--storage-path", str(storage),
            "--registry", str(tmp_path / "registry"), "-q"]
    # a second driver on the session's cluster, killed (SIGKILL) once one trial finished and the next is mid-way
    # Tune saves its experiment state every 10 s at the least ("auto"); a tiny trial can start, run and end inside that
    # period, so the sweep could finish before any state recorded one trial done and the next one running (seen in CI)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
    driver = subprocess.Popen([sys.executable, "-m", "raylurm.tune", *args, "--address", ray_runtime.get_runtime_context().gcs_address],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    experiment = storage / "killed" / "lurm"
    deadline = time.monotonic() + 300
    finished = in_flight = None
    while time.monotonic() < deadline and driver.poll() is None:
        counts = {p.parent.name: _lines(p) for p in experiment.glob("*/result.json")}
        recorded = _terminated(experiment)  # finished as far as Tune's saved experiment state knows
        finished = [t for t, n in counts.items() if n >= EPOCHS and _trial_id(experiment / t) in recorded]
        in_flight = [t for t, n in counts.items() if 1 <= n < EPOCHS]
        if finished and in_flight:
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the sweep ended before it could be interrupted"
    assert finished and in_flight, "timed out waiting for a finished and an unfinished trial"
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    before = {p.parent.name: p.read_text() for p in experiment.glob("*/result.json")}

    assert tune_main([*args, "--resume"]) == 0
    trials = results.load_trials(storage / "killed")["lurm"]
    assert len(trials) == 3
    for trial in trials:
        epochs = [r["epoch"] for r in trial.epochs]
        assert trial.error is None and max(epochs) == EPOCHS, (trial.trial_id, epochs)
    done = finished[0]
    assert (experiment / done / "result.json").read_text() == before[done], "a finished trial is not rerun"
    resumed = next(t for t in trials if t.path.name == in_flight[0])
    epochs = [r["epoch"] for r in resumed.epochs]
    assert epochs[-1] == EPOCHS and epochs.count(1) == 1, f"continued from its last checkpoint, not from scratch: {epochs}"
    assert Registry(tmp_path / "registry").current("lurm") is not None
    assert json.loads((storage / "killed" / "sweep.json").read_text())["sweep"] == "resume"


def _serving_inputs_match_the_pipeline(reg: Registry, data: Path) -> None:
    """An entry alone turns raw events into exactly the inputs the Ray Data pipeline built (same embedding)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from raylurm.evaluate.split import Split, default_root
    from raylurm.serving.features import EventEncoder
    from raylurm.train.batch import collate
    from raylurm.train.checkpoint import load_model

    split = Split.load(default_root(data, SplitConfig(cutoff_quantile=float(QUANTILE))))
    events = pads.dataset(split.dataset("history") / "events").to_table()
    users = sorted(set(events["user_id"].to_pylist()), key=str)[:6]
    requests = [[{k: r[k] for k in ("item_id", "timestamp", "behavior")} for r in events.filter(pc.equal(events["user_id"], u)).to_pylist()]
                for u in users]
    reference = pq.read_table(split.boi("history") / "users")
    position = {str(u): i for i, u in enumerate(reference["user_id"].to_pylist())}
    for method in ("lurm", "dss"):
        entry = reg.current(method)
        model, meta = load_model(entry.path)
        encoded = EventEncoder(entry.path / "boi").encode(users, requests)
        order = [position[u] for u in encoded.rows["user_id"].to_pylist()]
        scales = tuple(meta["info"]["scales"])
        served = model.embed(collate(encoded.rows, scales)).numpy()
        built = model.embed(collate(reference.take(order), scales)).numpy()
        np.testing.assert_allclose(served, built, rtol=0, atol=1e-6)
