"""LURM's positive views at the event level (§3.2.4): two continuous sub-sequences of each user's
whole event history, each bucketed into month and year BoI (eq. 4) on the worker, every step.

The paper's positives are "continuous sub-sequences randomly sampled from the whole life time".
Drawn on the calendar grid instead (the first implementation, still ``LURMConfig.views =
"calendar"``), a user active in one month gets the same bags twice: 88.6 % of ML-1M's
pretraining users had identical views and the loss fell to 0.07 — solved by any injective map.
Drawn on events, a one-month user with two or more events still gets two different bags.

Window law (a choice; the paper gives none): for a history of ``n`` events, a view's length is
uniform on ``[⌈f·n⌉, n]`` (``f = min_window_fraction``) and its start uniform among the positions
where it fits; the two views are drawn independently. A view's events are counted into month and
year bags exactly as the BoI pipeline counts a whole history (:func:`raylurm.boi.pipeline.bag_entries`),
with the vocabulary's item -> interest(s) assignment; the result has the layout of
:func:`raylurm.train.batch.collate_sparse` under the keys ``view0_<scale>_*`` and ``view1_<scale>_*``
— sparse throughout, never densified to D.

The history is the BoI row's ``earlier_*`` events followed by its latest ``items`` (rows built
without ``earlier_*`` columns: the latest events only).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from raylurm.boi.pipeline import bag_entries, period_index
from raylurm.train.windows import history_take

log = logging.getLogger(__name__)

VIEW_PREFIXES = ("view0_", "view1_")


def _flat(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """list<x> column -> (flattened values, lengths)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    return pc.list_flatten(column).to_numpy(zero_copy_only=False), lengths


