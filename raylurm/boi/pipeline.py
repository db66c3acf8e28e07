"""Bag-of-Interests sequences on Ray Data, streaming (LURM §3.1.2, eq. 4).

For user u and period t, ``b_t[j] = log(1 + #{events of u in t whose item is in interest j})``
(with soft assignment the count is the sum of the item's interest weights). Periods are UTC
calendar months (index = months since 1970-01) and years (years since 1970).

Pipeline (never densified to D):

1. ``read_parquet`` the prepared events;
2. ``map_batches(EventMapper)`` — a callable class that loads the vocabulary once per actor:
   item -> item index, timestamp -> month/year, user -> hash partition;
3. ``groupby("partition").map_groups(build_user_rows)`` — a hash shuffle by user into a
   bounded number of partitions, then one vectorised numpy pass per partition (no per-user
   Python) builds every user's sparse per-period vectors and raw ordered sequences;
4. ``write_parquet`` into a temporary directory that is renamed into place.

Output row (one per user): ``user_id``; per scale ``<scale>_periods`` list<int32>,
``<scale>_ids`` list<list<int32>> (interest ids, ascending), ``<scale>_values``
list<list<float32>>; the raw sequence capped to the most recent ``max_sequence_length`` events:
``items`` list<int32> (vocabulary item index), ``behaviors`` list<int8> (index into the
manifest's ``behaviors``), ``timestamps`` list<int64>; the events before those, oldest first (empty for most users), in
``earlier_items`` / ``earlier_behaviors`` / ``earlier_timestamps`` — what training windows over
the whole history read (:mod:`raylurm.train.windows`), never an encoder's input;
``num_events`` and ``num_skipped``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Annotated, Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pydantic import Field, model_validator

from raylurm.boi.vocabulary import Vocabulary
from raylurm.config import typed_config
from raylurm.data.errors import DataError
from raylurm.data.prepare import load_manifest
from raylurm.data.schema import MAX_TIMESTAMP, MIN_TIMESTAMP

log = logging.getLogger(__name__)

Scale = Literal["month", "year"]
SCALES = get_args(Scale)
UnknownItemPolicy = Literal["error", "skip"]
UNKNOWN_ITEM_POLICIES = get_args(UnknownItemPolicy)


@typed_config
class BoiConfig:
    scales: Annotated[tuple[Scale, ...], Field(min_length=1, description="which period scales to build")] = SCALES
    max_sequence_length: Annotated[int, Field(
        ge=1, description="raw item/behaviour/time sequence: most recent events kept")] = 200
    sequences: Annotated[bool, Field(
        description="also write the raw sequences (ATRank, DSS, AdaptSSR train on them)")] = True
    # a choice: ML-1M's 1,392 users with more than 200 events hold 31 % of its events; the
    # sequence methods train on windows over all of them (raylurm.train.windows)
    earlier_events: Annotated[bool, Field(description=(
        "with sequences: also write the events before the latest max_sequence_length (earlier_* columns)"))] = True
    on_unknown_items: Annotated[UnknownItemPolicy, Field(
        description='events whose item has no interest: "error" or "skip" (counted)')] = "error"
    since: Annotated[int | None, Field(description="keep events with timestamp >= since (UTC seconds)")] = None
    until: Annotated[int | None, Field(description="keep events with timestamp < until (UTC seconds)")] = None
    num_partitions: Annotated[int | None, Field(
        ge=1, description="shuffle partitions (default: from data size and CPUs)")] = None
    concurrency: Annotated[int | None, Field(
        ge=1, description="Ray Data workers per stage (default: Ray's choice)")] = None

    @model_validator(mode="after")
    def _rules(self) -> BoiConfig:
        lo, hi = self.since if self.since is not None else MIN_TIMESTAMP, self.until if self.until is not None else MAX_TIMESTAMP
        if not MIN_TIMESTAMP <= lo < hi <= MAX_TIMESTAMP:  # a DataError, as a bad time range in the data
            raise DataError(f"time range [{self.since}, {self.until}) is empty or outside 1970..2100 (UTC seconds)")
        return self


def period_index(timestamps: np.ndarray, scale: str) -> np.ndarray:
    """Calendar period of UTC-second timestamps: months or years since 1970 (int32)."""
    unit = {"month": "M", "year": "Y"}[scale]
    return timestamps.astype("datetime64[s]").astype(f"datetime64[{unit}]").astype(np.int32)


def user_partition(user_ids: pa.Array, num_partitions: int) -> np.ndarray:
    """Stable hash partition of user ids (int or string) — the same user always lands together."""
    values = user_ids.to_numpy(zero_copy_only=False)
    return (pd.util.hash_array(values) % np.uint64(num_partitions)).astype(np.int32)


class EventMapper:
    """Stage 2: item -> interests (+ vocabulary index), time -> periods, user -> partition.

    Events whose item has no interest get item index -1 and are counted per user in stage 3
    (``num_skipped``); with ``on_unknown_items="error"`` the driver then raises.

    A callable class, so each Ray Data actor receives the vocabulary's item table once (through
    the object store, so it works on every node of a cluster) and builds its lookups once.
    """

    def __init__(self, assignment: pa.Table, behaviors: list[str], config: BoiConfig, num_partitions: int):
        assignment = assignment.combine_chunks()
        self.item_ids = assignment["item_id"].chunk(0)
        self.interest_ids, self.interest_weights = assignment["interest_ids"].chunk(0), assignment["interest_weights"].chunk(0)
        self.has_interest = pc.greater(pc.list_value_length(self.interest_ids), 0)
        self.behaviors = pa.array(behaviors, pa.string())
        self.config, self.num_partitions = config, num_partitions

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = self._in_range(batch).combine_chunks()
        item_index = pc.index_in(batch["item_id"].chunk(0) if batch.num_rows else pa.array([], self.item_ids.type), value_set=self.item_ids)
        known = pc.fill_null(pc.array_take(self.has_interest, item_index.fill_null(0)), False)
        known = pc.and_(known, pc.is_valid(item_index))
        ts = batch["timestamp"].to_numpy()
        take = item_index.fill_null(0)
        columns = {
            "partition": user_partition(batch["user_id"], self.num_partitions),
            "user_id": batch["user_id"],
            "item": pc.if_else(known, item_index, -1).cast(pa.int32()),
            "interest_ids": self.interest_ids.take(take),
            "interest_weights": self.interest_weights.take(take),
            "timestamp": ts,
            "behavior": pc.index_in(batch["behavior"], value_set=self.behaviors).cast(pa.int8()),
        }
        columns.update({scale: period_index(ts, scale) for scale in self.config.scales})
        return pa.table(columns)

    def _in_range(self, batch: pa.Table) -> pa.Table:
        lo, hi = self.config.since, self.config.until
        if lo is None and hi is None:
            return batch
        ts = batch["timestamp"]
        mask = pc.and_(pc.greater_equal(ts, lo if lo is not None else MIN_TIMESTAMP), pc.less(ts, hi if hi is not None else MAX_TIMESTAMP))
        return batch.filter(mask)


def build_user_rows(events: pa.Table, config: BoiConfig) -> pa.Table:
    """Stage 3: one partition's events -> one row per user with sparse BoI sequences (eq. 4)."""
    order = pc.sort_indices(events, [("user_id", "ascending"), ("timestamp", "ascending"), ("item", "ascending"), ("behavior", "ascending")])
    events = events.take(order)
    users, starts = user_segments(events["user_id"])
    item = events["item"].to_numpy()
    columns = {"user_id": users}
    for scale in config.scales:
        columns.update(_bags(scale, events, item, starts))
    if config.sequences:
        columns.update(_sequences(events, item, starts, config.max_sequence_length, config.earlier_events))
    user_of = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    columns["num_events"] = np.bincount(user_of, minlength=len(users)).astype(np.int64)
    columns["num_skipped"] = np.bincount(user_of[item < 0], minlength=len(users)).astype(np.int64)
    return pa.table(columns)


