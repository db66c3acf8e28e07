"""The same tables in CSV, TSV, Parquet (file and directory) and RecBole atomic files prepare identically."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylurm.data.prepare import RawSource, load_manifest, prepare
from tests.helpers import write_parquet, write_text

EVENTS = {
    "user_id": [1, 1, 2, 3, 3, 3],
    "item_id": [10, 11, 10, 12, 11, 10],
    "timestamp": [1600000000, 1600003600, 1500000000, 1700000000, 1700000001, 1400000000],
    "behavior": ["click", "buy", "click", "cart", "click", "click"],
}
ITEMS = {"item_id": [10, 11, 12], "text": ["red shoes", "blue hat", "green coat"], "category": [["a", "b"], ["c"], []]}
USERS = {"user_id": [1, 2, 3], "gender": ["F", "M", "F"], "age": ["18-24", "25-34", "18-24"]}


def _rows(columns: dict, sep: str = "|") -> list[list]:
    cols = [[sep.join(v) if isinstance(v, list) else v for v in values] for values in columns.values()]
    return [list(r) for r in zip(*cols)]


def _write(fmt: str, root) -> RawSource:
    root.mkdir()
    if fmt in ("csv", "tsv"):
        d = "," if fmt == "csv" else "\t"
        paths = [write_text(root / f"{name}.{fmt}", list(cols), _rows(cols), d) for name, cols in
                 (("events", EVENTS), ("items", ITEMS), ("users", USERS))]
    elif fmt == "parquet":
        paths = [write_parquet(root / f"{n}.parquet", c) for n, c in (("events", EVENTS), ("items", ITEMS), ("users", USERS))]
    elif fmt == "parquet-dir":
        (root / "events").mkdir()
        half = {k: v[:3] for k, v in EVENTS.items()}, {k: v[3:] for k, v in EVENTS.items()}
        for i, part in enumerate(half):
            write_parquet(root / "events" / f"part-{i}.parquet", part)
        paths = [root / "events", write_parquet(root / "items.parquet", ITEMS), write_parquet(root / "users.parquet", USERS)]
    else:  # RecBole atomic files: name:type headers, tab-separated, token_seq space-separated
        paths = [
            write_text(root / "d.inter", ["user_id:token", "item_id:token", "timestamp:float", "behavior:token"], _rows(EVENTS), "\t"),
            write_text(root / "d.item", ["item_id:token", "text:token_seq", "category:token_seq"], _rows(ITEMS, " "), "\t"),
            write_text(root / "d.user", ["user_id:token", "gender:token", "age:token"], _rows(USERS), "\t"),
        ]
    return RawSource(*map(str, paths))


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "parquet-dir", "atomic"])
def test_every_format_gives_the_same_prepared_dataset(tmp_path, fmt):
    prepare(_write(fmt, tmp_path / "raw"), tmp_path / "out")
    events = pq.read_table(tmp_path / "out" / "events").sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
    expected = pa.table(EVENTS).sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
    assert events.column("user_id").to_pylist() == expected.column("user_id").to_pylist()
    assert events.column("item_id").type == pa.int64() and events.column("timestamp").type == pa.int64()
    for name in ("item_id", "timestamp", "behavior"):
        assert events.column(name).to_pylist() == expected.column(name).to_pylist(), name
    items = pq.read_table(tmp_path / "out" / "items.parquet")
    assert items.column("category").to_pylist() == ITEMS["category"]
    assert items.column("text").to_pylist() == ITEMS["text"]
    users = pq.read_table(tmp_path / "out" / "users.parquet")
    assert users.column("gender").to_pylist() == USERS["gender"] and users.column("age").to_pylist() == USERS["age"]
    manifest = load_manifest(tmp_path / "out")
    assert manifest["counts"] == {"events": 6, "items": 3, "users": 3}
    assert manifest["time_span"] == [min(EVENTS["timestamp"]), max(EVENTS["timestamp"])]


def test_timestamp_encodings_agree(tmp_path):
    """int seconds, Arrow timestamps (tz-aware or naive = UTC), ISO-8601 text and numeric text."""
    moments = [dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), dt.datetime(2021, 6, 7, 8, 9, 10, tzinfo=dt.timezone.utc)]
    seconds = [int(m.timestamp()) for m in moments]
    variants = {
        "int": pa.array(seconds, pa.int64()),
        "ts_utc": pa.array(moments, pa.timestamp("ms", tz="UTC")),
        "ts_naive": pa.array([m.replace(tzinfo=None) for m in moments], pa.timestamp("us")),
        "iso": pa.array([m.isoformat() for m in moments]),
        "iso_offset": pa.array(["2020-01-02T04:04:05+01:00", "2021-06-07 08:09:10Z"]),
        "text_int": pa.array([str(s) for s in seconds]),
        "float": pa.array([s + 0.25 for s in seconds]),
    }
    for name, ts in variants.items():
        path = write_parquet(tmp_path / f"{name}.parquet", {"user_id": [1, 2], "item_id": ["a", "b"], "timestamp": ts})
        prepare(RawSource(str(path)), tmp_path / name)
        got = pq.read_table(tmp_path / name / "events").column("timestamp").to_pylist()
        assert got == seconds, name


def test_missing_behavior_defaults_to_interact(tmp_path):
    path = write_text(tmp_path / "e.csv", ["user_id", "item_id", "timestamp", "behavior"], [[1, 2, 1600000000, ""], [1, 3, 1600000001, "buy"]])
    prepare(RawSource(str(path)), tmp_path / "out")
    assert pq.read_table(tmp_path / "out" / "events").column("behavior").to_pylist() == ["interact", "buy"]
    path = write_text(tmp_path / "f.csv", ["user_id", "item_id", "timestamp"], [[1, 2, 1600000000]])
    prepare(RawSource(str(path)), tmp_path / "out2")
    assert pq.read_table(tmp_path / "out2" / "events").column("behavior").to_pylist() == ["interact"]


def test_string_item_ids_match_integer_event_ids(tmp_path):
    """Items with string ids and events whose ids look like integers are joined as strings."""
    events = write_text(tmp_path / "e.csv", ["user_id", "item_id", "timestamp"], [[1, 7, 1600000000]])
    items = write_text(tmp_path / "i.csv", ["item_id", "text"], [["7", "seven"], ["x", "ex"]])
    prepare(RawSource(str(events), str(items)), tmp_path / "out")
    assert pq.read_table(tmp_path / "out" / "events").column("item_id").to_pylist() == ["7"]
