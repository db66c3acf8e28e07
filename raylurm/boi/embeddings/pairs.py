"""Events and positive pairs: two events of one user less than β apart (LURM §3.1.1), used by both methods."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raylurm.data.errors import DataError

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
_MAX_DRAW_ROUNDS = 20  # draws of anchors while partners turn out to be the same item
Bounds = tuple[np.ndarray, np.ndarray]  # per event, [lo, hi) of its user's β-window: (E,), (E,)


@dataclasses.dataclass(frozen=True)
class EventLog:
    """Events sorted by (user, time): user codes, UTC seconds, item rows of ``items.parquet``."""

    user: np.ndarray  # (E,) int64
    time: np.ndarray  # (E,) int64
    item: np.ndarray  # (E,) int64

    @classmethod
    def from_events(cls, user: np.ndarray, time: np.ndarray, item: np.ndarray) -> EventLog:
        """Sort (E,) arrays of events in any order by (user, time)."""
        order = np.lexsort((time, user))
        return cls(*(np.asarray(a, np.int64)[order] for a in (user, time, item)))


def _event_files(dataset_dir: Path) -> list[Path]:
    files = sorted((dataset_dir / "events").glob("part-*.parquet"))
    if not files:
        raise DataError("the dataset has no events (events/part-*.parquet)", file=str(dataset_dir))
    return files


def _sample_users(files: list[Path], max_events: int, rng: np.random.Generator) -> pa.Array | None:
    """Whole users in random order while their events fit ``max_events``; None when all fit."""
    counts = pa.concat_tables(pq.read_table(f, columns=["user_id"]).group_by("user_id").aggregate([([], "count_all")])
                              for f in files)
    counts = counts.group_by("user_id").aggregate([("count_all", "sum")]).sort_by("user_id")
    sizes = counts["count_all_sum"].to_numpy()
    if sizes.sum() <= max_events:
        return None
    order = rng.permutation(sizes.size)
    keep = max(1, int(np.searchsorted(np.cumsum(sizes[order]), max_events, side="right")))
    logger.info("sampling %d of %d users (%d events at most)", keep, sizes.size, max_events)
    return counts["user_id"].take(pa.array(order[:keep])).combine_chunks()


def _read_events(file: Path, users: pa.Array | None) -> pa.Table:
    table = pq.read_table(file, columns=["user_id", "item_id", "timestamp"])
    return table if users is None else table.filter(pc.is_in(table["user_id"], value_set=users))


def load_events(dataset_dir: str | os.PathLike, item_ids: pa.Array, max_events: int,
                rng: np.random.Generator) -> EventLog:
    """The events of a bounded random sample of whole users, items as rows of ``item_ids``."""
    files = _event_files(Path(dataset_dir))
    users = _sample_users(files, max_events, rng)
    events = pa.concat_tables([_read_events(f, users) for f in files])
    item = pc.index_in(events["item_id"].cast(item_ids.type), value_set=item_ids)
    known = pc.is_valid(item)
    if (unknown := events.num_rows - pc.sum(known).as_py()) > 0:
        logger.warning("dropping %d event(s) whose item is not in items.parquet", unknown)
        events, item = events.filter(known), item.filter(known)
    user = pc.index_in(events["user_id"], value_set=pc.unique(events["user_id"]))
    return EventLog.from_events(*(np.asarray(c.to_numpy()) for c in (user, events["timestamp"], item)))


def window_bounds(log: EventLog, window_seconds: float) -> Bounds:
    """For each event, ``[lo, hi)``: the events of the same user with ``|Δt| < β`` (itself included)."""
    reach = math.ceil(window_seconds) - 1  # integer seconds: |Δt| < β  <=>  |Δt| <= reach
    if log.time.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    t = log.time - log.time.min()
    stride = int(t.max()) + 2 * reach + 1  # keys of different users are more than `reach` apart
    if (int(log.user.max()) + 1) * stride >= 2**62:
        raise ValueError(f"time span x users too large for int64 window keys (window {window_seconds} s)")
    key = log.user * stride + t  # (E,) sorted
    return np.searchsorted(key, key - reach, "left"), np.searchsorted(key, key + reach, "right")


def sample_partners(log: EventLog, bounds: Bounds, anchors: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One uniform partner per anchor inside its β-window (not itself); pairs on one item are dropped."""
    lo, hi = bounds
    count = hi[anchors] - lo[anchors] - 1  # candidates other than the anchor itself
    anchors, count = anchors[count > 0], count[count > 0]
    partners = lo[anchors] + rng.integers(0, count)
    partners += partners >= anchors  # skip the anchor
    keep = log.item[partners] != log.item[anchors]
    return anchors[keep], partners[keep]


def draw_pairs(log: EventLog, bounds: Bounds, num_pairs: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num_pairs`` positive pairs of event indices (anchor, partner): anchors uniform over the events
    with a window partner, redrawn while the partner is the same item (at most 20 rounds)."""
    eligible = np.flatnonzero(bounds[1] - bounds[0] > 1)
    if eligible.size == 0:
        raise DataError("no positive pairs: no user has two events closer than the window β")
    found: list[tuple[np.ndarray, np.ndarray]] = []
    have = 0
    for _ in range(_MAX_DRAW_ROUNDS):
        pair = sample_partners(log, bounds, eligible[rng.integers(0, eligible.size, num_pairs - have)], rng)
        found, have = found + [pair], have + pair[0].size
        if have >= num_pairs:
            break
    if have == 0:
        raise DataError("no positive pairs: events within the window β are all on the same item")
    if have < num_pairs:
        logger.warning("drew only %d of %d positive pairs (most windows hold a single item)", have, num_pairs)
    return np.concatenate([p[0] for p in found]), np.concatenate([p[1] for p in found])
