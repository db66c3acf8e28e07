"""LURM's event-level positive views (raylurm.train.views): windows, their BoI, the identical-view count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from raylurm.boi.pipeline import period_index
from raylurm.train.batch import collate, synthetic_rows
from raylurm.train.views import EventViews, ItemInterests, histories, identical, sample_event_windows

NUM_ITEMS, NUM_INTERESTS = 30, 7
MONTH = 2_629_746  # seconds in an average month


def _interests(soft: bool = False) -> ItemInterests:
    if soft:  # two interests per item, weights 0.75 / 0.25; item 5 has none
        ids = [[] if i == 5 else [i % NUM_INTERESTS, (i + 3) % NUM_INTERESTS] for i in range(NUM_ITEMS)]
        weights = [[] if i == 5 else [0.75, 0.25] for i in range(NUM_ITEMS)]
    else:
        ids, weights = [[i % NUM_INTERESTS] for i in range(NUM_ITEMS)], [[1.0]] * NUM_ITEMS
    return ItemInterests(pa.array(ids, pa.list_(pa.int32())), pa.array(weights, pa.list_(pa.float32())))


def _rows(histories_: list[list[tuple[int, int]]], split_at: int | None = None) -> pa.Table:
    """(item, timestamp) histories -> BoI-like rows; with ``split_at`` the events before the latest ``split_at``
    go to ``earlier_*`` as the pipeline writes them."""
    cols: dict[str, list] = {"user_id": list(range(len(histories_)))}
    for prefix, part in (("", lambda h: h if split_at is None else h[max(0, len(h) - split_at):]),
                         ("earlier_", lambda h: [] if split_at is None else h[:max(0, len(h) - split_at)])):
        if prefix and split_at is None:
            continue
        cols[f"{prefix}items"] = [[i for i, _ in part(h)] for h in histories_]
        cols[f"{prefix}timestamps"] = [[t for _, t in part(h)] for h in histories_]
    schema = pa.schema([(k, pa.int64() if k == "user_id" else pa.list_(pa.int32() if k.endswith("items") else pa.int64()))
                        for k in cols])
    return pa.table(cols, schema=schema)


def test_histories_join_earlier_and_latest_events_in_time_order() -> None:
    rng = np.random.default_rng(0)
    users = [[(int(rng.integers(NUM_ITEMS)), 1_500_000_000 + 1000 * k) for k in range(n)] for n in (0, 1, 5, 9)]
    items, times, lengths = histories(_rows(users, split_at=3))
    assert lengths.tolist() == [0, 1, 5, 9]
    assert items.tolist() == [i for h in users for i, _ in h] and times.tolist() == [t for h in users for _, t in h]
    alone = histories(_rows(users))  # rows without earlier_* columns
    assert alone[0].tolist() == items.tolist() and alone[2].tolist() == lengths.tolist()


def test_event_windows_are_contiguous_non_empty_and_inside_the_history() -> None:
    rng = np.random.default_rng(1)
    lengths = np.array([0, 1, 2, 3, 10, 57, 1000] * 200)
    for fraction in (0.1, 0.5, 1.0):
        start, size = sample_event_windows(lengths, fraction, rng)
        assert (start >= 0).all() and (start + size <= lengths).all()
        has = lengths > 0
        assert (size[has] >= np.maximum(np.ceil(fraction * lengths[has]), 1)).all() and (size[~has] == 0).all()
    start, size = sample_event_windows(np.full(20_000, 10), 0.5, rng)
    assert set(size.tolist()) == set(range(5, 11))  # sizes uniform on [⌈f·n⌉, n]
    assert abs((size == 5).mean() - 1 / 6) < 0.02 and set(start[size == 5].tolist()) == set(range(6))
    with pytest.raises(ValueError, match="min_fraction"):
        sample_event_windows(lengths, 0.0, rng)


def test_a_one_month_user_gets_two_different_views() -> None:
    """Calendar windows give a one-month user the same bags twice; event windows rarely do (here: at the rate
    the window law predicts for 6 events of distinct interests, f = 0.5)."""
    user = [(k, 1_500_000_000 + 3600 * k) for k in range(6)]  # 6 events, items 0..5 -> 6 distinct interests, one month
    table = _rows([user] * 4000)
    out = EventViews(_interests(), ("month", "year"), 0.5, seed=3)(table)
    assert len(set(period_index(np.array([t for _, t in user]), "month").tolist())) == 1
    sizes = np.arange(3, 7)  # P(same window) = Σ_size (1/4)² / (6 - size + 1)
    expected = float(sum((1 / 4) ** 2 / (6 - s + 1) for s in sizes))
    assert abs(float(out["identical_views"]) - expected) < 0.02, (float(out["identical_views"]), expected)
    assert float(out["identical_views"]) < 0.2


def _pandas_bags(items: list[int], times: list[int], interests: ItemInterests, scale: str) -> pd.DataFrame:
    """A window's BoI recomputed row by row with pandas: (period, interest) -> log(1 + Σ weight)."""
    rows = []
    for item, t in zip(items, times):
        lo, n = interests.offsets[item], interests.counts[item]
        for j in range(n):
            rows.append((int(period_index(np.array([t]), scale)[0]), int(interests.ids[lo + j]), float(interests.weights[lo + j])))
    frame = pd.DataFrame(rows, columns=["period", "interest", "weight"])
    out = frame.groupby(["period", "interest"], as_index=False)["weight"].sum()
    out["value"] = np.log1p(out["weight"]).astype(np.float32)
    return out[["period", "interest", "value"]].sort_values(["period", "interest"]).reset_index(drop=True)


