"""Bundled MovieLens-1M: the published counts, the contract's columns, the labels."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq

from raylurm.data.movielens import AGE_BUCKETS, OCCUPATIONS
from raylurm.data.stats import dataset_stats


def test_ml1m_counts(ml1m_dir):
    stats = dataset_stats(ml1m_dir, progress=False)
    assert stats["events"] == 1_000_209
    assert stats["users"] == 6_040 and stats["users_in_table"] == 6_040
    assert stats["items_with_events"] == 3_706 and stats["items_in_catalogue"] == 3_883
    assert stats["events_per_user"]["p0"] == 20  # ML-1M keeps users with >= 20 ratings
    assert stats["time_span"][0].startswith("2000-04-25") and stats["time_span"][1].startswith("2003-02-28")
    assert stats["quarantined"] == {}


def test_ml1m_items_and_users_follow_the_contract(ml1m_dir):
    items = pq.read_table(ml1m_dir / "items.parquet")
    toy = items.filter(pc.equal(items["item_id"], "Toy Story (1995)")).to_pylist()[0]
    assert toy["category"] == ["Animation", "Children's", "Comedy"]
    assert toy["text"].startswith("Toy Story (1995)") and "Animation" in toy["text"]
    users = pq.read_table(ml1m_dir / "users.parquet")
    assert set(users.column_names) == {"user_id", "age", "gender", "occupation"}
    assert set(users["age"].to_pylist()) == set(AGE_BUCKETS.values())
    assert set(users["gender"].to_pylist()) == {"F", "M"}
    assert set(users["occupation"].to_pylist()) <= set(OCCUPATIONS)
    first = users.filter(pc.equal(users["user_id"], "1m_1")).to_pylist()[0]
    assert first == {"user_id": "1m_1", "age": "Under 18", "gender": "F", "occupation": "K-12 student"}


def test_cli_stats_json(ml1m_dir):
    proc = subprocess.run([sys.executable, "-m", "raylurm.data", "-q", "stats", str(ml1m_dir), "--json"],
                          capture_output=True, text=True, check=True)
    stats = json.loads(proc.stdout)
    assert (stats["events"], stats["users"], stats["items_with_events"]) == (1_000_209, 6_040, 3_706)
