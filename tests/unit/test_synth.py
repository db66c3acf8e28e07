"""Tests of the synthetic lifelong behaviour-log generator (raylurm.data.synth)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylurm.data.schema import canonical_events_schema
from raylurm.data.synth import AGE_BUCKETS, BEHAVIORS, SynthConfig, generate, validate_config

SMALL = SynthConfig(users=300, years=2, items=400, num_topics=20, num_categories=5, seed=7)
# Enough users for the label and tail checks, few events per user to stay fast.
LARGE = SynthConfig(users=3000, years=2, items=1000, events_per_user_month=1.5, seed=3)


def _events(out: Path) -> pa.Table:
    parts = sorted((out / "events").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts])


def _file_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "large"
    return out, generate(LARGE, out, progress=False)


# ----------------------------------------------------------------------------- determinism


def test_same_config_gives_identical_files(tmp_path: Path) -> None:
    first = generate(SMALL, tmp_path / "a", progress=False)
    second = generate(SMALL, tmp_path / "b", progress=False)
    assert first == second
    assert _file_bytes(tmp_path / "a") == _file_bytes(tmp_path / "b")


def test_different_seed_gives_different_events(tmp_path: Path) -> None:
    generate(SMALL, tmp_path / "a", progress=False)
    generate(dataclasses.replace(SMALL, seed=8), tmp_path / "b", progress=False)
    assert not _events(tmp_path / "a").equals(_events(tmp_path / "b"))


def test_output_independent_of_shard_size(tmp_path: Path) -> None:
    generate(SMALL, tmp_path / "a", progress=False)
    generate(dataclasses.replace(SMALL, shard_events=777), tmp_path / "b", progress=False)
    assert _events(tmp_path / "a").equals(_events(tmp_path / "b"))


# ----------------------------------------------------------------------------- structure


def test_events_schema_order_and_ranges(large: tuple[Path, dict]) -> None:
    out, manifest = large
    parts = sorted((out / "events").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(len(parts))]
    for part in parts:
        assert pq.read_schema(part).equals(canonical_events_schema(pa.int64(), pa.int64()))
    events = _events(out)
    user, ts = events["user_id"].to_numpy(), events["timestamp"].to_numpy()
    assert np.all((np.diff(user) > 0) | ((np.diff(user) == 0) & (np.diff(ts) >= 0)))
    start = int(np.datetime64("2015-01-01T00:00:00", "s").astype(np.int64))
    end = int(np.datetime64("2017-01-01T00:00:00", "s").astype(np.int64))
    assert start <= ts.min() and ts.max() < end
    assert manifest["time_span"] == [int(ts.min()), int(ts.max())]
    assert set(events["behavior"].to_pylist()) == set(BEHAVIORS)


def test_items_users_truth_tables(large: tuple[Path, dict]) -> None:
    out, _ = large
    events = _events(out)
    items = pq.read_table(out / "items.parquet")
    assert items.schema.field("item_id").type == pa.int64()
    assert items.schema.field("text").type == pa.string()
    assert items.schema.field("category").type == pa.list_(pa.string())
    assert items["item_id"].to_pylist() == list(range(LARGE.items))
    assert set(np.unique(events["item_id"].to_numpy())) <= set(range(LARGE.items))
    topics, text = items["topic"].to_numpy(), items["text"].to_pylist()
    words = [(t, w) for t, s in zip(topics, text) for w in s.split()]
    assert len(words) == LARGE.items * LARGE.words_per_item
    assert all(w.startswith((f"w{t}_", "common_")) for t, w in words)
    assert all(c[0].startswith("cat_") for c in items["category"].to_pylist())
    users = pq.read_table(out / "users.parquet")
    assert users["user_id"].to_pylist() == list(range(LARGE.users))
    assert set(np.unique(events["user_id"].to_numpy())) == set(range(LARGE.users))
    assert set(users["age_bucket"].to_pylist()) <= set(AGE_BUCKETS)
    assert set(users["gender"].to_pylist()) == {"F", "M"}
    mix = _mixtures(out)
    assert mix.shape == (LARGE.users, LARGE.years, LARGE.num_topics)
    np.testing.assert_allclose(mix.sum(axis=2), 1.0, atol=1e-4)


def test_manifest_matches_files(large: tuple[Path, dict]) -> None:
    out, manifest = large
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["schema_version"] == 1 and manifest["name"] == "synth"
    assert manifest["config"] == dataclasses.asdict(LARGE)
    assert manifest["counts"] == {
        "events": _events(out).num_rows,
        "users": pq.read_metadata(out / "users.parquet").num_rows,
        "items": pq.read_metadata(out / "items.parquet").num_rows,
    }
    assert manifest["id_types"] == {"user_id": "int64", "item_id": "int64"}
    assert manifest["quarantined"] == {}


def test_shards_roll_over(tmp_path: Path) -> None:
    manifest = generate(dataclasses.replace(SMALL, shard_events=1000), tmp_path / "d", progress=False)
    parts = sorted((tmp_path / "d" / "events").glob("part-*.parquet"))
    sizes = [pq.read_metadata(p).num_rows for p in parts]
    assert len(parts) == -(-manifest["counts"]["events"] // 1000) > 1
    assert all(s == 1000 for s in sizes[:-1]) and 0 < sizes[-1] <= 1000
    assert sum(sizes) == manifest["counts"]["events"]


# ----------------------------------------------------------------------------- statistics


def _mixtures(out: Path) -> np.ndarray:
    """Ground-truth mixtures as (users, years, topics), from truth.parquet."""
    truth = pq.read_table(out / "truth.parquet").sort_by([("user_id", "ascending"), ("year", "ascending")])
    flat = truth["mixture"].combine_chunks().flatten().to_numpy()
    users = len(np.unique(truth["user_id"].to_numpy()))
    return flat.reshape(users, -1, len(truth["mixture"][0]))


def _softmax_regression_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray, steps: int = 300) -> float:
    """Fit multinomial logistic regression by gradient descent on ``train``; test accuracy."""
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-9)
    x = np.hstack([x, np.ones((len(x), 1))])
    classes = int(y.max()) + 1
    onehot = np.eye(classes)[y[train]]
    w = np.zeros((x.shape[1], classes))
    for _ in range(steps):
        logits = x[train] @ w
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * (x[train].T @ (p - onehot) / train.sum() + 1e-3 * w)
    return float(np.mean(np.argmax(x[~train] @ w, 1) == y[~train]))


@pytest.mark.parametrize(
    ("column", "labels", "margin"), [("gender", ("F", "M"), 0.15), ("age_bucket", AGE_BUCKETS, 0.2)]
)
def test_labels_predictable_from_mixtures(
    large: tuple[Path, dict], column: str, labels: tuple, margin: float
) -> None:
    """A linear classifier on 70% of users' first-year mixtures beats the majority class."""
    out, _ = large
    users = pq.read_table(out / "users.parquet")
    y = np.array([labels.index(v) for v in users[column].to_pylist()])
    first_year = _mixtures(out)[:, 0]
    train = np.random.default_rng(0).random(len(y)) < 0.7
    majority = np.bincount(y[~train]).max() / (~train).sum()
    accuracy = _softmax_regression_accuracy(first_year, y, train)
    assert accuracy >= majority + margin, (accuracy, majority)


