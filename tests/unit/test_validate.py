"""Bad input: every kind names file, row and column; quarantine keeps every rejected row."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylurm.data.errors import DataError
from raylurm.data.prepare import RawSource, prepare
from tests.helpers import write_parquet, write_text

HEADER = ["user_id", "item_id", "timestamp", "behavior"]
GOOD = [[1, 10, 1600000000, "click"], [2, 11, 1600000100, "buy"], [1, 11, 1600000200, "click"]]


@pytest.fixture
def items_csv(tmp_path):
    return write_text(tmp_path / "items.csv", ["item_id", "text", "category"], [[10, "red shoes", "a|b"], [11, "blue hat", "c"]])


def _prepare_error(tmp_path, events, items=None, users=None) -> DataError:
    with pytest.raises(DataError) as info:
        prepare(RawSource(str(events), items and str(items), users and str(users)), tmp_path / "out")
    assert not (tmp_path / "out").exists(), "a failed prepare must leave no output"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")], "no temporary leftovers"
    return info.value


@pytest.mark.parametrize(
    "bad_row, column, words",
    [
        ([3, 10, "yesterday", "click"], "timestamp", "unparsable timestamp"),
        ([3, 10, 1600000000000, "click"], "timestamp", "milliseconds"),
        ([3, 10, -5, "click"], "timestamp", "out of range"),
        ([3, 10, 5000000000, "click"], "timestamp", "out of range"),
        ([None, 10, 1600000000, "click"], "user_id", "missing id"),
        ([3, None, 1600000000, "click"], "item_id", "missing id"),
        ([3, 99, 1600000000, "click"], "item_id", "not found in the items table"),
    ],
)
def test_bad_event_row_names_file_row_and_column(tmp_path, items_csv, bad_row, column, words):
    events = write_text(tmp_path / "events.csv", HEADER, GOOD + [bad_row] + GOOD)
    err = _prepare_error(tmp_path, events, items_csv)
    assert (err.file, err.row, err.line, err.column) == (str(events), 4, 5, column)
    message = str(err)
    assert str(events) in message and "row 4" in message and f"column '{column}'" in message and words in message


def test_id_type_is_fixed_by_the_first_file(tmp_path, items_csv):
    """A directory of shards: integer user ids in the first file make 'x7' in the second a bad row."""
    shards = tmp_path / "events"
    shards.mkdir()
    write_text(shards / "a.csv", HEADER, GOOD)
    second = write_text(shards / "b.csv", HEADER, [GOOD[0], ["x7", 10, 1600000000, "click"]])
    err = _prepare_error(tmp_path, shards, items_csv)
    assert (err.file, err.row, err.column) == (str(second), 2, "user_id") and "expected an integer id" in str(err)


def test_the_largest_int64_ids_are_kept(tmp_path):
    events = write_text(tmp_path / "events.csv", HEADER, [[2 ** 63 - 1, 10, 1600000000, "click"],
                                                          [-(2 ** 63), 11, 1600000100, "buy"]])
    prepare(RawSource(str(events)), tmp_path / "out")
    assert sorted(pq.read_table(tmp_path / "out" / "events")["user_id"].to_pylist()) == [-(2 ** 63), 2 ** 63 - 1]


@pytest.mark.parametrize("big", [2 ** 63, -(2 ** 63) - 1, "9" * 5000])
def test_an_id_beyond_int64_in_a_later_shard_is_a_bad_row_naming_file_row_and_column(tmp_path, items_csv, big):
    """Was Arrow's bare "Failed to parse string ... as a scalar of type int64" (and int() refuses 5,000 digits)."""
    shards = tmp_path / "events"
    shards.mkdir()
    write_text(shards / "a.csv", HEADER, GOOD)
    second = write_text(shards / "b.csv", HEADER, [GOOD[0], [big, 10, 1600000000, "click"]])
    err = _prepare_error(tmp_path, shards, items_csv)
    assert (err.file, err.row, err.column) == (str(second), 2, "user_id") and "outside the int64 range" in str(err)


