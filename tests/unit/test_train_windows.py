"""Training windows over the whole history (``raylurm.train.windows``): every transition once per epoch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raylurm.config import apply_overrides
from raylurm.methods import METHODS
from raylurm.train.batch import DataInfo, collate
from raylurm.train.windows import expand, has_earlier_events, window_bounds


@pytest.mark.parametrize("size", [2, 3, 5, 201])
def test_windows_cover_every_transition_exactly_once(size):
    lengths = np.array([0, 1, 2, size - 1, size, size + 1, 2 * size, 7 * size + 3, 1000])
    row, start, end = window_bounds(lengths, size)
    assert ((end - start) <= size).all() and (start >= 0).all()
    for user, n in enumerate(lengths):
        mine = np.flatnonzero(row == user)
        assert len(mine) >= 1
        assert end[mine[0]] == n  # window 0 ends at the latest event
        transitions = [t for w in mine for t in range(start[w], end[w] - 1)]  # x_t -> x_{t+1} inside window w
        assert sorted(transitions) == list(range(max(0, n - 1)))  # each of the n - 1 transitions once
        assert min(start[mine]) == 0  # the oldest event is read


def test_a_window_needs_an_input_and_a_target():
    with pytest.raises(ValueError, match="at least 2"):
        window_bounds(np.array([3]), 1)


def _rows(histories: dict[int, list[int]], recent: int) -> pa.Table:
    """BoI-like rows: the latest ``recent`` events in items, the rest in earlier_items (timestamps = 10·item)."""
    def lists(pick, scale, dtype):
        return pa.array([[scale * x for x in pick(h)] for h in histories.values()], pa.list_(dtype))
    latest, before = (lambda h: h[-recent:]), (lambda h: h[:-recent] if len(h) > recent else [])
    return pa.table({
        "user_id": pa.array(list(histories), pa.int64()),
        "items": lists(latest, 1, pa.int32()), "behaviors": lists(lambda h: [x % 3 for x in latest(h)], 1, pa.int8()),
        "timestamps": lists(latest, 10, pa.int64()),
        "earlier_items": lists(before, 1, pa.int32()), "earlier_behaviors": lists(lambda h: [x % 3 for x in before(h)], 1, pa.int8()),
        "earlier_timestamps": lists(before, 10, pa.int64()),
        "month_periods": pa.array([[1]] * len(histories), pa.list_(pa.int32())),
    })


def test_expand_reassembles_every_users_history():
    rng = np.random.default_rng(0)
    histories = {u: list(rng.integers(0, 50, size=n)) for u, n in zip(range(100, 108), [1, 4, 5, 6, 13, 40, 0, 9])}
    out = expand(_rows(histories, recent=5), size=4, seed=3)
    assert out.column_names == ["user_id", "items", "behaviors", "timestamps"]
    seen: dict[int, list[tuple[int, int]]] = {u: [] for u in histories}
    for r in out.to_pylist():
        assert len(r["items"]) <= 4
        assert r["timestamps"] == [10 * x for x in r["items"]] and r["behaviors"] == [x % 3 for x in r["items"]]
        seen[r["user_id"]] += list(zip(r["items"][:-1], r["items"][1:]))
    for user, history in histories.items():
        assert sorted(seen[user]) == sorted(zip(history[:-1], history[1:]))  # every transition once
    assert len(set(out["user_id"].to_pylist()[:3])) > 1  # one user's windows are spread, not adjacent


def test_expand_on_sliced_input():
    histories = {u: list(range(u, u + 3 * u)) for u in range(1, 6)}
    table = _rows(histories, recent=4).slice(2, 3)
    out = expand(table, size=5)
    got = {u: [] for u in (3, 4, 5)}
    for r in out.to_pylist():
        got[r["user_id"]] += list(zip(r["items"][:-1], r["items"][1:]))
    assert all(sorted(got[u]) == sorted(zip(histories[u][:-1], histories[u][1:])) for u in got)


def test_windows_feed_the_sequence_methods():
    info = DataInfo(num_interests=4, num_items=50, num_behaviors=3, scales=("month", "year"), max_sequence_length=4)
    out = expand(_rows({1: list(range(1, 12)), 2: [3, 4]}, recent=4), size=5)
    batch = collate(out, ())
    assert batch["items"].shape[1] <= 5 and has_earlier_events(_rows({1: [1]}, 1).column_names)
    for name in ("sasrec", "dss", "atrank"):
        cls = METHODS[name]
        assert cls.training_window(cls.Config(), info) == 5
        for config in (cls.Config(), apply_overrides(cls.Config(), [f"{k}={v}" for k, v in cls.paper_loss.items()])):
            loss = cls(config, info)(batch)["loss"]  # the default and the paper's loss (the ablation row)
            assert np.isfinite(loss.item())
    assert not hasattr(METHODS["lurm"], "training_window") and not hasattr(METHODS["adaptssr"], "training_window")
