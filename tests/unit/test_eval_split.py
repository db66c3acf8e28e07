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

from raylurm.boi.pipeline import BoiConfig, EventMapper, behaviors_of, build_user_rows
from raylurm.data.errors import DataError
from raylurm.evaluate.split import HOLDOUT, PARTS, Split, SplitConfig, _write_parts, split_id


def write_events(root: Path, events: list[tuple], shards: int = 1) -> None:
    """``events``: (user, item, time) or (user, item, time, behaviour); written as ``shards`` files."""
    (root / "events").mkdir(parents=True, exist_ok=True)
    for old in (root / "events").glob("*.parquet"):
        old.unlink()
    for shard in range(shards):
        rows = events[shard::shards]
        users, item_ids, times = [e[0] for e in rows], [e[1] for e in rows], [e[2] for e in rows]
        behaviors = [e[3] if len(e) > 3 else "click" for e in rows]
        pq.write_table(pa.table({"user_id": users, "item_id": item_ids, "timestamp": pa.array(times, pa.int64()),
                                 "behavior": behaviors}), root / "events" / f"part-{shard:05d}.parquet")


def make_dataset(root: Path, events: list[tuple], items: dict[str, list[str]]) -> Path:
    """A prepared dataset; ``items.parquet`` keeps the dict's order (the vocabulary's item order)."""
    users, _, times = zip(*[e[:3] for e in events])
    write_events(root, events)
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
    split = Split(out, meta)
    parts = {p: sorted((e["user_id"], e["item_id"], e["timestamp"]) for e in events_of(split.dataset(p))) for p in PARTS}
    # pretrain = every event but each user's last two, also those at or after the cutoff (none here)
    assert parts["pretrain"] == [("a", "i1", 100), ("a", "i2", 200), ("a", "x", 300), ("b", "i1", 150)]
    assert parts["history"] == parts["pretrain"]
    assert parts["history_test"] == [("a", "i1", 100), ("a", "i2", 200), ("a", "x", 300), ("a", "y", 300),
                                     ("b", "i1", 150), ("b", "i3", 250), ("c", "i2", 50)]
    assert parts["before_cutoff"] == [("a", "i1", 100), ("a", "i2", 200), ("a", "x", 300), ("a", "y", 300),
                                      ("b", "i1", 150), ("b", "i3", 250), ("c", "i2", 50)]


def test_history_is_the_pretrain_directory(tiny):
    out, meta = tiny
    split = Split(out, meta)
    assert split.dataset("history") == split.dataset("pretrain") == out / "datasets" / "pretrain"
    assert split.boi("history") == split.boi("pretrain") == out / "boi" / "pretrain"
    assert meta["parts"]["history"] == {"dataset": "datasets/pretrain", "boi": "boi/pretrain"}
    assert sorted(p.name for p in (out / "datasets").iterdir()) == ["before_cutoff", "history_test", "pretrain"]
    assert meta["events"]["history"] == meta["events"]["pretrain"] == 4
    assert json.loads((out / "datasets" / "pretrain" / "manifest.json").read_text())["split_parts"] == ["pretrain", "history"]
    old = Split(out, {**meta, "parts": {p: f"boi/{p}" for p in PARTS}})  # a version-1 split.json: one directory per part
    assert old.boi("history") == out / "boi" / "history" and old.dataset("history") == out / "datasets" / "history"
    with pytest.raises(ValueError, match="unknown split part"):
        split.boi("test")


def test_targets_need_three_events(tiny):
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
    split = Split(tmp_path / "split", meta)
    before = events_of(split.dataset("before_cutoff"))
    assert max(e["timestamp"] for e in before) < cutoff, "no event after the cutoff in the category-preference input"
    assert len(before) == sum(t < cutoff for _, _, t in log)
    assert split.dataset("pretrain") == split.dataset("history")
    full = Counter((u, i, t) for u, i, t in log)
    held = pq.read_table(tmp_path / "split" / "targets.parquet").to_pylist()
    for part, removed in (("pretrain", ("valid", "test")), ("history", ("valid", "test")), ("history_test", ("test",))):
        seen = Counter((e["user_id"], e["item_id"], e["timestamp"]) for e in events_of(split.dataset(part)))
        for row in held:
            # the held-out events themselves are gone (an identical duplicate event may remain)
            gone = Counter((row["user_id"], row[f"{which}_item"], row[f"{which}_time"]) for which in removed)
            assert all(seen[key] <= full[key] - k for key, k in gone.items()), (part, row)
    # each user's history_test is exactly its log minus one event, history minus two (users with >= 3 events)
    per_user = Counter(u for u, _, _ in log)
    hist = Counter(e["user_id"] for e in events_of(split.dataset("history")))
    hist_test = Counter(e["user_id"] for e in events_of(split.dataset("history_test")))
    assert all(hist[u] == n - HOLDOUT and hist_test[u] == n - 1 for u, n in per_user.items() if n >= 3)


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