def test_ids_beyond_int64_in_the_first_rows_are_read_as_text(tmp_path):
    """64-bit hashes written as text, or uint64 Parquet ids: identifiers, kept exactly as text ids."""
    events = write_text(tmp_path / "events.csv", HEADER, [[2 ** 64 - 1, 10, 1600000000, "click"], [7, 11, 1600000100, "buy"]])
    prepare(RawSource(str(events)), tmp_path / "out")
    assert sorted(pq.read_table(tmp_path / "out" / "events")["user_id"].to_pylist()) == [str(2 ** 64 - 1), "7"]
    table = pa.table({"user_id": pa.array([1, 2 ** 64 - 1], pa.uint64()), "item_id": [1, 2], "timestamp": [1, 2]})
    pq.write_table(table, tmp_path / "events.parquet")
    prepare(RawSource(str(tmp_path / "events.parquet")), tmp_path / "out2")
    assert sorted(pq.read_table(tmp_path / "out2" / "events")["user_id"].to_pylist()) == ["1", str(2 ** 64 - 1)]


def test_uint64_parquet_ids_beyond_int64_in_a_later_file_name_the_row(tmp_path):
    shards = tmp_path / "events"
    shards.mkdir()
    pq.write_table(pa.table({"user_id": pa.array([1, 2], pa.uint64()), "item_id": [1, 2], "timestamp": [1, 2]}), shards / "a.parquet")
    pq.write_table(pa.table({"user_id": pa.array([3, 2 ** 64 - 1], pa.uint64()), "item_id": [1, 2], "timestamp": [1, 2]}),
                   shards / "b.parquet")
    err = _prepare_error(tmp_path, shards)
    assert (err.file, err.row, err.column) == (str(shards / "b.parquet"), 2, "user_id") and "outside the int64 range" in str(err)


def test_a_spreadsheet_byte_order_mark_is_not_part_of_the_first_column(tmp_path, items_csv):
    """Excel's "CSV UTF-8" starts the file with U+FEFF; it failed as a missing 'user_id' column."""
    events = write_text(tmp_path / "events.csv", HEADER, GOOD)
    events.write_bytes("\ufeff".encode() + events.read_bytes())
    prepare(RawSource(str(events), str(items_csv)), tmp_path / "out")
    assert pq.read_table(tmp_path / "out" / "events").num_rows == len(GOOD)


def test_missing_column(tmp_path):
    events = write_text(tmp_path / "events.csv", ["user_id", "item_id"], [[1, 10]])
    err = _prepare_error(tmp_path, events)
    assert err.column == "timestamp" and "missing required column" in str(err) and str(events) in str(err)


def test_mistyped_parquet_column(tmp_path):
    events = write_parquet(tmp_path / "events.parquet", {"user_id": [True, False], "item_id": [1, 2], "timestamp": [1, 2]})
    err = _prepare_error(tmp_path, events)
    assert err.column == "user_id" and "bool" in str(err)


def test_parquet_rows_are_numbered_across_batches(tmp_path, monkeypatch):
    monkeypatch.setattr("raylurm.data.readers.BATCH_ROWS", 3)
    ts = [1600000000] * 7
    ts[5] = None
    events = write_parquet(tmp_path / "events.parquet", {"user_id": list(range(7)), "item_id": [1] * 7, "timestamp": ts})
    from raylurm.data import readers, validate

    q = validate.Quarantine(None, "error")
    conv = validate.TableConverter(validate.EVENTS, q)
    with pytest.raises(DataError) as info:
        for chunk in readers.iter_chunks(events, batch_rows=3):
            conv(chunk)
    assert info.value.row == 6 and info.value.line is None and info.value.column == "timestamp"


def test_malformed_csv_line(tmp_path):
    events = write_text(tmp_path / "events.csv", HEADER, GOOD)
    with open(events, "a") as fh:
        fh.write("4,10\n")
    err = _prepare_error(tmp_path, events)
    assert (err.row, err.line, err.column) == (4, 5, "timestamp")
    assert "expected 4 fields, found 2" in str(err)


@pytest.mark.parametrize("table", ["users", "items"])
def test_duplicate_key_rows(tmp_path, table):
    events = write_text(tmp_path / "events.csv", HEADER, GOOD)
    key = "user_id" if table == "users" else "item_id"
    rows = [[1, "a"], [2, "b"], [10, "c"], [11, "d"], [2, "e"]] if table == "users" else [[10, "a"], [11, "b"], [10, "c"]]
    side = write_text(tmp_path / f"{table}.csv", [key, "label" if table == "users" else "text"], rows)
    err = _prepare_error(tmp_path, events, **{table: side})
    assert err.file == str(side) and err.column == key and f"duplicate {key}" in str(err)
    assert err.row == len(rows) and "first seen at row" in str(err)


