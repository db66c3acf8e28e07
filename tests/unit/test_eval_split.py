"""The harness's split: what pretraining and each task input may contain (leakage rules)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from raylurm.evaluate import tasks
from raylurm.evaluate.split import HOLDOUT, Split, SplitConfig, _write_parts, split_id


def make_dataset(root: Path, events: list[tuple], items: dict[str, list[str]]) -> Path:
    (root / "events").mkdir(parents=True)
    users, item_ids, times = zip(*events)
    pq.write_table(pa.table({"user_id": list(users), "item_id": list(item_ids), "timestamp": pa.array(times, pa.int64()),
                             "behavior": ["click"] * len(events)}), root / "events" / "part-00000.parquet")
    pq.write_table(pa.table({"item_id": list(items), "text": list(items), "category": list(items.values())}), root / "items.parquet")
    people = sorted(set(users))
    pq.write_table(pa.table({"user_id": people, "gender": ["F", "M"] * (len(people) // 2) + ["F"] * (len(people) % 2)}),
                   root / "users.parquet")
    (root / "manifest.json").write_text(json.dumps({"name": "tiny", "counts": {"events": len(events)}, "time_span": [min(times), max(times)]}))
    return root


def events_of(directory: Path) -> list[dict]:
    return pads.dataset(directory / "events", format="parquet").to_table().to_pylist()


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, dict]:
    log = [("a", "i1", 100), ("a", "i2", 200), ("a", "x", 300), ("a", "y", 300), ("a", "i5", 500),
           ("b", "i1", 150), ("b", "i3", 250), ("b", "i4", 600),
           ("c", "i2", 50), ("c", "i5", 700)]
    items = {"i1": ["Drama"], "i2": ["Comedy"], "i3": ["Drama", "War"], "i4": ["Horror"], "i5": ["Comedy", "Horror"],
             "x": ["Drama"], "y": ["War"]}
    data = make_dataset(tmp_path / "data", log, items)
    out = tmp_path / "split"
    meta = _write_parts(data, SplitConfig(cutoff_quantile=0.7), out)
    return out, meta


def test_parts_by_hand(tiny):
    out, meta = tiny
    assert meta["cutoff"] == 500  # 0.7 quantile ("higher") of the 10 event times
    parts = {p: sorted((e["user_id"], e["item_id"], e["timestamp"]) for e in events_of(out / "datasets" / p))
             for p in ("pretrain", "history", "history_test", "before_cutoff")}
    assert parts["pretrain"] == [("a", "i1", 100), ("a", "i2", 200), ("a", "x", 300), ("b", "i1", 150)]
    assert parts["history"] == [("a", "i1", 100), ("a", "i2", 200), ("a", "x", 300), ("b", "i1", 150)]
    assert parts["history_test"] == [("a", "i1", 100), ("a", "i2", 200), ("a", "x", 300), ("a", "y", 300),
                                     ("b", "i1", 150), ("b", "i3", 250), ("c", "i2", 50)]
    assert parts["before_cutoff"] == [("a", "i1", 100), ("a", "i2", 200), ("a", "x", 300), ("a", "y", 300),
                                      ("b", "i1", 150), ("b", "i3", 250), ("c", "i2", 50)]


def test_targets_break_time_ties_by_log_order_and_need_three_events(tiny):
    out, _ = tiny
    targets = pq.read_table(out / "targets.parquet").to_pylist()
    assert targets == [
        {"user_id": "a", "valid_item": "y", "valid_time": 300, "test_item": "i5", "test_time": 500},
        {"user_id": "b", "valid_item": "i3", "valid_time": 250, "test_item": "i4", "test_time": 600},
    ]  # "c" has two events: no history left to score from


def test_future_categories_are_those_at_or_after_the_cutoff(tiny):
    out, _ = tiny
    future = {r["user_id"]: r["categories"] for r in pq.read_table(out / "future.parquet").to_pylist()}
    assert future == {"a": ["Comedy", "Horror"], "b": ["Horror"], "c": ["Comedy", "Horror"]}


def test_leakage_rules_hold_on_random_logs(tmp_path):
    rng = np.random.default_rng(3)
    log = [(f"u{rng.integers(30)}", f"i{rng.integers(40)}", int(rng.integers(1_000, 1_300))) for _ in range(600)]
    data = make_dataset(tmp_path / "data", log, {f"i{k}": [f"c{k % 4}"] for k in range(40)})
    meta = _write_parts(data, SplitConfig(cutoff_quantile=0.8), tmp_path / "split")
    cutoff = meta["cutoff"]
    pretrain = events_of(tmp_path / "split" / "datasets" / "pretrain")
    before = events_of(tmp_path / "split" / "datasets" / "before_cutoff")
    assert pretrain and max(e["timestamp"] for e in pretrain) < cutoff, "no event after the cutoff in pretraining data"
    assert max(e["timestamp"] for e in before) < cutoff, "no event after the cutoff in the category-preference input"
    full = Counter((u, i, t) for u, i, t in log)
    held = pq.read_table(tmp_path / "split" / "targets.parquet").to_pylist()
    for part, removed in (("pretrain", ("valid", "test")), ("history", ("valid", "test")), ("history_test", ("test",))):
        seen = Counter((e["user_id"], e["item_id"], e["timestamp"]) for e in events_of(tmp_path / "split" / "datasets" / part))
        for row in held:
            # the held-out events themselves are gone (an identical duplicate event may remain)
            gone = Counter((row["user_id"], row[f"{which}_item"], row[f"{which}_time"]) for which in removed)
            assert all(seen[key] <= full[key] - k for key, k in gone.items()), (part, row)
    # each user's history_test is exactly its log minus one event, history minus two (users with >= 3 events)
    per_user = Counter(u for u, _, _ in log)
    hist = Counter(e["user_id"] for e in events_of(tmp_path / "split" / "datasets" / "history"))
    hist_test = Counter(e["user_id"] for e in events_of(tmp_path / "split" / "datasets" / "history_test"))
    assert all(hist[u] == n - HOLDOUT and hist_test[u] == n - 1 for u, n in per_user.items() if n >= 3)


def test_probe_user_splits_are_disjoint_and_cover_everyone():
    for seed in range(5):
        train, valid, test = tasks.assign(101, seed)
        assert len(set(train) | set(valid) | set(test)) == 101
        assert not set(train) & set(test) and not set(valid) & set(test) and not set(train) & set(valid)
        assert (len(train), len(valid), len(test)) == (61, 20, 20)
    assert not np.array_equal(tasks.assign(101, 0)[2], tasks.assign(101, 1)[2]), "seeds resample the users"


def test_probe_refuses_overlapping_train_and_validation_users():
    from raylurm.evaluate import probe

    features = probe.Features(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="overlap"):
        probe.fit(features, np.zeros(10, dtype=np.int64), np.arange(6), np.arange(5, 8), "softmax", 2, lambda p, r: 0.0, 0)


def test_evaluator_refuses_a_checkpoint_of_another_split(tmp_path, tiny):
    from raylurm.evaluate.harness import check_split

    out, meta = tiny
    split = Split(out, {**meta, "vocabulary_hash": "v1"})
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for seen, match in ((None, "all events"), ("0123456789ab", "split 0123456789ab")):
        (checkpoint / "meta.json").write_text(json.dumps({"method": "lurm", "split": seen, "vocabulary_hash": "v1"}))
        with pytest.raises(ValueError, match=match):
            check_split(checkpoint, split)
    (checkpoint / "meta.json").write_text(json.dumps({"method": "lurm", "split": split.id, "vocabulary_hash": "v1"}))
    assert check_split(checkpoint, split)["method"] == "lurm"


def test_split_id_depends_on_the_config(tiny, tmp_path):
    data = tmp_path / "data"
    assert split_id(data, SplitConfig(0.7)) != split_id(data, SplitConfig(0.8))
    assert split_id(data, SplitConfig(0.7)) == split_id(data, SplitConfig(0.7))