def _bags(scale: str, events: pa.Table, item: np.ndarray, starts: np.ndarray) -> dict:
    """Sparse (period, interest) -> log(1 + count) per user, as nested lists (eq. 4).

    ``count`` is the number of the user's events in the period whose item is in the interest;
    with soft assignment each event adds its item's weight for that interest instead of 1.
    """
    n_users = len(starts) - 1
    ids_col, w_col = events["interest_ids"].combine_chunks(), events["interest_weights"].combine_chunks()
    per_event = np.where(item >= 0, pc.list_value_length(ids_col).to_numpy(zero_copy_only=False), 0)
    user_of = np.repeat(np.repeat(np.arange(n_users, dtype=np.int64), np.diff(starts)), per_event)
    period = np.repeat(events[scale].to_numpy(), per_event)
    keep = np.repeat(item >= 0, pc.list_value_length(ids_col).to_numpy(zero_copy_only=False))
    interest = pc.list_flatten(ids_col).to_numpy()[keep]
    weight = pc.list_flatten(w_col).to_numpy()[keep]
    return _nest(scale, *bag_entries(user_of, period, interest, weight), n_users)


def bag_entries(user: np.ndarray, period: np.ndarray, interest: np.ndarray,
                weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 4 on (user, period, interest, weight) rows, one per event and interest of its item ->
    the distinct (user, period, interest) sorted in that order, with ``log(1 + Σ weight)`` (float32)."""
    order = np.lexsort((interest, period, user))
    user, period, interest, weight = user[order], period[order], interest[order], weight[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (user[1:] != user[:-1]) | (period[1:] != period[:-1]) | (interest[1:] != interest[:-1])
    first = np.flatnonzero(new)
    counts = np.add.reduceat(weight.astype(np.float64), first) if len(first) else np.zeros(0)
    return user[first], period[first], interest[first].astype(np.int32), np.log1p(counts).astype(np.float32)


def _sequences(events: pa.Table, item: np.ndarray, starts: np.ndarray, max_length: int, earlier: bool = False) -> dict:
    """The most recent ``max_length`` known events of each user, in time order; with ``earlier``
    also the user's known events before those (``earlier_*`` columns, time order)."""
    n_users = len(starts) - 1
    known = np.flatnonzero(item >= 0)
    user_of = np.repeat(np.arange(n_users), np.diff(starts))[known]
    per_user = np.bincount(user_of, minlength=n_users)
    first = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    position = np.arange(len(known)) - first[user_of]  # 0-based among the user's known events
    recent = position >= per_user[user_of] - max_length
    lengths = np.minimum(per_user, max_length)
    columns = _lists(events, item, known[recent], lengths, "")
    if earlier:
        columns.update(_lists(events, item, known[~recent], per_user - lengths, "earlier_"))
    return columns


def _lists(events: pa.Table, item: np.ndarray, keep: np.ndarray, lengths: np.ndarray, prefix: str) -> dict:
    """Rows ``keep`` of the (user-sorted) events as one list per user of ``lengths`` entries."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    ts, beh = events["timestamp"].to_numpy()[keep], events["behavior"].to_numpy()[keep]
    return {
        f"{prefix}items": pa.ListArray.from_arrays(offsets, pa.array(item[keep], pa.int32())),
        f"{prefix}behaviors": pa.ListArray.from_arrays(offsets, pa.array(beh, pa.int8())),
        f"{prefix}timestamps": pa.ListArray.from_arrays(offsets, pa.array(ts, pa.int64())),
    }


def user_segments(user_ids: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Distinct users of a sorted column and their start offsets (len = users + 1)."""
    ids = user_ids.combine_chunks()
    if len(ids) == 0:
        return ids, np.zeros(1, dtype=np.int64)
    change = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1, [len(ids)]]).astype(np.int64)
    return ids.take(pa.array(starts[:-1])), starts


