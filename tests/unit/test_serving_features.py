"""Raw events -> BoI rows for serving: the pipeline's stages on a hand-checked example, and bad input."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pyarrow as pa
import pytest

from raylurm.boi.vocabulary import VocabularyConfig, build_vocabulary
from raylurm.serving.features import EventEncoder


def _ts(year: int, month: int, day: int = 1) -> int:
    return int(dt.datetime(year, month, day, tzinfo=dt.timezone.utc).timestamp())


@pytest.fixture
def boi_dir(tmp_path):
    rng = np.random.default_rng(0)
    vocab = build_vocabulary(pa.array([10, 11, 12, 13], pa.int64()), rng.normal(size=(4, 8)).astype(np.float32),
                             VocabularyConfig(num_interests=2))
    vocab.save(tmp_path / "vocabulary")
    (tmp_path / "manifest.json").write_text(json.dumps({
        "vocabulary_hash": vocab.content_hash, "behaviors": ["rate"],
        "config": {"boi": {"scales": ["month", "year"], "max_sequence_length": 5, "sequences": True,
                           "on_unknown_items": "error", "since": None, "until": None, "num_partitions": None, "concurrency": None}}}))
    return tmp_path, vocab


def test_events_become_log_count_bags_per_period(boi_dir):
    path, vocab = boi_dir
    interest = dict(zip(vocab.item_ids.to_pylist(), [ids[0] for ids in vocab.interest_ids.to_pylist()]))
    encoder = EventEncoder(path)
    events = [{"item_id": 10, "timestamp": _ts(2000, 1, 3)}, {"item_id": 10, "timestamp": _ts(2000, 1, 9)},
              {"item_id": "11", "timestamp": _ts(2000, 3, 1)}, {"item_id": 99, "timestamp": _ts(2000, 3, 2)}]
    out = encoder.encode(["u"], [events])
    row = out.rows.to_pylist()[0]
    assert out.unknown_items == [99] and row["num_skipped"] == 1 and row["num_events"] == 4
    # months: Jan 2000 has item 10 twice, Mar 2000 item 11 once -> log(1 + count) on their interests
    months = list(zip(row["month_ids"], row["month_values"]))
    assert months[0] == ([interest[10]], [pytest.approx(math.log(3))])
    assert months[1] == ([interest[11]], [pytest.approx(math.log(2))])
    year_bag = dict(zip(row["year_ids"][0], row["year_values"][0]))
    expected = {}
    for item in (10, 10, 11):
        expected[interest[item]] = expected.get(interest[item], 0) + 1
    assert year_bag == {k: pytest.approx(math.log1p(v)) for k, v in expected.items()}


def test_bad_events_are_refused_with_the_reason(boi_dir):
    encoder = EventEncoder(boi_dir[0])
    with pytest.raises(ValueError, match="is not an integer"):
        encoder.encode(["u"], [[{"item_id": "abc", "timestamp": _ts(2000, 1)}]])
    with pytest.raises(ValueError, match="behavior 'click' is not one of the model's"):
        encoder.encode(["u"], [[{"item_id": 10, "timestamp": _ts(2000, 1), "behavior": "click"}]])
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        EventEncoder(boi_dir[0] / "vocabulary")