@pytest.mark.parametrize("soft", [False, True])
def test_the_boi_of_each_view_equals_a_pandas_recomputation_of_its_events(soft: bool, monkeypatch) -> None:
    rng = np.random.default_rng(4)
    users = [sorted(((int(rng.integers(NUM_ITEMS)), int(1_400_000_000 + rng.integers(0, 60) * MONTH // 3)) for _ in range(n)),
                    key=lambda e: e[1]) for n in (0, 1, 4, 25, 80)]
    interests = _interests(soft)
    drawn = []
    real = sample_event_windows
    monkeypatch.setattr("raylurm.train.views.sample_event_windows", lambda *a: drawn.append(real(*a)) or drawn[-1])
    out = EventViews(interests, ("month", "year"), 0.3, seed=5)(_rows(users, split_at=10))
    for v, (start, size) in enumerate(drawn):
        for scale in ("month", "year"):
            lengths = out[f"view{v}_{scale}_lengths"].numpy()
            offsets = out[f"view{v}_{scale}_offsets"].numpy()
            ids, values = out[f"view{v}_{scale}_ids"].numpy(), out[f"view{v}_{scale}_values"].numpy()
            bag_ends = np.append(offsets[1:], len(ids))
            first_bag = np.cumsum(lengths) - lengths
            for u, history in enumerate(users):
                window = history[start[u]:start[u] + size[u]]
                want = _pandas_bags([i for i, _ in window], [t for _, t in window], interests, scale)
                got = [(int(out[f"view{v}_{scale}_periods"][b]), int(i), float(x))
                       for b in range(first_bag[u], first_bag[u] + lengths[u]) for i, x in
                       zip(ids[offsets[b]:bag_ends[b]], values[offsets[b]:bag_ends[b]])]
                assert [(p, i) for p, i, _ in got] == list(zip(want["period"], want["interest"])), (v, scale, u)
                np.testing.assert_allclose([x for *_, x in got], want["value"].to_numpy(), rtol=1e-6)


def test_identical_counts_users_whose_entries_all_match() -> None:
    rng = np.random.default_rng(6)
    for _ in range(50):
        n_users = 6
        per_user = [sorted({(int(rng.integers(3)), int(rng.integers(4))) for _ in range(rng.integers(0, 4))}) for _ in range(n_users)]
        a = [(u, p, i, 1.0) for u in range(n_users) for p, i in per_user[u]]
        b_users = [list(e) if rng.random() < 0.5 else sorted({(int(rng.integers(3)), int(rng.integers(4))) for _ in range(rng.integers(0, 4))})
                   for e in per_user]
        b = [(u, p, i, 1.0 if rng.random() < 0.8 else 2.0) for u in range(n_users) for p, i in b_users[u]]
        arrays = [tuple(np.array([e[k] for e in entries], dtype=float if k == 3 else np.int64).reshape(-1) for k in range(4))
                  for entries in (a, b)]
        got = identical(*arrays, n_users)
        want = [[e[1:] for e in a if e[0] == u] == [e[1:] for e in b if e[0] == u] for u in range(n_users)]
        assert got.tolist() == want


def test_views_batch_matches_collate_layout_and_trains_lurm() -> None:
    from raylurm.methods.lurm import LURM, LURMConfig
    from raylurm.train.batch import DataInfo

    table = synthetic_rows(9, NUM_INTERESTS, NUM_ITEMS, seed=2, max_events=30)
    views = EventViews(_interests(), ("month", "year"), 0.5, seed=0)(table)
    for v in ("view0_", "view1_"):
        for scale in ("month", "year"):
            assert views[f"{v}{scale}_lengths"].shape == (9,) and views[f"{v}{scale}_lengths"].sum() == len(views[f"{v}{scale}_periods"])
            assert views[f"{v}{scale}_ids"].dtype == torch.int64 and views[f"{v}{scale}_values"].dtype == torch.float32
    info = DataInfo(num_interests=NUM_INTERESTS, num_items=NUM_ITEMS, num_behaviors=3, scales=("month", "year"), max_sequence_length=30)
    torch.manual_seed(0)
    model = LURM(LURMConfig(num_anchors=2, hidden_dim=8), info)
    out = model({**collate(table), **views})
    assert torch.isfinite(out["loss"]) and 0 <= float(out["identical_views"]) <= 1
    assert float(out["loss_chance"]) == pytest.approx(np.log(17))
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="event-level views"):
        model(collate(table))
