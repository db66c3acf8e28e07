"""Pretraining on Ray Train: every method with 2 workers, checkpoints, a killed worker resumes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raylurm.methods import METHODS
from raylurm.train.checkpoint import load_model, read_meta
from raylurm.train.config import TrainConfig
from raylurm.train.fit import fit

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_with_two_workers(boi_dir, tmp_path, method):
    train = TrainConfig(method=method, epochs=1, num_workers=2, batch_size=8, max_steps_per_epoch=3)
    result = fit(boi_dir, train, overrides=[], name=f"t-{method}", storage_path=str(tmp_path))
    assert result.error is None
    assert math.isfinite(result.metrics["loss"]) and result.metrics["step"] == 3
    if method == "lurm":  # its views are drawn from the events on the workers (raylurm.train.views), reported per epoch
        assert 0.0 <= result.metrics["identical_views"] <= 1.0
        assert result.metrics["loss_chance"] == pytest.approx(math.log(2 * 16 - 1))  # 2 workers x 8 users gathered
    meta = read_meta(result.checkpoint.path)
    assert meta["method"] == method and meta["vocabulary_hash"] == read_vocab_hash(boi_dir)
    model, _ = load_model(result.checkpoint.path)
    assert model.representation_dim > 0
    assert list((tmp_path / f"t-{method}" / "tensorboard").glob("events.out.tfevents.*")), "TensorBoard logs written"


def read_vocab_hash(boi_dir: Path) -> str:
    import json

    return json.loads((boi_dir / "manifest.json").read_text())["vocabulary_hash"]


def test_killed_worker_restarts_from_last_checkpoint(boi_dir, tmp_path):
    train = TrainConfig(method="lurm", epochs=3, num_workers=2, batch_size=8, max_steps_per_epoch=2, fault_step=3,
                        max_failures=2)
    result = fit(boi_dir, train, overrides=["num_anchors=2", "hidden_dim=16"], name="fault", storage_path=str(tmp_path))
    assert result.error is None
    assert (tmp_path / "fault" / ".fault-injected").exists(), "the worker really was killed"
    # Epoch 1 (steps 1-2) was checkpointed; the kill at step 3 restarts epoch 2 from step 2, not from 0.
    assert result.metrics["epoch"] == 3 and result.metrics["step"] == 6


def test_rerun_with_same_name_resumes(boi_dir, tmp_path):
    first = fit(boi_dir, TrainConfig(method="dss", epochs=1, num_workers=2, batch_size=8, max_steps_per_epoch=2),
                name="resume", storage_path=str(tmp_path))
    assert first.metrics["step"] == 2
    second = fit(boi_dir, TrainConfig(method="dss", epochs=2, num_workers=2, batch_size=8, max_steps_per_epoch=2),
                 name="resume", storage_path=str(tmp_path))
    assert second.metrics["epoch"] == 2 and second.metrics["step"] == 4


def test_sequence_methods_train_on_windows_over_the_whole_history(boi_dir, tmp_path):
    """With rows capped at 8 events, sasrec trains on every window of 9 (each transition once): more batches than rows."""
    import numpy as np
    import pyarrow.dataset as pads

    from raylurm.boi.build import BuildConfig, build
    from raylurm.boi.embeddings import ItemEmbeddingConfig
    from raylurm.boi.pipeline import BoiConfig
    from raylurm.boi.vocabulary import VocabularyConfig
    from raylurm.train.windows import window_bounds

    config = BuildConfig(embedding=ItemEmbeddingConfig(method="cooccurrence", dim=16), vocabulary=VocabularyConfig(num_interests=24),
                         boi=BoiConfig(on_unknown_items="skip", max_sequence_length=8))
    capped = tmp_path / "capped"
    build(boi_dir.parent / "data", capped, config, embeddings_dir=boi_dir / "item_embeddings",
          vocabulary_dir=boi_dir / "vocabulary", progress=False)
    rows = pads.dataset(capped / "users").to_table(columns=["items", "earlier_items"]).to_pylist()
    lengths = np.array([len(r["earlier_items"]) + len(r["items"]) for r in rows])
    assert (lengths > 8).sum() > len(rows) // 2  # most histories are longer than a row
    windows = len(window_bounds(lengths, 9)[0])
    result = fit(capped, TrainConfig(method="sasrec", epochs=1, num_workers=1, batch_size=4), name="windows",
                 storage_path=str(tmp_path / "runs"))
    assert result.error is None
    assert result.metrics["batches"] == windows // 4 > len(rows) // 4
