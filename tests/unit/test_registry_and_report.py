"""The best-checkpoint registry and the sweep report, on hand-made experiment directories (no Ray)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from raylurm.registry import Registry
from raylurm.registry.__main__ import main as registry_main
from raylurm.tune import report, results
from raylurm.tune.__main__ import main as tune_main


def _checkpoint(directory: Path, method: str = "lurm", split: str = "s1") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"w": torch.ones(2)}, directory / "model.pt")
    torch.save({"state": {}}, directory / "optimizer.pt")
    (directory / "meta.json").write_text(json.dumps({"method": method, "split": split, "epoch": 1}))
    return directory


def _trial(experiment: Path, method: str, trial_id: str, config: dict, curve: list[float], error: bool = False) -> Path:
    trial = experiment / method / f"trial_{trial_id}_x"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps(config))
    rows = []
    for epoch, value in enumerate(curve, 1):
        path = _checkpoint(trial / "train" / f"checkpoint_{epoch}", method)
        rows.append({"trial_id": trial_id, "epoch": epoch, "val_auc": value, "val_auc/gender": value, "loss": 1.0 / epoch,
                     "checkpoint_path": str(path)})
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if error:
        (trial / "error.txt").write_text("boom")
    return trial


@pytest.fixture
def experiment(tmp_path) -> Path:
    exp = tmp_path / "tune" / "study"
    exp.mkdir(parents=True)
    (exp / "sweep.json").write_text(json.dumps({
        "sweep": "study", "file": "tune_configs/study.py", "methods": {"lurm": {}, "dss": {}, "adaptssr": {}},
        "train": {"epochs": 3}, "search": {"num_samples": 1, "scheduler": "fifo"}, "split": "s1", "split_root": "nowhere",
        "dataset": "/data/ml-1m", "metric": "val_auc", "mode": "max", "started": "2026-11-23T00:00:00+00:00"}))
    lurm = [("both", 4, 32, [0.60, 0.70, 0.69]), ("month", 4, 32, [0.60, 0.65, 0.66]), ("year", 4, 32, [0.55, 0.60, 0.61]),
            ("both", 1, 128, [0.60, 0.64, 0.65])]
    for i, (scales, anchors, width, curve) in enumerate(lurm):
        _trial(exp, "lurm", f"l_{i}", {"scales": scales, "num_anchors": anchors, "hidden_dim": width}, curve)
    for i, (lam, value) in enumerate([(0.0, 0.60), (0.25, 0.66), (0.5, 0.68), (1.0, 0.62)]):
        _trial(exp, "dss", f"d_{i}", {"selection_fraction": lam}, [value - 0.01, value])
    _trial(exp, "adaptssr", "a_0", {"lambda_mode": "per_sample", "fixed_lambda": 0.5}, [0.600, 0.602, 0.603])
    _trial(exp, "adaptssr", "a_1", {"lambda_mode": "fixed", "fixed_lambda": 0.5}, [0.600, 0.601, 0.601])
    _trial(exp, "adaptssr", "a_2", {"lambda_mode": "batch_mean", "fixed_lambda": 0.5}, [0.5], error=True)
    return exp


def test_results_pick_each_methods_best_epoch(experiment):
    trials = results.load_trials(experiment)
    assert {m: len(t) for m, t in trials.items()} == {"lurm": 4, "dss": 4, "adaptssr": 3}
    best = results.best_trials(trials)
    assert best["lurm"].trial_id == "l_0" and best["lurm"].best["epoch"] == 2, "the best epoch, not the last"
    assert best["dss"].config["selection_fraction"] == 0.5
    statuses = {t.trial_id: t.status(3) for t in trials["adaptssr"]}
    assert statuses == {"a_0": "complete", "a_1": "complete", "a_2": "error"}
    assert trials["dss"][0].status(3) == "stopped at epoch 2"


def test_ablations_read_directions_from_the_arms(experiment):
    found = {f["name"]: f for f in report.ablations(results.load_trials(experiment))}
    scale = found["LURM multi-scale vs one scale"]
    assert scale["verdict"] == "holds" and scale["delta"] == pytest.approx(0.70 - 0.66)
    anchors = found["LURM M anchors vs 1 anchor (total width 128)"]
    assert anchors["delta"] == pytest.approx(0.70 - 0.65) and anchors["verdict"] == "holds"
    curve = found["DSS λ curve (sample selection)"]
    assert [a[0] for a in curve["arms"]] == ["λ=0", "λ=0.25", "λ=0.5", "λ=1"]
    assert curve["verdict"] == "holds" and "peak at λ=0.5" in curve["compared"]
    adapt = found["AdaptSSR adaptive vs fixed λ"]
    assert adapt["delta"] == pytest.approx(0.002) and adapt["verdict"] == "≈ (no difference)", "under the tolerance"


def test_report_cli_writes_markdown_and_plots(experiment, capsys):
    out = experiment.parent / "out"
    assert tune_main(["report", str(experiment), "--no-test", "--out", str(out), "-q"]) == 0
    text = (out / "REPORT.md").read_text()
    assert "| lurm | 4 | 4 | 0 | 0 | 0.7 |" in text
    assert "| AdaptSSR adaptive vs fixed λ |" in text and "≈ (no difference)" in text
    for name in ("lurm_hyperparameters.png", "dss_hyperparameters.png", "adaptssr_hyperparameters.png", "ablations.png"):
        assert (out / name).stat().st_size > 1000 and f"]({name})" in text
    assert capsys.readouterr().out.strip() == text.strip()


def test_report_on_a_non_experiment_is_a_clear_error(tmp_path, capsys):
    assert tune_main(["report", str(tmp_path / "nope"), "--no-test"]) == 2
    assert "no sweep experiment" in capsys.readouterr().err


def test_register_best_exports_promotes_and_keeps_the_better_entry(experiment, tmp_path):
    registry = Registry(tmp_path / "registry")
    exported = results.register_best(experiment, registry)
    entry, promoted = exported["lurm"]
    assert promoted and registry.current("lurm").name == entry.name == "study.l_0.e2"
    assert sorted(p.name for p in entry.path.iterdir()) == ["entry.json", "meta.json", "model.pt"], "no optimizer state"
    assert entry.record["metrics"]["val_auc"] == pytest.approx(0.70) and entry.record["config"]["scales"] == "both"
    assert entry.record["split"] == "s1" and entry.record["epoch"] == 2
    # a worse entry on the same split is registered, not promoted; a better one is promoted
    worse = registry.register(str(_checkpoint(tmp_path / "c1")), {"method": "lurm", "metric": "val_auc", "split": "s1",
                                                                   "metrics": {"val_auc": 0.5}}, name="worse")
    assert not registry.offer(worse) and registry.current("lurm").name == entry.name
    other_split = registry.register(str(_checkpoint(tmp_path / "c2")), {"method": "lurm", "metric": "val_auc", "split": "s2",
                                                                         "metrics": {"val_auc": 0.9}}, name="other")
    assert not registry.offer(other_split), "not comparable: another split"
    better = registry.register(str(_checkpoint(tmp_path / "c3")), {"method": "lurm", "metric": "val_auc", "split": "s1",
                                                                    "metrics": {"val_auc": 0.8}}, name="better")
    assert registry.offer(better) and registry.current("lurm").name == "better"
    assert not list((tmp_path / "registry" / "lurm").glob(".*tmp*")), "no temporary leftovers"


def test_registry_cli_lists_shows_and_promotes(experiment, tmp_path, capsys):
    root = tmp_path / "registry"
    results.register_best(experiment, Registry(root))
    assert registry_main(["--registry", str(root), "list"]) == 0
    listed = capsys.readouterr().out
    assert "* lurm" in listed and "study.l_0.e2" in listed and "* dss" in listed
    assert registry_main(["--registry", str(root), "show", "dss"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["selection_fraction"] == 0.5 and math.isclose(shown["metrics"]["val_auc"], 0.68)
    registry = Registry(root)
    other = registry.register(str(_checkpoint(tmp_path / "c4")), {"method": "lurm", "metric": "val_auc", "split": "s1",
                                                                   "metrics": {"val_auc": 0.1}}, name="manual")
    assert registry_main(["--registry", str(root), "-q", "promote", "lurm", other.name]) == 0
    assert Registry(root).current("lurm").name == "manual"
    assert registry_main(["--registry", str(root), "promote", "lurm", "missing"]) == 2
    assert "no lurm entry 'missing'" in capsys.readouterr().err


def test_tune_cli_refuses_bad_requests_before_starting_ray(tmp_path, capsys):
    assert tune_main([str(tmp_path / "none.py")]) == 2
    assert "no sweep file" in capsys.readouterr().err
    sweep = Path(__file__).resolve().parents[2] / "tune_configs" / "smoke.py"
    assert tune_main([str(sweep), "--resume"]) == 2
    assert "--resume needs the --name" in capsys.readouterr().err
    assert tune_main([str(sweep), "--method", "atrank"]) == 2
    assert "does not sweep ['atrank']" in capsys.readouterr().err


def test_pruning_keeps_each_trials_best_and_latest_checkpoint(experiment):
    trial = next(t for t in results.load_trials(experiment)["lurm"] if t.trial_id == "l_0")  # best epoch 2 of 3
    assert results.prune_checkpoints(experiment, "lurm") > 0
    assert sorted(p.name for p in (trial.path / "train").iterdir()) == ["checkpoint_2", "checkpoint_3"]
    assert results.best_trials(results.load_trials(experiment))["lurm"].best["checkpoint_path"].endswith("checkpoint_2")


def test_an_entry_carries_the_vocabulary_that_turns_events_into_inputs(tmp_path):
    boi = tmp_path / "boi"
    (boi / "vocabulary").mkdir(parents=True)
    (boi / "manifest.json").write_text(json.dumps({"vocabulary_hash": "h"}))
    (boi / "vocabulary" / "items.parquet").write_bytes(b"x")
    entry = Registry(tmp_path / "registry").register(str(_checkpoint(tmp_path / "c")), {"method": "lurm"}, name="e", boi_dir=boi)
    assert (entry.path / "boi" / "manifest.json").exists() and (entry.path / "boi" / "vocabulary" / "items.parquet").exists()
