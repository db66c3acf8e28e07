"""The batch contract every method reads: BoI rows (one per user) -> tensors.

A BoI row (``raylurm.boi.pipeline``) holds, per scale, a user's sparse per-period vectors and
the raw ordered sequence. :func:`collate` turns a batch of rows (a ``pyarrow.Table``) into:

Sparse BoI sequences, per scale ``s`` in ``("month", "year")`` — bags ordered user-major, then
by time; never densified (they feed ``nn.EmbeddingBag`` with ``per_sample_weights``):

* ``{s}_ids``      (N,)        int64   interest ids of all non-zeros
* ``{s}_values``   (N,)        float32 ``log(1 + count)`` (eq. 4)
* ``{s}_offsets``  (bags,)     int64   start of each bag in ``{s}_ids`` (EmbeddingBag offsets)
* ``{s}_periods``  (bags,)     int64   calendar period of each bag (months / years since 1970)
* ``{s}_lengths``  (B,)        int64   bags per user

Raw sequences, left-aligned and padded at the end with 0 (so ids are shifted by +1):

* ``items``      (B, L) int64   vocabulary item index + 1
* ``behaviors``  (B, L) int64   behaviour index + 1
* ``timestamps`` (B, L) int64   UTC seconds (0 at padding)
* ``lengths``    (B,)   int64   events per user (>= 1 for users with a sequence)
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from raylurm.boi.manifest import boi_dataset_dir

PAD = 0


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """Sizes a model needs from the prepared BoI directory (all ids are 0-based, before the +1 shift)."""

    num_interests: int
    num_items: int
    num_behaviors: int
    scales: tuple[str, ...]
    max_sequence_length: int
    item_category: tuple[int, ...] = ()  # category index of each item (first category; 0 = none)
    num_categories: int = 1
    vocabulary_hash: str = ""

    @classmethod
    def from_boi(cls, directory: str | os.PathLike) -> "DataInfo":
        directory = Path(directory)
        manifest = json.loads((directory / "manifest.json").read_text())
        category, num_categories = _item_categories(directory, boi_dataset_dir(directory, manifest))
        boi = manifest["config"]["boi"]
        return cls(num_interests=manifest["num_interests"], num_items=manifest["num_items"],
                   num_behaviors=len(manifest["behaviors"]), scales=tuple(boi["scales"]),
                   max_sequence_length=boi["max_sequence_length"], item_category=tuple(category),
                   num_categories=num_categories, vocabulary_hash=manifest["vocabulary_hash"])


def _item_categories(boi_dir: Path, dataset_dir: Path) -> tuple[list[int], int]:
    """First category of each vocabulary item as an index (0 = no category), and the category count."""
    vocab_items = pq.read_table(boi_dir / "vocabulary" / "items.parquet", columns=["item_id"])["item_id"].to_pylist()
    items_path = dataset_dir / "items.parquet"
    if not items_path.exists() or "category" not in pq.read_schema(items_path).names:
        return [0] * len(vocab_items), 1
    items = pq.read_table(items_path, columns=["item_id", "category"]).to_pylist()
    first = {row["item_id"]: row["category"][0] for row in items if row["category"]}
    code = {name: i + 1 for i, name in enumerate(sorted(set(first.values())))}
    return [code.get(first.get(item), 0) for item in vocab_items], len(code) + 1


def _ragged(column: pa.ChunkedArray | pa.Array) -> pa.ListArray:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def collate_sparse(table: pa.Table, scale: str) -> dict[str, torch.Tensor]:
    """One scale's nested (periods, ids, values) columns -> flat EmbeddingBag inputs."""
    periods = _ragged(table[f"{scale}_periods"])
    bags = _ragged(table[f"{scale}_ids"]).flatten()  # list<int32> per bag
    values = _ragged(table[f"{scale}_values"]).flatten().flatten()
    sizes = pc.list_value_length(bags).to_numpy(zero_copy_only=False).astype(np.int64)
    return {
        f"{scale}_ids": torch.from_numpy(bags.flatten().to_numpy(zero_copy_only=False).astype(np.int64)),
        f"{scale}_values": torch.from_numpy(values.to_numpy(zero_copy_only=False).astype(np.float32)),
        f"{scale}_offsets": torch.from_numpy(np.cumsum(sizes) - sizes),
        f"{scale}_periods": torch.from_numpy(periods.flatten().to_numpy(zero_copy_only=False).astype(np.int64)),
        f"{scale}_lengths": torch.from_numpy(pc.list_value_length(periods).to_numpy(zero_copy_only=False).astype(np.int64)),
    }