def histories(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's whole known history in time order -> (items (E,), timestamps (E,), events per row (B,))."""
    items, n_recent = _flat(table["items"])
    times, _ = _flat(table["timestamps"])
    if "earlier_items" not in table.column_names:
        return items.astype(np.int64), times.astype(np.int64), n_recent
    earlier_items, n_earlier = _flat(table["earlier_items"])
    earlier_times, _ = _flat(table["earlier_timestamps"])
    lengths = n_earlier + n_recent
    row = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    take = history_take(row, position, n_earlier, n_recent)
    return (np.concatenate([earlier_items, items]).astype(np.int64)[take],
            np.concatenate([earlier_times, times]).astype(np.int64)[take], lengths)


def sample_event_windows(lengths: np.ndarray, min_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One window per history: (start, size) (B,) each; size uniform on [⌈f·n⌉, n], start uniform in [0, n - size]."""
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    n = np.asarray(lengths, dtype=np.int64)
    shortest = np.minimum(np.maximum(np.ceil(n * min_fraction).astype(np.int64), 1), n)
    size = shortest + np.floor(rng.random(len(n)) * (n - shortest + 1)).astype(np.int64)
    size = np.minimum(size, n)
    start = np.floor(rng.random(len(n)) * (n - size + 1)).astype(np.int64)
    return np.minimum(start, n - size), size


class ItemInterests:
    """The vocabulary's item index -> interest ids and weights, as CSR arrays (a few bytes per item)."""

    def __init__(self, interest_ids: pa.ListArray, interest_weights: pa.ListArray):
        ids = interest_ids.combine_chunks() if isinstance(interest_ids, pa.ChunkedArray) else interest_ids
        weights = interest_weights.combine_chunks() if isinstance(interest_weights, pa.ChunkedArray) else interest_weights
        self.counts = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)  # (items,)
        self.offsets = np.cumsum(self.counts) - self.counts
        self.ids = pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        self.weights = pc.list_flatten(weights).to_numpy(zero_copy_only=False).astype(np.float64)

    @classmethod
    def from_boi(cls, boi_dir: str | os.PathLike) -> "ItemInterests":
        table = pq.read_table(Path(boi_dir) / "vocabulary" / "items.parquet", columns=["interest_ids", "interest_weights"])
        return cls(table["interest_ids"], table["interest_weights"])

    def expand(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Events' item indices (E,) -> (event of each (event, interest) row, interest, weight)."""
        per_event = self.counts[items]
        event = np.repeat(np.arange(len(items)), per_event)
        slot = np.arange(per_event.sum()) - np.repeat(np.cumsum(per_event) - per_event, per_event)
        index = self.offsets[items][event] + slot
        return event, self.ids[index], self.weights[index]


def sparse_bags(user: np.ndarray, period: np.ndarray, interest: np.ndarray, value: np.ndarray, num_users: int,
                scale: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """Sorted (user, period, interest) entries (:func:`bag_entries`) -> the tensors of ``collate_sparse``."""
    new = np.ones(len(user), dtype=bool)
    new[1:] = (user[1:] != user[:-1]) | (period[1:] != period[:-1])
    starts = np.flatnonzero(new)
    return {
        f"{prefix}{scale}_ids": torch.from_numpy(interest.astype(np.int64)),
        f"{prefix}{scale}_values": torch.from_numpy(value.astype(np.float32)),
        f"{prefix}{scale}_offsets": torch.from_numpy(starts.astype(np.int64)),
        f"{prefix}{scale}_periods": torch.from_numpy(period[starts].astype(np.int64)),
        f"{prefix}{scale}_lengths": torch.from_numpy(np.bincount(user[starts], minlength=num_users).astype(np.int64)),
    }


def identical(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...], num_users: int) -> np.ndarray:
    """Which users' two views hold the same bags: entries (user, period, interest, value) of each -> (B,) bool."""
    count_a, count_b = np.bincount(a[0], minlength=num_users), np.bincount(b[0], minlength=num_users)
    same = count_a == count_b
    rows_a, rows_b = same[a[0]], same[b[0]]  # entries of users with as many entries in both views: they align
    differs = np.zeros(int(rows_a.sum()), dtype=bool)
    for x, y in zip(a[1:], b[1:]):
        differs |= x[rows_a] != y[rows_b]
    mismatches = np.bincount(a[0][rows_a], weights=differs, minlength=num_users)
    return same & (mismatches == 0)


class EventViews:
    """Builds the two views of every user of a batch of BoI rows (called on each worker, every step)."""

    def __init__(self, interests: ItemInterests, scales: tuple[str, ...], min_fraction: float, seed: int = 0):
        self.interests, self.scales, self.min_fraction = interests, tuple(scales), min_fraction
        self.rng = np.random.default_rng(seed)
        self._warned = False

    def __call__(self, table: pa.Table) -> dict[str, torch.Tensor]:
        if "items" not in table.column_names:
            raise ValueError("event-level views need the BoI rows' sequences (build the BoI with sequences=True), "
                             "or set views=\"calendar\"")
        if "earlier_items" not in table.column_names and not self._warned:
            log.warning("BoI rows without earlier_* columns: the views are drawn from each user's latest events only")
            self._warned = True
        items, times, lengths = histories(table)
        periods = {scale: period_index(times, scale) for scale in self.scales}
        user_of_event = np.repeat(np.arange(len(lengths)), lengths)
        position = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out: dict[str, torch.Tensor] = {}
        entries = []
        for prefix in VIEW_PREFIXES:
            start, size = sample_event_windows(lengths, self.min_fraction, self.rng)
            inside = (position >= start[user_of_event]) & (position < (start + size)[user_of_event])
            chosen = np.flatnonzero(inside)
            event, interest, weight = self.interests.expand(items[chosen])
            for k, scale in enumerate(self.scales):
                found = bag_entries(user_of_event[chosen][event], periods[scale][chosen][event], interest, weight)
                out.update(sparse_bags(*found, len(lengths), scale, prefix))
                if k == 0:
                    entries.append(found)
        has_events = lengths > 0
        same = identical(entries[0], entries[1], len(lengths))[has_events]
        out["identical_views"] = torch.tensor(float(same.mean()) if same.size else 0.0)
        return out


def synthetic_event_views(table: pa.Table, num_interests: int, scales: tuple[str, ...] = ("month", "year"),
                          min_fraction: float = 0.5, seed: int = 0) -> EventViews:
    """Views of rows without a vocabulary (``synthetic_rows``), item i in interest i mod D: tests, benchmarks."""
    items, _, _ = histories(table)
    num_items = int(items.max(initial=-1)) + 1
    interests = ItemInterests(pa.array([[i % num_interests] for i in range(num_items)], pa.list_(pa.int32())),
                              pa.array([[1.0]] * num_items, pa.list_(pa.float32())))
    views = EventViews(interests, scales, min_fraction, seed)
    views._warned = True  # synthetic rows have no earlier_* columns by construction
    return views


def synthetic_views(table: pa.Table, num_interests: int, scales: tuple[str, ...] = ("month", "year"),
                    min_fraction: float = 0.5, seed: int = 0) -> dict[str, torch.Tensor]:
    """One draw of :func:`synthetic_event_views` for ``table``."""
    return synthetic_event_views(table, num_interests, scales, min_fraction, seed)(table)