def test_a_replaced_vocabulary_binds_lurm_not_sequence_models(tmp_path, tiny):
    """After the split's BoI is rebuilt with a chosen vocabulary, a sequence model's checkpoint of the earlier one is
    valid where the item sequences are the same (``same_item_sequences``); LURM reads the interests and is refused."""
    from raylurm.evaluate.harness import check_split

    out, meta = tiny
    split = Split(out, {**meta, "vocabulary_hash": "v2", "previous_vocabulary_hashes": ["v0", "v1"], "same_item_sequences": ["v1"]})
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()

    def check(method: str, vocabulary: str):
        (checkpoint / "meta.json").write_text(json.dumps({"method": method, "split": split.id, "vocabulary_hash": vocabulary}))
        return check_split(checkpoint, split)

    assert check("dss", "v1")["method"] == "dss" and check("lurm", "v2")["method"] == "lurm"
    with pytest.raises(ValueError, match="earlier vocabulary"):
        check("lurm", "v1")
    with pytest.raises(ValueError, match="earlier vocabulary"):
        check("dss", "v0")  # that rebuild changed which events have an interest: other item sequences
    with pytest.raises(ValueError, match="not the split's v2$"):
        check("dss", "v9")
    with pytest.raises(ValueError, match="not the split's"):
        check("somebody-elses-method", "v1")


def test_split_id_depends_on_the_config(tiny, tmp_path):
    data = tmp_path / "data"
    assert split_id(data, SplitConfig(0.7)) != split_id(data, SplitConfig(0.8))
    assert split_id(data, SplitConfig(0.7)) == split_id(data, SplitConfig(0.7))


def _boi_sequences(dataset: Path, item_order: list[str], config: BoiConfig) -> dict:
    """``build_user_rows`` (BoI stage 3) on a dataset's events, through stage 2, without Ray: user -> [(item, behaviour)]."""
    vocabulary = pa.table({"item_id": item_order, "interest_ids": pa.array([[0]] * len(item_order), pa.list_(pa.int32())),
                           "interest_weights": pa.array([[1.0]] * len(item_order), pa.list_(pa.float32()))})
    behaviors = behaviors_of(dataset)
    events = pads.dataset(dataset / "events", format="parquet").to_table()
    rows = build_user_rows(EventMapper(vocabulary, behaviors, config, 1)(events), config).to_pylist()
    return {r["user_id"]: [(item_order[i], behaviors[b]) for i, b in zip(r["items"], r["behaviors"])] for r in rows}


def test_ties_follow_the_vocabulary_order_and_agree_with_build_user_rows(tmp_path):
    """Within a user: time, then item (its row in items.parquet = vocabulary index), then behaviour (most frequent first).

    items.parquet lists "z" before "m" before "a1": neither the ids' order nor the log's order."""
    items = {"z": ["Drama"], "m": ["War"], "a1": ["Comedy"], "q": ["Drama"]}
    log = [("u", "a1", 100), ("u", "m", 300), ("u", "z", 300),         # log order and id order: m then z
           ("v", "q", 100), ("v", "a1", 200), ("v", "m", 500, "buy"), ("v", "m", 500, "click"),
           ("w", "a1", 100), ("w", "q", 400), ("w", "m", 400), ("w", "z", 400),
           ("x", "q", 50), ("x", "a1", 60), ("x", "m", 70)]
    data = make_dataset(tmp_path / "data", log, items)
    meta = _write_parts(data, SplitConfig(cutoff_quantile=0.5), tmp_path / "split")
    split = Split(tmp_path / "split", meta)
    targets = {r["user_id"]: (r["valid_item"], r["test_item"]) for r in pq.read_table(split.targets).to_pylist()}
    assert targets == {"u": ("z", "m"),   # second 300: z (row 0) before m (row 1); by log or by id, z would be last
                       "v": ("m", "m"),   # same item and second: click (the most frequent behaviour) first, buy last
                       "w": ("m", "q"),   # second 400: z, m, q (rows 0, 1, 3)
                       "x": ("a1", "m")}
    held = {(e["user_id"], e["item_id"], e["timestamp"], e["behavior"]) for e in events_of(split.dataset("history_test"))}
    assert ("v", "m", 500, "click") in held and ("v", "m", 500, "buy") not in held, "the buy is v's last event"
    # the BoI pipeline orders every user's events the same way: its sequence ends with (valid, test) ...
    config = BoiConfig(max_sequence_length=10)
    full = _boi_sequences(data, list(items), config)
    assert {u: tuple(i for i, _ in seq[-2:]) for u, seq in full.items() if u in targets} == targets
    assert full["v"][-2:] == [("m", "click"), ("m", "buy")]
    # ... and the BoI of each input part is that sequence minus the held-out events
    history = _boi_sequences(split.dataset("history"), list(items), config)
    history_test = _boi_sequences(split.dataset("history_test"), list(items), config)
    for user in targets:
        assert history[user] == full[user][:-2] and history_test[user] == full[user][:-1]


