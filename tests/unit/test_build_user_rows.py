"""``build_user_rows`` (BoI stage 3, eq. 4) without Ray, against a naive per-user Python computation.

Stage 3 receives one shuffle partition of stage 2's output (``EventMapper``): one row per event
with ``user_id``, ``item`` (vocabulary index, -1 when the item has no interest), the item's
``interest_ids`` / ``interest_weights``, ``timestamp``, ``behavior`` and the ``month`` / ``year``
periods. The reference below recomputes every user's row from the raw events with dicts and
``datetime``; the output contract is the one of ``raylurm/boi/pipeline.py`` and
``raylurm/train/batch.py``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest
import torch

from raylurm.boi.pipeline import BoiConfig, EventMapper, build_user_rows, period_index
from raylurm.train.batch import collate

#: vocabulary: item index -> (interest ids, weights); item 2 has a soft assignment, item 4 no interest
INTERESTS = {0: ([3], [1.0]), 1: ([1], [1.0]), 2: ([1, 5], [0.75, 0.25]), 3: ([0], [1.0]), 4: ([], [])}
BEHAVIORS = ["click", "cart", "buy"]


def _ts(year: int, month: int, day: int = 1) -> int:
    return int(dt.datetime(year, month, day, tzinfo=dt.timezone.utc).timestamp())


def _events() -> list[tuple]:
    """(user, item index, timestamp, behaviour) — unsorted, several per month, across year ends."""
    return [
        (7, 0, _ts(2002, 1, 1) - 1, 0),         # the last second of December 2001
        (7, 0, _ts(2002, 1, 1), 1),             # first second of 2002: another month and year
        (7, 2, _ts(2001, 12, 5), 2),            # soft item: interests 1 and 5
        (7, 1, _ts(2001, 12, 5), 0),            # same time as the previous event
        (7, -1, _ts(2001, 12, 6), 0),           # unknown item: skipped, counted
        (7, 0, _ts(2001, 12, 10), 0),
        (3, 3, _ts(1999, 6, 15), 1),
        (3, 2, _ts(1999, 6, 16), 0),
        (3, 1, _ts(1999, 6, 16), 2),
        (3, 1, _ts(2004, 2, 29), 0),            # a leap day, years later
        (12, -1, _ts(2010, 1, 1), 0),           # a user whose every event is unknown
        (12, -1, _ts(2010, 2, 1), 1),
        (5, 1, _ts(1970, 1, 1), 0),             # the epoch: period 0 on both scales
        (7, 2, _ts(2002, 1, 20), 1),
        (7, 3, _ts(2002, 3, 3), 2),
    ]


def _stage2_table(events: list[tuple], user_type: pa.DataType = pa.int64()) -> pa.Table:
    """What EventMapper emits for ``events``: an unknown item carries item 0's interests (``take(0)``)."""
    ts = np.array([e[2] for e in events], dtype=np.int64)
    looked_up = [INTERESTS[max(e[1], 0)] for e in events]
    return pa.table({
        "partition": pa.array(np.zeros(len(events), dtype=np.int32)),
        "user_id": pa.array([e[0] for e in events], user_type),
        "item": pa.array([e[1] for e in events], pa.int32()),
        "interest_ids": pa.array([ids for ids, _ in looked_up], pa.list_(pa.int32())),
        "interest_weights": pa.array([w for _, w in looked_up], pa.list_(pa.float32())),
        "timestamp": pa.array(ts),
        "behavior": pa.array([e[3] for e in events], pa.int8()),
        "month": pa.array(period_index(ts, "month")),
        "year": pa.array(period_index(ts, "year")),
    })


def _period(timestamp: int, scale: str) -> int:
    when = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    return (when.year - 1970) * 12 + when.month - 1 if scale == "month" else when.year - 1970


def naive_rows(events: list[tuple], scales=("month", "year"), max_length: int = 200) -> list[dict]:
    """Each user's row by hand: per-period dict bags, log(1 + count); the last ``max_length`` known events."""
    by_user = defaultdict(list)
    for event in events:
        by_user[event[0]].append(event)
    rows = []
    for user in sorted(by_user):
        mine = by_user[user]
        known = sorted((e for e in mine if e[1] >= 0), key=lambda e: (e[2], e[1], e[3]))  # time order, ties by item
        row = {"user_id": user}
        for scale in scales:
            bags: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
            for _, item, timestamp, _ in known:
                for interest, weight in zip(*INTERESTS[item]):
                    bags[_period(timestamp, scale)][interest] += float(np.float32(weight))
            periods = sorted(bags)
            row[f"{scale}_periods"] = periods
            row[f"{scale}_ids"] = [sorted(bags[p]) for p in periods]
            row[f"{scale}_values"] = [[math.log1p(bags[p][j]) for j in sorted(bags[p])] for p in periods]
        recent, earlier = known[-max_length:], known[:-max_length]
        row.update({"items": [e[1] for e in recent], "behaviors": [e[3] for e in recent],
                    "timestamps": [e[2] for e in recent],
                    "earlier_items": [e[1] for e in earlier], "earlier_behaviors": [e[3] for e in earlier],
                    "earlier_timestamps": [e[2] for e in earlier], "num_events": len(mine),
                    "num_skipped": sum(e[1] < 0 for e in mine)})
        rows.append(row)
    return rows