def test_quarantine_keeps_every_bad_row_with_reason(tmp_path, items_csv):
    bad = [[3, 10, "soon", "click"], [None, 10, 1600000000, "click"], [3, 99, 1600000000, "buy"]]
    events = write_text(tmp_path / "events.csv", HEADER, GOOD + bad)
    with open(events, "a") as fh:
        fh.write("7,7\n")
    manifest = prepare(RawSource(str(events), str(items_csv)), tmp_path / "out", on_bad_rows="quarantine")
    q = pq.read_table(tmp_path / "out" / "quarantine" / "events.parquet").to_pylist()
    assert [r["_row"] for r in q] == [4, 5, 6, 7]
    assert [r["_column"] for r in q] == ["timestamp", "user_id", "item_id", "timestamp"]
    assert all(r["_reason"] and r["_raw"] for r in q)
    assert manifest["counts"]["events"] == len(GOOD)
    assert sum(manifest["quarantined"]["events"].values()) == 4, "every input row is either kept or quarantined"
    kept = pq.read_table(tmp_path / "out" / "events").num_rows
    assert kept + len(q) == len(GOOD) + len(bad) + 1


def test_failed_prepare_keeps_previous_output(tmp_path, items_csv):
    good = write_text(tmp_path / "good.csv", HEADER, GOOD)
    prepare(RawSource(str(good), str(items_csv)), tmp_path / "out")
    before = pq.read_table(tmp_path / "out" / "events")
    bad = write_text(tmp_path / "bad.csv", HEADER, GOOD + [[1, 10, "never", "x"]])
    with pytest.raises(DataError):
        prepare(RawSource(str(bad), str(items_csv)), tmp_path / "out")
    assert pq.read_table(tmp_path / "out" / "events").equals(before)


def test_cli_reports_bad_csv_without_traceback(tmp_path, items_csv):
    events = write_text(tmp_path / "events.csv", HEADER, GOOD + [[3, 10, "yesterday", "click"]])
    proc = subprocess.run(
        [sys.executable, "-m", "raylurm.data", "validate", "--events", str(events), "--items", str(items_csv)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and str(events) in error_lines[0] and "row 4" in error_lines[0] and "'timestamp'" in error_lines[0]


def test_cli_takes_the_events_table_as_its_positional_file(tmp_path, items_csv):
    """``validate FILE``, as every validator is called, was a usage error (only --events was accepted)."""
    events = write_text(tmp_path / "events.csv", HEADER, GOOD)
    run = lambda *args: subprocess.run([sys.executable, "-m", "raylurm.data", "validate", *args],  # noqa: E731
                                       capture_output=True, text=True)
    proc = run(str(events), "--items", str(items_csv))
    assert proc.returncode == 0 and "valid: 3 events" in proc.stdout, proc.stderr
    proc = run()
    assert proc.returncode == 2 and "nothing to validate" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(str(events), "--events", str(items_csv))
    assert proc.returncode == 2 and "two events tables" in proc.stderr
    proc = run(str(events), "--events", str(tmp_path / "." / "events.csv"), "--items", str(items_csv))  # the same file
    assert proc.returncode == 0, proc.stderr


def test_cli_quarantine_summary(tmp_path, items_csv):
    events = write_text(tmp_path / "events.csv", HEADER, GOOD + [[3, 99, 1600000000, "click"]])
    qdir = tmp_path / "q"
    proc = subprocess.run(
        [sys.executable, "-m", "raylurm.data", "validate", "--events", str(events), "--items", str(items_csv),
         "--on-bad-rows", "quarantine", "--quarantine-dir", str(qdir)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "quarantined 1 events row" in proc.stdout and "valid: 3 events" in proc.stdout
    assert pq.read_table(qdir / "events.parquet").column("_reason").to_pylist() == ["item_id not found in the items table"]


def test_unknown_policy_is_rejected(tmp_path, items_csv):
    with pytest.raises(ValueError, match="on_bad_rows"):
        prepare(RawSource(str(items_csv)), tmp_path / "out", on_bad_rows="ignore")


def test_missing_file(tmp_path):
    err = _prepare_error(tmp_path, tmp_path / "nope.csv")
    assert "no such file" in str(err)
