"""Prefix pseudo-users for the next-item head (raylurm.evaluate.prefixes), without Ray.

A hand-made split directory (history events, a pretraining BoI manifest and vocabulary) stands in
for ``raylurm.evaluate.split.materialise``; every prefix row is checked against ``EventMapper`` +
``build_user_rows`` applied to exactly that user's first ``c`` events.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylurm.boi.pipeline import BoiConfig, EventMapper, build_user_rows
from raylurm.boi.vocabulary import Vocabulary
from raylurm.evaluate import prefixes as P
from raylurm.evaluate.represent import item_index, raw_boi
from raylurm.evaluate.split import Split
from raylurm.train.batch import collate

BEHAVIORS = ["click", "cart", "buy"]
#: vocabulary items -> (interests, weights); "soft" has two interests, "empty" none; "stranger" is not in the vocabulary
ITEMS = {"a": ([0], [1.0]), "b": ([1], [1.0]), "c": ([2], [1.0]), "d": ([0], [1.0]), "soft": ([1, 3], [0.75, 0.25]),
         "empty": ([], [])}
MONTH = 30 * 86_400


def _log(seed: int = 0) -> list[tuple]:
    """(user, item, timestamp, behaviour): random users plus edge cases, unsorted, with time ties."""
    rng = np.random.default_rng(seed)
    items = list(ITEMS) + ["stranger"]
    events = []
    for user in range(1, 9):
        n = int(rng.integers(2, 30))
        times = 1_000_000_000 + rng.integers(0, 40, size=n) * MONTH // 3  # many ties, months and years apart
        for t in times:
            events.append((user, items[int(rng.integers(len(items)))], int(t), BEHAVIORS[int(rng.integers(3))]))
    events += [(20, "a", 1_000_000_000, "click")]  # one event: no prefix
    events += [(21, "stranger", 1_000_000_000, "click"), (21, "a", 1_000_000_001, "buy")]  # one known event: no prefix
    events += [(22, "b", 1_000_000_005, "click"), (22, "a", 1_000_000_005, "buy"), (22, "a", 1_000_000_005, "cart"),
               (22, "c", 1_000_000_000, "click"), (22, "empty", 1_000_000_007, "click"),
               (22, "soft", 1_000_000_007, "click")]  # ties: by vocabulary index, then behaviour index (not by name)
    return [events[i] for i in rng.permutation(len(events))]


def make_split(root: Path, events: list[tuple], string_ids: bool = False, max_length: int = 5) -> Split:
    """The split layout: ``history`` and ``pretrain`` share one directory (split.json's ``parts``)."""
    history = root / "datasets" / "pretrain"
    (history / "events").mkdir(parents=True)
    users = [f"u{e[0]:02d}" if string_ids else e[0] for e in events]
    pq.write_table(pa.table({"user_id": pa.array(users, pa.string() if string_ids else pa.int64()),
                             "item_id": [e[1] for e in events],
                             "timestamp": pa.array([e[2] for e in events], pa.int64()),
                             "behavior": [e[3] for e in events]}), history / "events" / "part-00000.parquet")
    (history / "manifest.json").write_text(json.dumps({"name": "tiny:history"}))
    boi = root / "boi" / "pretrain"
    vocab = Vocabulary(pa.array(list(ITEMS)), pa.array([v[0] for v in ITEMS.values()], pa.list_(pa.int32())),
                       pa.array([v[1] for v in ITEMS.values()], pa.list_(pa.float32())),
                       np.eye(4, dtype=np.float32), {"num_interests": 4})
    vocab.save(boi / "vocabulary")
    config = {"boi": {"scales": ["month", "year"], "max_sequence_length": max_length, "sequences": True,
                      "on_unknown_items": "error", "since": None, "until": None, "num_partitions": None,
                      "concurrency": None}}
    (boi / "users").mkdir()
    (boi / "manifest.json").write_text(json.dumps({
        "dataset": str(history), "dataset_name": "tiny",
        "vocabulary_hash": Vocabulary.load(boi / "vocabulary").config["hash"],
        "num_interests": 4, "num_items": len(ITEMS), "behaviors": BEHAVIORS, "config": config, "summary": {}}))
    parts = {p: {"dataset": "datasets/pretrain", "boi": "boi/pretrain"} for p in ("pretrain", "history")}
    (root / "split.json").write_text(json.dumps({"id": "tinysplit", "dataset": "tiny", "parts": parts}))
    return Split.load(root)


def ordered_events(events: list[tuple], string_ids: bool = False) -> dict:
    """Each user's in-vocabulary events in (timestamp, vocabulary index, behaviour index) order, by hand."""
    out = defaultdict(list)
    for user, item, t, behavior in events:
        if item in ITEMS:
            out[f"u{user:02d}" if string_ids else user].append((item, t, behavior))
    rank = {item: i for i, item in enumerate(ITEMS)}
    return {u: sorted(v, key=lambda e: (e[1], rank[e[0]], BEHAVIORS.index(e[2]))) for u, v in sorted(out.items())}


def reference_row(prefix_id, events: list[tuple], vocab: Vocabulary, max_length: int) -> dict:
    config = BoiConfig(max_sequence_length=max_length, on_unknown_items="skip")
    raw = pa.table({"user_id": pa.array([prefix_id] * len(events)), "item_id": [e[0] for e in events],
                    "timestamp": pa.array([e[1] for e in events], pa.int64()), "behavior": [e[2] for e in events]})
    return build_user_rows(EventMapper(vocab.table(), BEHAVIORS, config, 1)(raw), config).to_pylist()[0]


@pytest.fixture(params=[False, True], ids=["int-ids", "string-ids"])
def built(request, tmp_path):
    events = _log()
    split = make_split(tmp_path / "split", events, string_ids=request.param)
    return split, events, request.param, P.build(split, per_user=4, seed=1)


def test_sample_cuts_are_distinct_in_range_and_deterministic():
    counts = np.array([0, 1, 2, 3, 5, 40, 9])
    user, k, cut = P.sample_cuts(counts, per_user=4, seed=7)
    for u, n in enumerate(counts):
        mine = cut[user == u]
        assert len(mine) == min(4, max(n - 1, 0)) and len(set(mine)) == len(mine)
        assert np.all((mine >= 1) & (mine <= n - 1)) and np.all(np.diff(mine) > 0)
        assert k[user == u].tolist() == list(range(len(mine)))
    assert cut[user == 4].tolist() == [1, 2, 3, 4]  # n - 1 <= per_user: every position
    again = P.sample_cuts(counts, per_user=4, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip((user, k, cut), again))
    assert not np.array_equal(cut, P.sample_cuts(counts, per_user=4, seed=8)[2])


def test_sample_cuts_are_uniform():
    user, _, cut = P.sample_cuts(np.full(4_000, 11), per_user=3, seed=0)  # positions 1..10, 3 each
    frequency = np.bincount(cut, minlength=11)[1:] / len(user)
    np.testing.assert_allclose(frequency, 0.1, atol=0.01)


def test_examples_and_rows_match_build_user_rows_on_each_prefix(built):
    split, events, string_ids, prefixes = built
    by_user = ordered_events(events, string_ids)
    users = list(by_user)
    vocab = Vocabulary.load(split.boi("pretrain") / "vocabulary")
    rows = {r["user_id"]: r for r in pq.read_table(prefixes.boi / "users").to_pylist()}
    assert len(rows) == len(prefixes) == len(set(prefixes.prefix_id.tolist()))
    assert pq.read_table(prefixes.boi / "users")["user_id"].to_pylist() == prefixes.prefix_id.tolist()  # same order
    for pid, user, cut, item, t in zip(prefixes.prefix_id, prefixes.user_id, prefixes.cut, prefixes.target_item,
                                       prefixes.target_time):
        mine = by_user[user]
        assert 1 <= cut <= len(mine) - 1
        assert (item, t) == mine[cut][:2]  # the target is event c
        number = int(pid)
        assert number // 4 == users.index(user)  # prefix_id = user_row * per_user + k
        assert rows[pid] == reference_row(pid, mine[:cut], vocab, max_length=5)
    per_user = {u: int((prefixes.user_id == u).sum()) for u in users}
    assert all(per_user[u] == min(4, max(len(by_user[u]) - 1, 0)) for u in users)
    assert per_user[users[-2]] == 0 and per_user[users[-3]] == 0  # users 20, 21: one event each
    capped = [r for r in rows.values() if r["num_events"] - r["num_skipped"] > 5]
    assert capped and all(len(r["items"]) == 5 for r in capped)  # the raw sequence cap, not the bags


def test_ties_are_ordered_by_item_then_behaviour(built):
    split, events, string_ids, prefixes = built
    user = "u22" if string_ids else 22
    mine = ordered_events(events, string_ids)[user]
    assert mine == [("c", 1_000_000_000, "click"), ("a", 1_000_000_005, "cart"), ("a", 1_000_000_005, "buy"),
                    ("b", 1_000_000_005, "click"), ("soft", 1_000_000_007, "click"), ("empty", 1_000_000_007, "click")]
    targets = {int(c): it for c, it, u in zip(prefixes.cut, prefixes.target_item, prefixes.user_id) if u == user}
    assert len(targets) == 4 and targets.items() <= {1: "a", 2: "a", 3: "b", 4: "soft", 5: "empty"}.items()
    rows = {r["user_id"]: r for r in pq.read_table(prefixes.boi / "users").to_pylist()}
    longest = max((c, p) for p, c, u in zip(prefixes.prefix_id, prefixes.cut, prefixes.user_id) if u == user)[1]
    # the prefix's sequence is in build_user_rows' order: vocabulary items 2, 0, 0, 1[, 4] with behaviours 0, 1, 2, 0
    assert rows[longest]["items"][:4] == [2, 0, 0, 1] and rows[longest]["behaviors"][:4] == [0, 1, 2, 0]


def test_item_counts_row_sums_are_the_cut_lengths(built):
    split, events, string_ids, prefixes = built
    index = item_index(prefixes.boi)
    counts = prefixes.item_counts(index)
    assert counts.shape == (len(prefixes), len(ITEMS))
    np.testing.assert_array_equal(np.asarray(counts.sum(axis=1)).ravel(), prefixes.cut)  # every kept item is indexed
    by_user = ordered_events(events, string_ids)
    for row in range(len(prefixes)):
        want = np.zeros(len(ITEMS))
        for item, _, _ in by_user[prefixes.user_id[row]][: prefixes.cut[row]]:
            want[index[item]] += 1
        np.testing.assert_array_equal(counts[row].toarray().ravel(), want)
    partial = {k: v for k, v in index.items() if k != "a"}  # items missing from the index are not counted
    assert partial and prefixes.item_counts({k: i for i, k in enumerate(partial)}).sum() < counts.sum()


def test_item_counts_in_chunks_equal_one_pass(built, monkeypatch):
    _, _, _, prefixes = built
    index = item_index(prefixes.boi)
    whole = prefixes.item_counts(index)
    monkeypatch.setattr(P, "CHUNK_EVENTS", 7)
    assert (prefixes.item_counts(index) != whole).nnz == 0


def test_the_boi_directory_feeds_the_readers(built):
    split, _, string_ids, prefixes = built
    manifest = json.loads((prefixes.boi / "manifest.json").read_text())
    source = json.loads((split.boi("pretrain") / "manifest.json").read_text())
    for key in ("vocabulary_hash", "num_interests", "num_items", "behaviors"):
        assert manifest[key] == source[key]
    assert manifest["config"]["boi"]["scales"] == ["month", "year"] and manifest["summary"]["users"] == len(prefixes)
    assert manifest["summary"]["events"] == int(prefixes.cut.sum())
    table = pq.read_table(prefixes.boi / "users")
    assert table.schema.field("user_id").type == (pa.string() if string_ids else pa.int64())
    batch = collate(table, ("month", "year"))
    assert batch["month_lengths"].shape == (len(prefixes),)
    rep = raw_boi(prefixes.boi)
    assert rep.features.shape == (len(prefixes), 4) and list(rep.user_ids) == list(prefixes.prefix_id)
    assert item_index(prefixes.boi) == {item: i for i, item in enumerate(ITEMS)}


def test_chunked_build_equals_one_chunk(tmp_path, monkeypatch):
    split = make_split(tmp_path / "split", _log(3))
    whole = pq.read_table(P.build(split, per_user=3, seed=0).boi / "users")
    monkeypatch.setattr(P, "CHUNK_EVENTS", 10)
    chunked = P.build(split, per_user=3, seed=0, root=tmp_path / "chunked")
    assert len(list((chunked.boi / "users").glob("*.parquet"))) > 3
    assert pq.read_table(chunked.boi / "users").equals(whole)


def test_rebuild_uses_the_cache_and_the_seed_decides(tmp_path, monkeypatch):
    split = make_split(tmp_path / "split", _log(5))
    first = P.build(split, per_user=3, seed=2)
    assert first.root == split.root / "prefixes-3-2" and first.meta["prefixes"] == len(first)

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt instead of reusing the cache")

    with monkeypatch.context() as m:
        m.setattr(P, "_build", fail)
        again = P.build(split, per_user=3, seed=2)
    assert np.array_equal(again.cut, first.cut) and np.array_equal(again.prefix_id, first.prefix_id)
    fresh = P.build(split, per_user=3, seed=2, root=tmp_path / "elsewhere")  # same seed, new directory: same examples
    assert np.array_equal(fresh.cut, first.cut) and np.array_equal(fresh.user_id, first.user_id)
    assert pq.read_table(fresh.boi / "users").equals(pq.read_table(first.boi / "users"))
    other = P.build(split, per_user=3, seed=3)
    assert other.root == split.root / "prefixes-3-3" and not np.array_equal(other.cut, first.cut)
    assert not list(split.root.glob(".*tmp*"))  # atomic: no temporary directory left behind


def test_a_stale_directory_is_rebuilt(tmp_path):
    split = make_split(tmp_path / "split", _log(5))
    root = tmp_path / "p"
    first = P.build(split, per_user=3, seed=2, root=root)
    second = P.build(split, per_user=2, seed=2, root=root)  # same directory, other parameters: rebuilt
    assert second.meta["per_user"] == 2 and len(second) < len(first)
    assert all(int((second.user_id == u).sum()) <= 2 for u in set(second.user_id.tolist()))