def test_split_id_digests_the_events(tmp_path):
    log = [("a", "i1", 100), ("a", "i2", 200), ("a", "i3", 300), ("b", "i1", 150), ("b", "i3", 250), ("b", "i2", 600)]
    data = make_dataset(tmp_path / "data", log, {"i1": ["Drama"], "i2": ["War"], "i3": ["Comedy"]})
    config = SplitConfig(0.7)
    before = split_id(data, config)
    write_events(data, log[::-1], shards=2)  # another log order and sharding: the same events, the same split
    assert split_id(data, config) == before
    write_events(data, [*log[:4], ("b", "i2", 250), ("b", "i2", 600)])  # one item changed; counts and time span the same
    assert split_id(data, config) != before
    write_events(data, log)
    assert split_id(data, config) == before
    write_events(data, [*log[:-1], (*log[-1], "buy")])  # one behaviour changed
    assert split_id(data, config) != before
    write_events(data, log)
    pq.write_table(pa.table({"item_id": ["i2", "i1", "i3"], "text": ["i2", "i1", "i3"], "category": [["War"], ["Drama"], ["Comedy"]]}),
                   data / "items.parquet")  # the items' order decides ties: a new split
    assert split_id(data, config) != before


def test_bad_events_are_data_errors_naming_the_file(tmp_path):
    data = make_dataset(tmp_path / "data", [("a", "i1", 100)], {"i1": ["Drama"]})
    (data / "events" / "part-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="part-00000.parquet|events"):
        split_id(data, SplitConfig())
    with pytest.raises(DataError, match="events"):
        _write_parts(data, SplitConfig(), tmp_path / "split")
    for path in (data / "events").iterdir():
        path.unlink()
    (data / "events").rmdir()
    with pytest.raises(DataError, match="events"):
        split_id(data, SplitConfig())


def test_a_config_field_added_since_the_build_does_not_rebuild_the_split(tmp_path, tiny):
    """same_vocabulary reads the stored config through the config classes: a field the stored JSON lacks takes its
    default, so adding a field to VocabularyConfig does not make every split rebuild its BoI."""
    import dataclasses

    from raylurm.boi.build import BuildConfig
    from raylurm.boi.vocabulary import VocabularyConfig
    from raylurm.evaluate.split import same_vocabulary, stored_build_config

    out, meta = tiny
    wanted = BuildConfig(vocabulary=VocabularyConfig(num_interests=5))
    stored = json.loads(json.dumps(dataclasses.asdict(wanted)))
    del stored["vocabulary"]["restarts"]  # a build from before the field existed
    stored["boi"]["scales"] = ["month"]  # and its own BoI options
    (out / "boi" / "pretrain").mkdir(parents=True)
    (out / "boi" / "pretrain" / "manifest.json").write_text(json.dumps({"config": stored}))
    split = Split(out, meta)
    assert same_vocabulary(split, wanted)
    assert not same_vocabulary(split, BuildConfig(vocabulary=VocabularyConfig(num_interests=6)))
    assert stored_build_config(split).boi.scales == ("month",), "a rebuild keeps the split's own BoI options"


def test_changed_labels_under_the_same_events_are_refused_and_an_old_split_gets_its_digest(tmp_path, tiny):
    """The split id hashes events and items; the users table (labels) is checked apart: a regenerated dataset with
    other labels and the same events must not keep the old labels' copies silently."""
    from raylurm.evaluate.split import _check_labels, users_digest

    out, meta = tiny
    data = tmp_path / "data"
    assert meta["users_digest"] == users_digest(data)
    old = {k: v for k, v in meta.items() if k != "users_digest"}  # a split cut before the digest was recorded
    (out / "split.json").write_text(json.dumps(old))
    split = _check_labels(Split(out, old), data)
    assert split.meta["users_digest"] == users_digest(data) and json.loads((out / "split.json").read_text())["users_digest"]
    assert _check_labels(split, data) is split  # unchanged: nothing to do
    pq.write_table(pa.table({"user_id": ["a", "b", "c"], "gender": ["M", "M", "M"]}), data / "users.parquet")
    with pytest.raises(DataError, match="labels.*changed") as error:
        _check_labels(split, data)
    assert "users.parquet" in str(error.value) and str(out) in str(error.value)