def _nest(scale: str, user: np.ndarray, period: np.ndarray, interest: np.ndarray, values: np.ndarray, n_users: int) -> dict:
    """Sorted (user, period, interest) entries -> per-user lists of periods and per-period id/value lists."""
    new_period = np.ones(len(user), dtype=bool)
    new_period[1:] = (user[1:] != user[:-1]) | (period[1:] != period[:-1])
    period_starts = np.flatnonzero(new_period)
    entry_offsets = pa.array(np.append(period_starts, len(user)).astype(np.int32))
    periods_per_user = np.bincount(user[period_starts], minlength=n_users)
    user_offsets = pa.array(np.concatenate([[0], np.cumsum(periods_per_user)]).astype(np.int32))
    ids = pa.ListArray.from_arrays(entry_offsets, pa.array(interest, pa.int32()))
    vals = pa.ListArray.from_arrays(entry_offsets, pa.array(values, pa.float32()))
    return {
        f"{scale}_periods": pa.ListArray.from_arrays(user_offsets, pa.array(period[period_starts], pa.int32())),
        f"{scale}_ids": pa.ListArray.from_arrays(user_offsets, ids),
        f"{scale}_values": pa.ListArray.from_arrays(user_offsets, vals),
    }


def default_partitions(num_events: int, num_cpus: int) -> int:
    """Enough partitions to use every CPU and to keep one partition's events around 2M rows."""
    return max(2 * num_cpus, math.ceil(num_events / 2_000_000))


def behaviors_of(dataset_dir: Path) -> list[str]:
    """Distinct behaviours of a prepared dataset (one streamed column scan), most frequent first."""
    counts = pads.dataset(dataset_dir / "events", format="parquet").to_table(columns=["behavior"])["behavior"].value_counts()
    pairs = sorted(((v["counts"], v["values"]) for v in counts.to_pylist()), reverse=True)
    return [name for _, name in pairs]


