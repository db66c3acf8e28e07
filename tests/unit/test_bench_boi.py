"""The BoI benchmark's single-process engines compute eq. 4 exactly; its report and CLI plumbing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylurm.bench import boi, common
from raylurm.bench.__main__ import build_parser, main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """About 5k synthetic events over 200 items, and a random D = 100 vocabulary."""
    workdir = tmp_path_factory.mktemp("bench")
    dataset = boi.ensure_dataset(workdir, 5000, 200)
    return workdir, dataset, boi.ensure_vocabulary(dataset, 100)


def _reference(dataset, vocabulary) -> pa.Table:
    """Plain pandas: join, count per user x UTC month x interest, log1p; flattened like read_cells."""
    events = pq.read_table(dataset / "events").to_pandas()
    assign = pq.read_table(vocabulary / "items.parquet").to_pandas().explode(["interest_ids", "interest_weights"])
    rows = events.merge(assign, on="item_id")
    when = pd.to_datetime(rows["timestamp"], unit="s", utc=True)
    rows["month"] = (when.dt.year - 1970) * 12 + when.dt.month - 1
    counts = rows.groupby(["user_id", "month", "interest_ids"])["interest_weights"].sum().astype(float).reset_index()
    return pa.table({"user_id": counts["user_id"].to_numpy(np.int64), "month": counts["month"].to_numpy(np.int32),
                     "interest": counts["interest_ids"].to_numpy(np.int32),
                     "value": np.log1p(counts["interest_weights"].to_numpy()).astype(np.float32)})


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_single_process_engines_match_a_pandas_reference(tiny, tmp_path, engine):
    _, dataset, vocabulary = tiny
    boi.BUILDERS[engine](dataset, vocabulary, tmp_path / engine)
    cells = boi.read_cells(tmp_path / engine)
    assert cells.num_rows > 1000 and len(np.unique(cells["month"].to_numpy())) > 12
    assert boi.compare_cells(_reference(dataset, vocabulary), cells) is None
    users = pq.read_table(tmp_path / engine).to_pylist()
    assert all(r["month_periods"] == sorted(r["month_periods"]) for r in users)
    assert all(ids == sorted(ids) for r in users for ids in r["month_ids"])


def test_compare_cells_reports_key_and_value_differences():
    a = pa.table({"user_id": [1, 1], "month": [5, 6], "interest": [3, 3], "value": np.float32([0.5, 0.7])})
    assert boi.compare_cells(a, a) is None
    assert "keys" in boi.compare_cells(a, a.set_column(2, "interest", pa.array([3, 4])))
    assert "differ" in boi.compare_cells(a, a.set_column(3, "value", pa.array(np.float32([0.5, 0.7001]))))
    assert "cells instead" in boi.compare_cells(a, a.slice(0, 1))


def test_random_vocabulary_is_seeded_hard_and_in_range():
    items = pa.array(np.arange(1000, dtype=np.int64))
    a, b = boi.random_vocabulary(items, 37), boi.random_vocabulary(items, 37)
    ids = a.interest_ids.flatten().to_numpy()
    assert a.num_interests == 37 and len(ids) == 1000 and ids.min() >= 0 and ids.max() < 37
    assert np.array_equal(ids, b.interest_ids.flatten().to_numpy())
    assert set(a.interest_weights.flatten().to_pylist()) == {1.0}


def test_replace_section_replaces_or_appends_and_keeps_the_rest():
    doc = "# T\n\nintro\n\n## A\n\nold a\n\n## B\n\nb text\n"
    replaced = common.replace_section(doc, "## A", "new a")
    assert "old a" not in replaced and "new a" in replaced
    assert "## B\n\nb text" in replaced and replaced.startswith("# T")
    appended = common.replace_section(doc, "## C", "c text")
    assert appended.startswith(doc.rstrip("\n")) and appended.endswith("## C\n\nc text\n")
    assert common.replace_section(replaced, "## A", "new a") == replaced


def test_sizes_and_engines_parse():
    assert boi.parse_sizes("1e6, 2500") == [1_000_000, 2500]
    args = build_parser().parse_args(["boi", "--events", "1e4", "--engines", "duckdb,polars"])
    assert args.command == "boi" and args.events == [10_000] and args.engines == ["duckdb", "polars"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["boi", "--engines", "spark"])


def test_end_to_end_without_ray_writes_its_section(tiny, tmp_path, capsys):
    workdir, _, _ = tiny
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## Other\n\nkeep me\n")
    code = main(["-q", "boi", "--events", "5000", "--interests", "100", "--engines", "polars,duckdb",
                 "--workdir", str(workdir), "--out", str(out)])
    assert code == 0
    text = out.read_text()
    assert "## Other\n\nkeep me" in text and boi.SECTION in text
    assert "polars, duckdb produced identical" in text and "--engines polars,duckdb" in text
    assert "| polars |" in capsys.readouterr().out
