"""The harness's bookkeeping without Ray: pretraining runs per method, subjects, the checkpoint's split."""

from __future__ import annotations

import json
import types

import pytest

from raylurm.evaluate import harness


def _checkpoint(root, name, seed, split="abc123"):
    path = root / name / "checkpoint_0"
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"method": "lurm", "split": split, "epoch": 3, "step": 30,
                                                "train": {"seed": seed, "batch_size": 8, "num_workers": 1},
                                                "method_config": {}}))
    return path


def test_pretrain_seeds_give_one_subject_per_run_and_their_own_random_init(tmp_path):
    runs = [_checkpoint(tmp_path, "lurm-eval-abc123", 0), _checkpoint(tmp_path, "lurm-eval-abc123-seed1", 1)]
    split = types.SimpleNamespace(id="abc123", boi=lambda part: tmp_path / "boi" / part)
    subjects = harness.subjects_for({"lurm": runs}, split, baselines=True)
    pretrained = [(s.name, s.run) for s in subjects if s.group == "pretrained"]
    random_init = [(s.name, s.run) for s in subjects if s.group == "random init"]
    assert pretrained == [("lurm", 0), ("lurm", 1)]
    assert random_init == [("lurm (random init)", 0), ("lurm (random init)", 1)]
    assert {s.name for s in subjects if s.group == "baseline"} == {"majority", "popularity", "raw BoI", "TF-IDF"}
    assert harness.runs_of({"lurm": runs[0]}) == {"lurm": [runs[0]]}
    assert [harness.run_name("lurm", split, s) for s in (0, 1)] == ["lurm-eval-abc123", "lurm-eval-abc123-seed1"]
    assert harness.result_in_run(tmp_path, "lurm-eval-abc123-seed1", split) == runs[1]
    assert harness.result_in_run(tmp_path, "lurm-eval-abc123", types.SimpleNamespace(id="other")) is None
    table = harness.checkpoint_table({"lurm": runs})
    assert "| lurm | 0 | 0 | 3 | 30 | 8 × 1 |" in table and "| lurm | 1 | 1 | 3 | 30 | 8 × 1 |" in table


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