def test_activity_is_heavy_tailed(large: tuple[Path, dict]) -> None:
    per_user = np.bincount(_events(large[0])["user_id"].to_numpy())
    assert per_user.min() >= 1
    assert per_user.max() >= 5 * np.median(per_user)


def test_events_follow_mixtures(large: tuple[Path, dict]) -> None:
    """Active users' year-0 topic frequencies are far closer to their own mixture than to others'."""
    out, _ = large
    events = _events(out)
    topic = pq.read_table(out / "items.parquet")["topic"].to_numpy()[events["item_id"].to_numpy()]
    first_year = events["timestamp"].to_numpy() < np.datetime64("2016-01-01", "s").astype(np.int64)
    user = events["user_id"].to_numpy()[first_year]
    counts = np.zeros((LARGE.users, LARGE.num_topics))
    np.add.at(counts, (user, topic[first_year]), 1)
    active = counts.sum(1) >= 60
    assert active.sum() >= 50
    empirical = counts[active] / counts[active].sum(1, keepdims=True)
    truth = _mixtures(out)[active, 0]
    own = np.abs(empirical - truth).sum(1).mean()
    other = np.abs(empirical - np.roll(truth, 1, axis=0)).sum(1).mean()
    assert own < 0.5 and own < 0.35 * other, (own, other)


def test_interests_drift_but_stay_related(tmp_path: Path) -> None:
    generate(dataclasses.replace(SMALL, years=3, drift=0.3), tmp_path / "d", progress=False)
    mix = _mixtures(tmp_path / "d")
    change = np.abs(mix[:, 1:] - mix[:, :-1]).sum(axis=2)
    assert 0.05 < change.mean() < 1.0
    generate(dataclasses.replace(SMALL, years=3, drift=0.0), tmp_path / "s", progress=False)
    np.testing.assert_allclose(np.diff(_mixtures(tmp_path / "s"), axis=1), 0.0, atol=1e-6)


@pytest.mark.parametrize(
    "change",
    [
        {"users": 1, "years": 1, "events_per_user_month": 0.01},
        {"users": 1025, "items": 20, "num_topics": 20, "num_categories": 1},
        {"zipf_exponent": 0.0, "activity_sigma": 0.0, "common_word_prob": 1.0, "words_per_item": 1},
        {"cart_prob": 0.0, "buy_prob": 1.0, "second_category_prob": 1.0, "drift": 1.0},
        {"start": "1999-12-31", "num_topics": 1, "num_categories": 1},
    ],
)
def test_edge_configs_generate_consistent_data(change: dict, tmp_path: Path) -> None:
    config = dataclasses.replace(SMALL, **change)
    manifest = generate(config, tmp_path / "d", progress=False)
    events = _events(tmp_path / "d")
    assert manifest["counts"]["events"] == events.num_rows >= config.users
    assert set(np.unique(events["user_id"].to_numpy())) == set(range(config.users))
    assert 0 <= events["item_id"].to_numpy().min() and events["item_id"].to_numpy().max() < config.items
    first = np.datetime64(config.start, "D").astype("datetime64[M]").astype("datetime64[s]").astype(np.int64)
    assert manifest["time_span"][0] >= first


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "change",
    [
        {"users": 0},
        {"years": 0},
        {"seed": -1},
        {"items": 10},
        {"num_categories": 60},
        {"events_per_user_month": 0.0},
        {"drift": 1.5},
        {"shard_events": 0},
        {"cart_prob": 0.7, "buy_prob": 0.5},
        {"start": "not-a-date"},
        {"start": "2095-01-01", "years": 10},
        {"users": 2.5},
        {"drift": float("nan")},
        {"start": 2015},
    ],
)
def test_invalid_config_raises(change: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"SynthConfig: .*{next(iter(change))}"):
        dataclasses.replace(SynthConfig(), **change)  # a SynthConfig validates itself when built
    config = SynthConfig()
    for name, value in change.items():  # one changed in place is refused all the same
        object.__setattr__(config, name, value)
    with pytest.raises(ValueError):
        validate_config(config)
    with pytest.raises(ValueError):
        generate(config, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()
