"""The harness's bookkeeping without Ray: pretraining runs per method, subjects, the checkpoint's split."""

from __future__ import annotations

import json
import types

import pytest

from raylurm.evaluate import harness


def _checkpoint(root, name, seed, split="abc123"):
    path = root / name / "checkpoint_0"
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"method": name.split("-")[0], "split": split, "epoch": 3, "step": 30,
                                                "vocabulary_hash": "v1",
                                                "train": {"seed": seed, "batch_size": 8, "num_workers": 1},
                                                "method_config": {}}))
    return path


def test_pretrain_seeds_give_one_subject_per_run_and_their_own_random_init(tmp_path):
    runs = [_checkpoint(tmp_path, "lurm-eval-abc123", 0), _checkpoint(tmp_path, "lurm-eval-abc123-seed1", 1)]
    split = types.SimpleNamespace(id="abc123", boi=lambda part: tmp_path / "boi" / part, meta={"vocabulary_hash": "v1"})
    subjects = harness.subjects_for({"lurm": runs}, split, baselines=True)
    pretrained = [(s.name, s.run) for s in subjects if s.group == "pretrained"]
    random_init = [(s.name, s.run) for s in subjects if s.group == "random init"]
    assert pretrained == [("lurm", 0), ("lurm", 1)]
    assert random_init == [("lurm (random init)", 0), ("lurm (random init)", 1)]
    assert {s.name for s in subjects if s.group == "baseline"} == {"majority", "popularity", "raw BoI", "TF-IDF"}
    # what reads interests is stored under its vocabulary (a rebuilt split's BoI gets new entries)
    assert {s.name: s.vocabulary for s in subjects} == {"lurm": "v1", "lurm (random init)": "v1", "raw BoI": "v1",
                                                        "majority": None, "popularity": None, "TF-IDF": None}
    assert harness.runs_of({"lurm": runs[0]}) == {"lurm": [runs[0]]}
    assert [harness.run_name("lurm", split, s) for s in (0, 1)] == ["lurm-eval-abc123", "lurm-eval-abc123-seed1"]
    assert harness.result_in_run(tmp_path, "lurm-eval-abc123-seed1", split) == runs[1]
    assert harness.result_in_run(tmp_path, "lurm-eval-abc123", types.SimpleNamespace(id="other")) is None
    table = harness.checkpoint_table({"lurm": runs})
    assert "| lurm | 0 | 0 | 3 | 3 | – | no | – | 30 | 8 × 1 |" in table and "| lurm | 1 | 1 | 3 | 3 | – | no | – | 30 | 8 × 1 |" in table


def _log_epochs(logdir, epochs):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(logdir))
    for step, loss, value in epochs:
        for key, v in (("loss", loss), ("val_ndcg10", value), ("epoch_seconds", 60.0), ("validation_seconds", 2.0)):
            writer.add_scalar(f"train/{key}", v, global_step=step)
    writer.close()


def test_the_training_table_reads_the_runs_curves(tmp_path):
    from raylurm.train.curves import read_curves, summarise_run

    path = _checkpoint(tmp_path, "sasrec-eval-abc123", 0)
    meta = json.loads((path / "meta.json").read_text())
    meta.update(method="sasrec", validation_metric="val_ndcg10", best_value=0.2, epoch=2, step=20)
    (path / "meta.json").write_text(json.dumps(meta))
    _log_epochs(path.parent / "tensorboard", [(10, 5.0, 0.1), (20, 4.0, 0.2), (30, 3.9, 0.15)])
    import time

    time.sleep(1.1)  # a resumed run: a second file, later, redoing the last epoch
    _log_epochs(path.parent / "tensorboard", [(30, 3.8, 0.19), (40, 3.7, 0.18)])
    curves = read_curves(path.parent)
    assert curves["epoch"].tolist() == [1, 2, 3, 4] and curves["loss"].tolist() == pytest.approx([5.0, 4.0, 3.8, 3.7])
    assert summarise_run(curves, "val_ndcg10") == {"epochs": 4, "best_epoch": 2, "best_value": pytest.approx(0.2), "seconds": 248.0}
    table = harness.checkpoint_table({"sasrec": path})
    assert "| sasrec | 0 | 0 | 4 | 2 | val_ndcg10 0.2000 | no | 4.1 min | 20 | 8 × 1 |" in table
    assert read_curves(tmp_path / "nothing").empty
    from raylurm.evaluate import report

    plot = report.training_curves({"sasrec": path.parent, "none": tmp_path / "nothing"}, tmp_path / "curves.png")
    assert plot == tmp_path / "curves.png" and plot.stat().st_size > 1000
    assert report.training_curves({"none": tmp_path / "nothing"}, tmp_path / "none.png") is None


def test_the_checkpoint_names_its_split(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYLURM_HOME", str(tmp_path / "home"))
    split_dir = tmp_path / "home" / "splits" / "mine-abc123"
    split_dir.mkdir(parents=True)
    (split_dir / "split.json").write_text(json.dumps({"id": "abc123", "dataset": "mine"}))
    found = harness.split_of_checkpoint(_checkpoint(tmp_path, "run", 0))
    assert found.id == "abc123" and found.root == split_dir
    with pytest.raises(FileNotFoundError, match="split zzz"):
        harness.split_of_checkpoint(_checkpoint(tmp_path, "run2", 0, split="zzz"))
    with pytest.raises(ValueError, match="all events"):
        harness.split_of_checkpoint(_checkpoint(tmp_path, "run3", 0, split=None))


def test_a_paper_loss_row_shares_its_methods_random_init(tmp_path):
    runs = {"dss": _checkpoint(tmp_path, "dss-eval-abc123", 0), harness.ablation_label("dss"): _checkpoint(tmp_path, "dss-paper-loss-x", 0)}
    split = types.SimpleNamespace(id="abc123", boi=lambda part: tmp_path / "boi" / part, meta={"vocabulary_hash": "v1"})
    subjects = harness.subjects_for(runs, split, baselines=True)
    assert all(s.vocabulary is None for s in subjects if s.name.startswith("dss")), "DSS reads item sequences, no interests"
    assert [s.name for s in subjects if s.group == "pretrained"] == ["dss", "dss (paper loss)"]
    assert [s.name for s in subjects if s.group == "random init"] == ["dss (random init)"]
    assert harness.ablation_run_name("dss", split) == "dss-paper-loss-eval-abc123"
    from raylurm.methods import METHODS

    assert {name for name, cls in METHODS.items() if getattr(cls, "paper_loss", None)} == {"sasrec", "dss", "atrank"}


def test_a_lurm_run_of_the_splits_earlier_vocabulary_is_refused_with_what_to_do(tmp_path):
    """A rebuilt split keeps its id, so a LURM run's name is unchanged: resuming it would mix vocabularies."""
    _checkpoint(tmp_path, "lurm-eval-abc123", 0)
    _checkpoint(tmp_path, "dss-eval-abc123", 0)
    split = types.SimpleNamespace(id="abc123", meta={"vocabulary_hash": "v2"})
    with pytest.raises(ValueError, match="mv .*lurm-eval-abc123 .*lurm-eval-abc123.old"):
        harness.refuse_stale_run(tmp_path, "lurm-eval-abc123", split)
    harness.refuse_stale_run(tmp_path, "dss-eval-abc123", split)  # reads item sequences only
    harness.refuse_stale_run(tmp_path, "lurm-eval-none", split)  # no run yet
    harness.refuse_stale_run(tmp_path, "lurm-eval-abc123", types.SimpleNamespace(id="abc123", meta={"vocabulary_hash": "v1"}))
