"""Training windows over each user's whole history, so that no event is dropped.

A BoI row holds a user's latest ``max_sequence_length`` events (``items``, what every encoder
reads) and, with ``BoiConfig.earlier_events``, the events before them (``earlier_items``…). A
sequence method that trains on next-item transitions declares ``training_window(config, info)``
(its encoded length + 1: the inputs and the last target); :func:`expand` then cuts each user's
whole history into windows of at most that many events — the first ends at the latest event,
each earlier one ends one event after the next one starts — so every transition
``x_t -> x_{t+1}`` of the history lies in exactly one window: each is trained once per epoch.
On ML-1M the 1,392 users with more than 200 pretraining events hold 31 % of the events, which a
row capped at the latest 200 never shows.

The windows of one user are permuted with the other users' windows of the same Ray Data batch
(a seeded permutation), so that a long history does not fill a training batch on its own.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEQUENCE_COLUMNS = ("items", "behaviors", "timestamps")


def encoded_length_window(config, info) -> int:
    """The training window of a model that encodes ``config.max_length`` (default: the rows' length) events: + its last target."""
    return (config.max_length or info.max_sequence_length) + 1


def has_earlier_events(schema_names: list[str] | tuple[str, ...]) -> bool:
    """Whether BoI rows with these columns keep the events before the latest ones."""
    return all(f"earlier_{c}" in schema_names for c in SEQUENCE_COLUMNS)


def window_bounds(lengths: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of at most ``size`` (>= 2) events over histories of ``lengths`` events.

    Returns (row, start, end) per window: the history it cuts (index into ``lengths``) and its
    event range ``[start, end)``; window 0 of a history ends at its latest event, window j + 1
    ends at window j's start + 1. A history of n <= size events is one window (an empty history
    one empty window)."""
    if size < 2:
        raise ValueError(f"a training window needs at least 2 events (an input and its target), got {size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    count = np.where(lengths <= size, 1, 1 + -(-(lengths - size) // (size - 1)))  # windows per history
    row = np.repeat(np.arange(len(lengths)), count)
    j = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)  # 0 = the latest window
    end = lengths[row] - j * (size - 1)
    return row, np.maximum(0, end - size), end


def history_take(row: np.ndarray, position: np.ndarray, n_earlier: np.ndarray, n_recent: np.ndarray) -> np.ndarray:
    """Where event ``position`` of history ``row`` (0 = its oldest) lies in ``concat(earlier values, recent values)``:
    the flattened ``earlier_*`` lists of every row, then the flattened latest ones."""
    earlier_offset = np.cumsum(n_earlier) - n_earlier
    recent_offset = np.cumsum(n_recent) - n_recent
    return np.where(position < n_earlier[row], earlier_offset[row] + position,
                    int(n_earlier.sum()) + recent_offset[row] + position - n_earlier[row])


def expand(table: pa.Table, size: int, seed: int = 0) -> pa.Table:
    """BoI rows -> one row per training window (``user_id`` and the sequence columns only)."""
    table = table.combine_chunks()
    recent = {c: table[c].chunk(0) if table.num_rows else pa.array([], table.schema.field(c).type) for c in SEQUENCE_COLUMNS}
    earlier = {c: table[f"earlier_{c}"].chunk(0) if table.num_rows else pa.array([], table.schema.field(f"earlier_{c}").type)
               for c in SEQUENCE_COLUMNS}
    n_recent = pc.list_value_length(recent["items"]).to_numpy(zero_copy_only=False).astype(np.int64)
    n_earlier = pc.list_value_length(earlier["items"]).to_numpy(zero_copy_only=False).astype(np.int64)
    row, start, end = window_bounds(n_earlier + n_recent, size)
    order = np.random.default_rng(seed).permutation(len(row))  # spread one user's windows over the batch
    row, start, end = row[order], start[order], end[order]
    width = end - start
    event_row = np.repeat(row, width)
    position = np.repeat(start, width) + np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width)
    take = history_take(event_row, position, n_earlier, n_recent)
    offsets = pa.array(np.concatenate([[0], np.cumsum(width)]).astype(np.int32))
    columns = {"user_id": table["user_id"].take(pa.array(row))}
    for c in SEQUENCE_COLUMNS:
        values = pa.concat_arrays([pc.list_flatten(earlier[c]), pc.list_flatten(recent[c])])
        columns[c] = pa.ListArray.from_arrays(offsets, values.take(pa.array(take)))
    return pa.table(columns)