def build_boi(dataset_dir: str | os.PathLike, vocabulary: Vocabulary, users_dir: str | os.PathLike,
              config: BoiConfig = BoiConfig()) -> dict:
    """Run the Ray Data pipeline on a prepared dataset; write one Parquet row per user into ``users_dir``.

    The caller owns atomicity (:func:`raylurm.boi.build.build` writes into a temporary directory).
    Returns the summary of :func:`summarize` plus the behaviour vocabulary.
    """
    import ray  # lazy: Ray's import costs seconds; only runs that use it pay

    dataset_dir = Path(dataset_dir)
    manifest = load_manifest(dataset_dir)
    behaviors = behaviors_of(dataset_dir)
    if len(behaviors) > 127:
        raise DataError(f"{len(behaviors)} behaviour types; at most 127 are supported", column="behavior")
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    parts = config.num_partitions or default_partitions(manifest["counts"]["events"], cpus)
    mappers, reducers = _compute_strategies(config.concurrency, cpus)
    ds = ray.data.read_parquet(str(dataset_dir / "events")).select_columns(["user_id", "item_id", "timestamp", "behavior"])
    ds = ds.map_batches(EventMapper, fn_constructor_args=(vocabulary.table(), behaviors, config, parts),
                        batch_format="pyarrow", compute=mappers, num_cpus=mapper_cpus(cpus))
    ds = ds.groupby("partition", num_partitions=parts).map_groups(
        build_user_rows, fn_args=(config,), batch_format="pyarrow", compute=reducers)
    ds.write_parquet(str(users_dir))
    summary = summarize(Path(users_dir), config.scales)
    if summary["skipped_events"] and config.on_unknown_items == "error":
        raise _unknown_items_error(dataset_dir, vocabulary, summary["skipped_events"])
    _report_missing_users(dataset_dir, summary)
    return {**summary, "behaviors": behaviors, "num_partitions": parts}


def mapper_cpus(cpus: int) -> float:
    """CPUs each mapper actor reserves: one, except on a one-CPU cluster, where the single mapper
    reserves none — an actor holding the only CPU for its lifetime would leave the shuffle and
    reduce tasks none (measured: a 1-node x 1-CPU cluster never finished)."""
    return 1.0 if cpus >= 2 else 0.0


def _compute_strategies(concurrency: int | None, cpus: int):
    """Actor pool for the mappers, task pool for the reducers.

    Mapper actors hold a CPU for their lifetime; at most ``cpus - 1`` of them, so the shuffle
    and reduce tasks always have a CPU (otherwise a 2-CPU node deadlocks).
    """
    import ray  # lazy: Ray's import costs seconds; only runs that use it pay

    most = max(1, cpus - 1)
    if concurrency is None:
        return ray.data.ActorPoolStrategy(min_size=1, max_size=most), None
    if concurrency > most:
        log.info("using %d mapper actors instead of %d: one CPU stays free for the shuffle", most, concurrency)
    return ray.data.ActorPoolStrategy(size=min(concurrency, most)), ray.data.TaskPoolStrategy(size=concurrency)


def _unknown_items_error(dataset_dir: Path, vocabulary: Vocabulary, count: int) -> DataError:
    """Name a few of the items that have no interest (a scan that runs only on this failure path)."""
    known = vocabulary.item_ids.filter(pc.greater(pc.list_value_length(vocabulary.interest_ids), 0))
    field = pads.field("item_id")
    unknown = pads.dataset(dataset_dir / "events", format="parquet").head(5, columns=["item_id"], filter=~field.isin(known))
    examples = ", ".join(repr(v) for v in unknown["item_id"].to_pylist())
    return DataError(f"{count:,} event(s) have an item with no interest in the vocabulary (e.g. item_id {examples})",
                     file=str(dataset_dir / "events"), column="item_id",
                     hint="Rebuild the vocabulary from this dataset, or pass --on-unknown-items skip to count and skip them")


def summarize(users_dir: Path, scales: tuple[str, ...]) -> dict:
    """Users, periods per user and non-zeros per period percentiles, from the written files."""
    table = pads.dataset(users_dir, format="parquet").to_table(
        columns=[c for s in scales for c in (f"{s}_ids",)] + ["num_events", "num_skipped"])
    out = {"users": table.num_rows, "events": int(pc.sum(table["num_events"]).as_py() or 0),
           "skipped_events": int(pc.sum(table["num_skipped"]).as_py() or 0)}
    for s in scales:
        ids = table[f"{s}_ids"].combine_chunks()
        out[f"{s}_periods_per_user"] = _percentiles(pc.list_value_length(ids).to_numpy(zero_copy_only=False))
        out[f"{s}_nonzeros_per_period"] = _percentiles(pc.list_value_length(pc.list_flatten(ids)).to_numpy(zero_copy_only=False))
    return out


def _percentiles(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {}
    return {f"p{p}": float(np.percentile(values, p)) for p in (0, 50, 90, 99, 100)}


def _report_missing_users(dataset_dir: Path, summary: dict) -> None:
    users = dataset_dir / "users.parquet"
    if users.exists():
        total = pads.dataset(users, format="parquet").count_rows()
        if total > summary["users"]:
            log.warning("%d of %d users in %s have no events in range: they get no BoI row", total - summary["users"], total, users)
