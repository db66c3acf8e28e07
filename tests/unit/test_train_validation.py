"""Validation inside the training loop (no Ray): the next-item metric, the stop rule, the run's result."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raylurm.train import checkpoint as ckpt
from raylurm.train import loop
from raylurm.train.batch import synthetic_rows
from raylurm.train.config import TrainConfig
from raylurm.train.validation import NextItemValidation

NUM_ITEMS = 12


class Oracle(torch.nn.Module):
    """Scores item ``known[user row]`` highest, then the items in id order (a scorer with a known rank)."""

    def __init__(self, top: list[int]):
        super().__init__()
        self.top = top

    def score_items(self, batch, item_ids):
        scores = -item_ids.float().expand(len(batch["lengths"]), -1).clone()  # item 0 best, then 1, ...
        for row, item in enumerate(self.top[:len(scores)]):
            scores[row, item] = 100.0
        self.top = self.top[len(scores):]
        return scores


def _boi(tmp_path, targets: dict[int, int]):
    boi = tmp_path / "boi"
    (boi / "vocabulary").mkdir(parents=True)
    (boi / "users").mkdir()
    pq.write_table(pa.table({"item_id": [f"i{k}" for k in range(NUM_ITEMS)]}), boi / "vocabulary" / "items.parquet")
    rows = synthetic_rows(len(targets), 5, NUM_ITEMS, num_behaviors=1, max_events=3, seed=1)
    rows = rows.set_column(0, "user_id", pa.array(sorted(targets), pa.int64()))
    items = [[0, 1] for _ in targets]  # every user's history holds items 0 and 1 (masked out)
    rows = rows.set_column(rows.schema.get_field_index("items"), "items", pa.array(items, pa.list_(pa.int32())))
    pq.write_table(rows, boi / "users" / "part-0.parquet")
    path = tmp_path / "targets.parquet"
    pq.write_table(pa.table({"user_id": list(targets), "valid_item": [f"i{v}" for v in targets.values()]}), path)
    return boi, path


def test_next_item_metric_ranks_the_validation_item_with_history_masked(tmp_path):
    # users 10, 11, 12 with validation items 5, 2, 9; the oracle puts user 10's item first, the others in id order
    boi, targets = _boi(tmp_path, {10: 5, 11: 2, 12: 9})
    validation = NextItemValidation(boi, targets)
    out = validation.score(Oracle([5, 0, 0]), ("month", "year"))
    # ranks: user 10 -> 0; user 11: items 0, 1 masked (history), so item 2 is first -> 0; user 12: 2..8 ahead -> 7
    ranks = np.array([0, 0, 7])
    assert out["val_ndcg10"] == pytest.approx(np.mean(1 / np.log2(ranks + 2)))
    assert out["val_hr10"] == 1.0
    assert NextItemValidation(boi, targets, max_users=2).table.num_rows == 2


class FakeValidation:
    metric = "val_x"

    def __init__(self, values):
        self.values = list(values)

    def score(self, model, scales):
        return {"val_x": self.values.pop(0)}


@pytest.mark.parametrize("values,patience,epochs,attached,stopped_at", [
    ([0.1, 0.2, 0.15, 0.18, 0.3, 0.1, 0.1, 0.1], 2, 10, [1, 2, 4], 4),  # best 2, two epochs without better: stop at 4
    ([0.1, 0.2, 0.15, 0.18, 0.3, 0.1, 0.1, 0.1, 0.5], 3, 10, [1, 2, 5, 8], 8),  # best 5, stop 3 epochs later
    ([0.1, 0.2, 0.3], 2, 3, [1, 2, 3], 3),  # the last epoch ends it
    ([0.3, 0.1, 0.1, 0.1], None, 4, [1, 4], 4),  # no patience: train every epoch, keep improvements and the last
])
def test_the_tracker_keeps_improvements_and_stops_on_patience(monkeypatch, values, patience, epochs, attached, stopped_at):
    monkeypatch.setattr(loop, "for_run", lambda model, boi, users: FakeValidation(values))
    train = TrainConfig(epochs=epochs, patience=patience)
    tracker = loop._Tracker({"validation_boi": "x"}, train, {}, torch.nn.Linear(1, 1), type("I", (), {"scales": ()})(), 0)
    got = []
    for epoch in range(1, train.epochs + 1):
        metrics = {}
        attach, stop = tracker.after_epoch(epoch, metrics, None)
        assert metrics["val_x"] == values[epoch - 1]
        if attach:
            got.append(epoch)
        if stop:
            break
    assert got == attached and epoch == stopped_at
    assert tracker.best_value == max(values[:stopped_at]) and tracker.meta(early=stopped_at < train.epochs)["best_epoch"] == \
        1 + int(np.argmax(values[:stopped_at]))


def test_without_a_split_every_epoch_is_kept():
    tracker = loop._Tracker({}, TrainConfig(epochs=3), {}, torch.nn.Linear(1, 1), type("I", (), {"scales": ()})(), 0)
    assert [tracker.after_epoch(e, {}, None) for e in (1, 2, 3)] == [(True, False), (True, False), (True, True)]
    assert tracker.meta(early=False) == {}


def _checkpoint(run, epoch, value=None, early=False, split="s"):
    path = run / f"checkpoint_{epoch:03d}"
    path.mkdir(parents=True)
    meta = {"method": "sasrec", "epoch": epoch, "split": split}
    if value is not None:
        meta.update(validation={"val_x": value}, validation_metric="val_x", stopped_early=early)
    (path / "meta.json").write_text(json.dumps(meta))
    os.utime(path, (epoch, epoch))
    return path


def test_the_run_result_is_the_best_epoch_and_a_stopped_run_is_finished(tmp_path):
    run = tmp_path / "run"
    best = _checkpoint(run, 4, 0.30)
    _checkpoint(run, 6, 0.25, early=True)
    assert ckpt.best_in_run(run, "s") == best
    assert ckpt.run_finished(run, epochs=100, split="s") and not ckpt.run_finished(run, epochs=100, split="other")
    plain = tmp_path / "plain"
    _checkpoint(plain, 2)
    last = _checkpoint(plain, 3)
    assert ckpt.best_in_run(plain) == last and ckpt.run_finished(plain, 3) and not ckpt.run_finished(plain, 4)
    nan = tmp_path / "nan"
    _checkpoint(nan, 1, math.nan)
    last = _checkpoint(nan, 2, math.nan)
    assert ckpt.best_in_run(nan) == last, "no finite validation value: the latest epoch"
    assert ckpt.best_in_run(tmp_path / "none") is None
