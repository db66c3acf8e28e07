"""Dataset names: the bundled ML-1M and the generated lifelong benchmark resolve to prepared directories."""

from __future__ import annotations

import dataclasses

import pytest

from raylurm.data import datasets
from raylurm.data.errors import DataError
from raylurm.data.prepare import load_manifest


def test_the_lifelong_benchmark_is_named_and_lifelong() -> None:
    config = datasets.GENERATED["synth-lifelong"]
    assert "synth-lifelong" in datasets.names() and "ml-1m" in datasets.names()
    assert config.users >= 20_000 and config.years >= 10  # the floor
    assert config.users * config.years * 12 * config.events_per_user_month > 5e6  # a log, not a toy


def test_a_generated_name_is_generated_once_then_resolved(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAYLURM_HOME", str(tmp_path))
    small = dataclasses.replace(datasets.GENERATED["synth-lifelong"], users=50, years=2, items=200, num_topics=20,
                                num_categories=4)
    monkeypatch.setitem(datasets.GENERATED, "synth-lifelong", small)
    path = datasets.resolve("synth-lifelong")
    manifest = load_manifest(path)
    assert path == datasets.default_dir("synth-lifelong") and manifest["counts"]["users"] == 50
    assert manifest["name"] == "synth-lifelong"  # its splits, results section and vocabulary go by the name
    stamp = (path / "manifest.json").stat().st_mtime_ns
    assert datasets.resolve("synth-lifelong") == path and (path / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="synth-lifelong"):
        datasets.resolve("no-such-dataset")


def test_a_generated_name_whose_config_changed_is_generated_again(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("RAYLURM_HOME", str(tmp_path))
    small = dataclasses.replace(datasets.GENERATED["synth-lifelong"], users=40, years=2, items=200, num_topics=20,
                                num_categories=4)
    monkeypatch.setitem(datasets.GENERATED, "synth-lifelong", small)
    path = datasets.resolve("synth-lifelong")
    monkeypatch.setitem(datasets.GENERATED, "synth-lifelong", dataclasses.replace(small, label_strength=1.0))
    with caplog.at_level("WARNING", logger="raylurm.data.datasets"):
        assert datasets.resolve("synth-lifelong") == path
    assert "label_strength differ" in caplog.text  # not the stale one, silently
    assert load_manifest(path)["config"]["label_strength"] == 1.0
