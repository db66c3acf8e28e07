"""BoI on Ray Data equals an independent pandas computation of eq. 4, whatever the parallelism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from raylurm.boi.pipeline import BoiConfig, build_boi
from raylurm.boi.vocabulary import VocabularyConfig, build_vocabulary
from raylurm.data.errors import DataError
from raylurm.data.synth import SynthConfig, generate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("boi") / "synth"
    generate(SynthConfig(users=60, years=2, items=400, num_topics=10, num_categories=4, seed=3), out, progress=False)
    return out


def _vocabulary(dataset, assignment: str, drop_items: int = 0):
    items = pq.read_table(dataset / "items.parquet")
    vectors = np.random.default_rng(0).normal(size=(items.num_rows, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[:drop_items] = 0  # items without an embedding get no interest
    return build_vocabulary(items["item_id"].combine_chunks(), vectors, VocabularyConfig(num_interests=12, assignment=assignment))


def _reference(dataset, vocab, scale: str) -> pd.Series:
    """Plain pandas: join events to interests, count per user x calendar period x interest, log(1 + count)."""
    events = pq.read_table(dataset / "events").to_pandas()
    assignment = vocab.table().to_pandas()[["item_id", "interest_ids", "interest_weights"]]
    rows = events.merge(assignment, on="item_id").explode(["interest_ids", "interest_weights"]).dropna(subset=["interest_ids"])
    when = pd.to_datetime(rows["timestamp"], unit="s", utc=True)
    rows["period"] = (when.dt.year - 1970) * 12 + when.dt.month - 1 if scale == "month" else when.dt.year - 1970
    counts = rows.groupby(["user_id", "period", "interest_ids"])["interest_weights"].sum().astype(float)
    return np.log1p(counts)


def _exploded(users: pd.DataFrame, scale: str) -> pd.Series:
    keys, values = [], []
    for row in users.itertuples():
        for period, ids, vals in zip(getattr(row, f"{scale}_periods"), getattr(row, f"{scale}_ids"), getattr(row, f"{scale}_values")):
            assert list(ids) == sorted(ids), "interest ids ascending within a period"
            keys += [(row.user_id, period, j) for j in ids]
            values += list(vals)
    return pd.Series(values, index=pd.MultiIndex.from_tuples(keys, names=["user_id", "period", "interest_ids"]))


def _run(ray_runtime, dataset, vocab, tmp_path, name, **config) -> pd.DataFrame:
    build_boi(dataset, vocab, tmp_path / name, BoiConfig(max_sequence_length=7, **config))
    return pq.read_table(tmp_path / name).to_pandas().sort_values("user_id").reset_index(drop=True)


@pytest.mark.parametrize("assignment", ["hard", "soft"])
def test_boi_matches_pandas_reference_for_any_parallelism(ray_runtime, small_dataset, tmp_path, assignment):
    vocab = _vocabulary(small_dataset, assignment)
    one = _run(ray_runtime, small_dataset, vocab, tmp_path, "one", concurrency=1, num_partitions=1)
    for scale in ("month", "year"):
        got, want = _exploded(one, scale).sort_index(), _reference(small_dataset, vocab, scale).sort_index()
        assert got.index.equals(want.index), f"{scale}: same (user, period, interest) non-zeros"
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=1e-6, rtol=0)
    if assignment == "hard":
        assert set(np.concatenate([np.concatenate(v) for v in one["month_values"]])) <= {np.float32(np.log1p(k)) for k in range(1, 500)}
    several = _run(ray_runtime, small_dataset, vocab, tmp_path, "several", concurrency=2, num_partitions=5)
    pd.testing.assert_frame_equal(one, several)


def test_sequences_are_the_most_recent_events_in_time_order(ray_runtime, small_dataset, tmp_path):
    vocab = _vocabulary(small_dataset, "hard")
    users = _run(ray_runtime, small_dataset, vocab, tmp_path, "seq", num_partitions=2)
    events = pq.read_table(small_dataset / "events").to_pandas().sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    index = {item: i for i, item in enumerate(vocab.item_ids.to_pylist())}
    for row in users.itertuples():
        mine = events[events.user_id == row.user_id].tail(7)
        assert list(row.timestamps) == mine.timestamp.tolist()
        assert list(row.items) == [index[i] for i in mine.item_id]
        assert row.num_events == (events.user_id == row.user_id).sum() and row.num_skipped == 0
    assert len(users) == events.user_id.nunique()


def test_unknown_items_error_or_skip(ray_runtime, small_dataset, tmp_path):
    vocab = _vocabulary(small_dataset, "hard", drop_items=40)
    with pytest.raises(DataError, match="no interest in the vocabulary") as info:
        build_boi(small_dataset, vocab, tmp_path / "err", BoiConfig())
    assert info.value.column == "item_id" and "--on-unknown-items skip" in str(info.value)
    summary = build_boi(small_dataset, vocab, tmp_path / "skip", BoiConfig(on_unknown_items="skip"))
    events = pq.read_table(small_dataset / "events", columns=["item_id"])["item_id"].to_numpy()
    assert summary["skipped_events"] == int((events < 40).sum()) > 0
    assert summary["events"] == len(events)


def test_time_range_limits_events(ray_runtime, small_dataset, tmp_path):
    vocab = _vocabulary(small_dataset, "hard")
    since = int(pd.Timestamp("2016-01-01", tz="UTC").timestamp())
    users = _run(ray_runtime, small_dataset, vocab, tmp_path, "range", since=since, num_partitions=2)
    assert min(min(p) for p in users["year_periods"]) == 2016 - 1970
    events = pq.read_table(small_dataset / "events").to_pandas()
    assert users["num_events"].sum() == (events.timestamp >= since).sum()


def test_bad_time_range_is_a_clear_error():
    with pytest.raises(DataError, match="time range"):
        BoiConfig(since=2_000_000_000, until=1_000_000_000)