def assert_rows_equal(got: list[dict], want: list[dict]) -> None:
    assert [r["user_id"] for r in got] == [r["user_id"] for r in want]
    for g, w in zip(got, want):
        assert set(g) == set(w), g["user_id"]
        for key, expected in w.items():
            if key.endswith("_values"):
                assert len(g[key]) == len(expected), (g["user_id"], key)
                for a, b in zip(g[key], expected):
                    np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=f"user {g['user_id']} {key}")
            else:
                assert g[key] == expected, (g["user_id"], key)


CONTRACT = {
    "month_periods": pa.list_(pa.int32()), "month_ids": pa.list_(pa.list_(pa.int32())),
    "month_values": pa.list_(pa.list_(pa.float32())),
    "year_periods": pa.list_(pa.int32()), "year_ids": pa.list_(pa.list_(pa.int32())),
    "year_values": pa.list_(pa.list_(pa.float32())),
    "items": pa.list_(pa.int32()), "behaviors": pa.list_(pa.int8()), "timestamps": pa.list_(pa.int64()),
    "earlier_items": pa.list_(pa.int32()), "earlier_behaviors": pa.list_(pa.int8()),
    "earlier_timestamps": pa.list_(pa.int64()),
    "num_events": pa.int64(), "num_skipped": pa.int64(),
}


def test_rows_match_a_naive_per_user_computation():
    events = _events()
    out = build_user_rows(_stage2_table(events), BoiConfig())
    assert_rows_equal(out.to_pylist(), naive_rows(events))
    assert out.schema == pa.schema([("user_id", pa.int64())] + list(CONTRACT.items()))


def test_hand_checked_values_of_one_user():
    """User 7 by hand: December 2001 holds interests 3 (twice), 1 (1 + 0.75) and 5 (0.25)."""
    row = next(r for r in build_user_rows(_stage2_table(_events()), BoiConfig()).to_pylist() if r["user_id"] == 7)
    december, january, march = (2001 - 1970) * 12 + 11, (2002 - 1970) * 12, (2002 - 1970) * 12 + 2
    assert row["month_periods"] == [december, january, march]
    assert row["month_ids"] == [[1, 3, 5], [1, 3, 5], [0]]
    np.testing.assert_allclose(row["month_values"][0], np.log1p([1.75, 2, 0.25]), rtol=1e-6)
    assert row["year_periods"] == [31, 32] and row["year_ids"] == [[1, 3, 5], [0, 1, 3, 5]]
    np.testing.assert_allclose(row["year_values"][1], np.log1p([1, 0.75, 1, 0.25]), rtol=1e-6)
    assert row["items"] == [1, 2, 0, 0, 0, 2, 3]  # in time order; the two events at one second by item
    assert row["timestamps"] == sorted(row["timestamps"]) and len(row["timestamps"]) == 7
    assert (row["num_events"], row["num_skipped"]) == (8, 1)


def test_input_order_does_not_matter():
    events = _events()
    shuffled = [events[i] for i in np.random.default_rng(3).permutation(len(events))]
    assert build_user_rows(_stage2_table(shuffled), BoiConfig()).equals(build_user_rows(_stage2_table(events), BoiConfig()))


@pytest.mark.parametrize("max_length", [1, 3, 7, 50])
def test_the_sequence_cap_keeps_the_most_recent_known_events(max_length):
    events = _events()
    out = build_user_rows(_stage2_table(events), BoiConfig(max_sequence_length=max_length)).to_pylist()
    assert_rows_equal(out, naive_rows(events, max_length=max_length))
    seven = next(r for r in out if r["user_id"] == 7)
    assert seven["timestamps"][-1] == _ts(2002, 3, 3) and len(seven["items"]) == min(max_length, 7)
    assert seven["num_events"] == 8  # the cap is on the sequence only: bags and counts see every event
    assert sum(map(len, seven["month_ids"])) == 7
    assert seven["earlier_items"] + seven["items"] == [r for r in naive_rows(events, max_length=1000) if r["user_id"] == 7][0]["items"]