def pad_lists(column: pa.Array, shift: int, dtype=np.int64) -> tuple[torch.Tensor, torch.Tensor]:
    """list<int> -> (B, L) left-aligned, end-padded with 0, values + ``shift``; and lengths (B,)."""
    column = _ragged(column)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    width = max(1, int(lengths.max(initial=0)))
    out = np.zeros((len(lengths), width), dtype=dtype)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = column.flatten().to_numpy(zero_copy_only=False).astype(dtype) + shift
    return torch.from_numpy(out), torch.from_numpy(lengths)


def collate(table: pa.Table, scales: tuple[str, ...] = ("month", "year")) -> dict[str, torch.Tensor]:
    """A batch of BoI rows -> the tensors described in the module docstring."""
    batch: dict[str, torch.Tensor] = {}
    for scale in scales:
        batch.update(collate_sparse(table, scale))
    if "items" in table.column_names:
        batch["items"], batch["lengths"] = pad_lists(table["items"], shift=1)
        batch["behaviors"], _ = pad_lists(table["behaviors"], shift=1)
        batch["timestamps"], _ = pad_lists(table["timestamps"], shift=0)
    return batch


def synthetic_rows(num_users: int, num_interests: int, num_items: int, num_behaviors: int = 3, max_periods: int = 14,
                   max_events: int = 12, seed: int = 0) -> pa.Table:
    """Random BoI rows in the pipeline's schema, for unit tests of models (no Ray, no files)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {"user_id": list(range(num_users))}
    for scale, span in (("month", max_periods), ("year", max(1, max_periods // 12 + 1))):
        periods, ids, values = [], [], []
        for _ in range(num_users):
            p = np.sort(rng.choice(np.arange(600, 600 + span) if scale == "month" else np.arange(50, 50 + span),
                                   size=rng.integers(1, span + 1), replace=False))
            periods.append(p.tolist())
            bag_ids = [np.sort(rng.choice(num_interests, size=rng.integers(1, min(6, num_interests) + 1), replace=False)) for _ in p]
            ids.append([b.tolist() for b in bag_ids])
            values.append([np.log1p(rng.integers(1, 5, size=len(b))).astype(np.float32).tolist() for b in bag_ids])
        columns.update({f"{scale}_periods": periods, f"{scale}_ids": ids, f"{scale}_values": values})
    lengths = rng.integers(2, max_events + 1, size=num_users)
    columns["items"] = [rng.integers(0, num_items, size=n).tolist() for n in lengths]
    columns["behaviors"] = [rng.integers(0, num_behaviors, size=n).tolist() for n in lengths]
    columns["timestamps"] = [np.sort(rng.integers(1_500_000_000, 1_600_000_000, size=n)).tolist() for n in lengths]
    schema = pa.schema([("user_id", pa.int64())] + [
        (f"{s}_{k}", t) for s in ("month", "year") for k, t in
        (("periods", pa.list_(pa.int32())), ("ids", pa.list_(pa.list_(pa.int32()))), ("values", pa.list_(pa.list_(pa.float32()))))
    ] + [("items", pa.list_(pa.int32())), ("behaviors", pa.list_(pa.int8())), ("timestamps", pa.list_(pa.int64()))])
    return pa.table(columns, schema=schema)