def test_without_earlier_events_the_columns_are_absent():
    out = build_user_rows(_stage2_table(_events()), BoiConfig(max_sequence_length=3, earlier_events=False))
    assert not any(name.startswith("earlier_") for name in out.column_names) and "items" in out.column_names


def test_a_user_with_only_unknown_items_gets_an_empty_row_and_the_skip_count():
    row = next(r for r in build_user_rows(_stage2_table(_events()), BoiConfig()).to_pylist() if r["user_id"] == 12)
    assert row["month_periods"] == row["year_periods"] == row["items"] == row["timestamps"] == []
    assert (row["num_events"], row["num_skipped"]) == (2, 2)


def test_one_scale_and_no_sequences():
    events = _events()
    out = build_user_rows(_stage2_table(events), BoiConfig(scales=("year",), sequences=False))
    assert out.column_names == ["user_id", "year_periods", "year_ids", "year_values", "num_events", "num_skipped"]
    want = [{k: v for k, v in row.items() if k.startswith("year") or k in ("user_id", "num_events", "num_skipped")}
            for row in naive_rows(events, scales=("year",))]
    assert_rows_equal(out.to_pylist(), want)


def test_rows_feed_the_batch_contract():
    """collate's flat EmbeddingBag inputs are the naive bags, user-major then by time."""
    events = _events()
    batch = collate(build_user_rows(_stage2_table(events), BoiConfig()))
    want = naive_rows(events)
    assert batch["month_lengths"].tolist() == [len(r["month_periods"]) for r in want]
    assert batch["month_periods"].tolist() == [p for r in want for p in r["month_periods"]]
    assert batch["month_ids"].tolist() == [j for r in want for bag in r["month_ids"] for j in bag]
    sizes = [len(bag) for r in want for bag in r["month_ids"]]
    assert batch["month_offsets"].tolist() == list(np.cumsum([0] + sizes[:-1]))
    assert batch["lengths"].tolist() == [len(r["items"]) for r in want]
    assert batch["items"][0, : len(want[0]["items"])].tolist() == [i + 1 for i in want[0]["items"]]  # +1 shift
    assert {batch[k].dtype for k in ("month_ids", "month_offsets", "month_periods", "items")} == {torch.int64}


def test_stage_two_then_three_on_raw_events_with_string_ids():
    """EventMapper (no Ray: it is a plain callable) then build_user_rows, from item ids and raw times."""
    item_ids = ["i0", "i1", "i2", "i3", "i4"]
    assignment = pa.table({"item_id": pa.array(item_ids), "item_index": pa.array(np.arange(5, dtype=np.int32)),
                           "interest_ids": pa.array([INTERESTS[i][0] for i in range(5)], pa.list_(pa.int32())),
                           "interest_weights": pa.array([INTERESTS[i][1] for i in range(5)], pa.list_(pa.float32()))})
    events = _events()
    raw = pa.table({"user_id": pa.array([f"u{e[0]}" for e in events]),
                    "item_id": pa.array(["missing" if e[1] < 0 else item_ids[e[1]] for e in events]),
                    "timestamp": pa.array([e[2] for e in events], pa.int64()),
                    "behavior": pa.array([BEHAVIORS[e[3]] for e in events])})
    mapper = EventMapper(assignment, BEHAVIORS, BoiConfig(), num_partitions=1)
    out = build_user_rows(pa.concat_tables([mapper(raw.slice(0, 6)), mapper(raw.slice(6))]), BoiConfig())
    want = naive_rows([(f"u{e[0]}", *e[1:]) for e in events])  # string ids sort as text: u12 < u3 < u5 < u7
    assert [r["user_id"] for r in want] == ["u12", "u3", "u5", "u7"]
    assert_rows_equal(out.to_pylist(), want)
    assert out.schema.field("user_id").type == pa.string()
    # item 4 exists in the vocabulary but has no interest: skipped like an unknown id
    with_empty = raw.set_column(1, "item_id", pa.array(["i4"] * raw.num_rows))
    rows = build_user_rows(mapper(with_empty), BoiConfig()).to_pylist()
    assert all(r["num_skipped"] == r["num_events"] and r["items"] == [] for r in rows)


def test_an_empty_partition_gives_no_rows_with_the_full_schema():
    out = build_user_rows(_stage2_table(_events()).slice(0, 0), BoiConfig())
    assert out.num_rows == 0
    assert out.schema == pa.schema([("user_id", pa.int64())] + list(CONTRACT.items()))
