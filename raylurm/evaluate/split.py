"""The evaluation split, owned by the harness: what pretraining may see and what is held out.

One split serves all three tasks, so one pretraining run per method is evaluated on all of them:

* **next item, leave-one-out** — each user's last event is the test target, the second-to-last
  the validation target (ties in time are broken by the order of the event log);
* **category preference** — a global cutoff time ``T`` (the ``cutoff_quantile`` of all event
  times); the label window is every event at or after ``T``.

``pretrain`` = events before ``T`` minus each user's last two events — it holds no held-out event
of either task. The item embeddings and the interest vocabulary are learnt from it too (they
are part of pretraining). Every other input is a BoI built with that same vocabulary:

=================  ==========================================  ==============================
part               events                                       used for
=================  ==========================================  ==============================
``pretrain``       t < T, without each user's last two          pretraining (``--split``)
``history``        all but each user's last two                 profiling; next-item validation
``history_test``   all but each user's last one                 next-item test
``before_cutoff``  t < T                                        category preference input
=================  ==========================================  ==============================

Inputs may contain events pretraining never saw (inference on new data); no input contains the
target it is scored on. ``targets.parquet`` holds each user's held-out items and
``future.parquet`` the categories each user touched at or after ``T``.

Layout: ``$RAYLURM_HOME/splits/<dataset>-<id>/{split.json, targets.parquet, future.parquet,
datasets/<part>/, boi/<part>/}``; ``id`` hashes the dataset's manifest and the split config, and
checkpoints record it (``raylurm.pretrain --split``) so the evaluator can refuse a checkpoint
that saw held-out events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pydantic import Field

from raylurm.boi.build import BuildConfig, build
from raylurm.config import typed_config
from raylurm.data.errors import DataError
from raylurm.data.io import atomic_dir
from raylurm.data.prepare import data_home, load_manifest

log = logging.getLogger(__name__)

PARTS = ("pretrain", "history", "history_test", "before_cutoff")
HOLDOUT = 2  # leave-one-out: validation + test event per user


@typed_config
class SplitConfig:
    cutoff_quantile: Annotated[float, Field(
        gt=0.0, lt=1.0, description="category-preference cutoff T as a quantile of all event times")] = 0.9


@dataclasses.dataclass(frozen=True)
class Split:
    """A materialised split directory."""

    root: Path
    meta: dict

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def cutoff(self) -> int:
        return int(self.meta["cutoff"])

    def dataset(self, part: str) -> Path:
        return self.root / "datasets" / part

    def boi(self, part: str) -> Path:
        return self.root / "boi" / part

    @property
    def targets(self) -> Path:
        return self.root / "targets.parquet"

    @property
    def future(self) -> Path:
        return self.root / "future.parquet"

    @property
    def source(self) -> Path:
        return Path(self.meta["dataset_dir"])

    @classmethod
    def load(cls, root: str | os.PathLike) -> "Split":
        root = Path(root)
        path = root / "split.json"
        if not path.exists():
            raise DataError("not a split directory (no split.json)", file=str(root))
        return cls(root, json.loads(path.read_text()))


def split_id(dataset_dir: Path, config: SplitConfig) -> str:
    manifest = load_manifest(dataset_dir)
    key = {"dataset": {k: manifest.get(k) for k in ("name", "counts", "time_span", "id_types")},
           "config": dataclasses.asdict(config), "holdout": HOLDOUT, "version": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def default_root(dataset_dir: Path, config: SplitConfig) -> Path:
    name = load_manifest(dataset_dir).get("name") or dataset_dir.name
    return data_home() / "splits" / f"{name}-{split_id(dataset_dir, config)}"


def read_events(dataset_dir: Path) -> pa.Table:
    """All events with a ``_row`` column (the log's order, the tie-break for equal timestamps)."""
    table = pads.dataset(dataset_dir / "events", format="parquet").to_table()
    return table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))


def rank_from_end(events: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Events sorted by (user, time, log order) and each event's position from its user's end (0 = last)."""
    events = events.take(pc.sort_indices(events, [("user_id", "ascending"), ("timestamp", "ascending"), ("_row", "ascending")]))
    users = events["user_id"].combine_chunks()
    n = len(users)
    if n == 0:
        return events, np.zeros(0, dtype=np.int64)
    change = np.ones(n, dtype=bool)
    change[1:] = pc.not_equal(users.slice(1), users.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n)
    segment = np.repeat(np.arange(len(starts)), ends - starts)
    return events, ends[segment] - 1 - np.arange(n)


def materialise(dataset: str | os.PathLike, config: SplitConfig = SplitConfig(), root: str | os.PathLike | None = None,
                build_config=None) -> Split:
    """Create (once) the split of a prepared dataset: parts, targets, label windows and their BoI."""
    dataset_dir = Path(dataset)
    root = Path(root) if root else default_root(dataset_dir, config)
    if (root / "split.json").exists():
        split = Split.load(root)
        if split.id != split_id(dataset_dir, config):
            raise DataError(f"split directory holds split {split.id}, not {split_id(dataset_dir, config)}", file=str(root))
        return split
    with atomic_dir(root, overwrite=False) as tmp:
        meta = _write_parts(dataset_dir, config, tmp)
        _build_bois(tmp, build_config)
        meta["vocabulary_hash"] = json.loads((tmp / "boi" / "pretrain" / "manifest.json").read_text())["vocabulary_hash"]
        (tmp / "split.json").write_text(json.dumps(meta, indent=2))
    log.info("split %s ready at %s", meta["id"], root)
    return Split.load(root)


def _write_parts(dataset_dir: Path, config: SplitConfig, out: Path) -> dict:
    events, from_end = rank_from_end(read_events(dataset_dir))
    if events.num_rows == 0:
        raise DataError("the dataset has no events to split", file=str(dataset_dir / "events"))
    timestamps = events["timestamp"].to_numpy()
    cutoff = int(np.quantile(timestamps, config.cutoff_quantile, method="higher"))
    before = timestamps < cutoff
    parts = {
        "pretrain": before & (from_end >= HOLDOUT),
        "history": from_end >= HOLDOUT,
        "history_test": from_end >= 1,
        "before_cutoff": before,
    }
    counts = {}
    for part, mask in parts.items():
        _write_dataset(dataset_dir, out / "datasets" / part, events.filter(pa.array(mask)).drop_columns(["_row"]), part)
        counts[part] = int(mask.sum())
    _write_targets(events, from_end, out / "targets.parquet")
    _write_future(dataset_dir, events.filter(pa.array(~before)), out / "future.parquet")
    manifest = load_manifest(dataset_dir)
    return {"id": split_id(dataset_dir, config), "dataset": manifest.get("name"), "dataset_dir": str(dataset_dir.resolve()),
            "config": dataclasses.asdict(config), "holdout": HOLDOUT, "cutoff": cutoff, "events": counts,
            "parts": {p: f"boi/{p}" for p in PARTS}}


def _write_dataset(source: Path, out: Path, events: pa.Table, part: str) -> None:
    (out / "events").mkdir(parents=True)
    pq.write_table(events, out / "events" / "part-00000.parquet")
    for name in ("items.parquet", "users.parquet"):
        if (source / name).exists():
            shutil.copyfile(source / name, out / name)
    manifest = load_manifest(source)
    manifest["name"] = f"{manifest.get('name') or source.name}:{part}"
    manifest["counts"] = {**manifest.get("counts", {}), "events": events.num_rows}
    manifest["split_part"] = part
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _write_targets(events: pa.Table, from_end: np.ndarray, path: Path) -> None:
    """Per user with >= 3 events: the validation (second-to-last) and test (last) item and time."""
    last, second = from_end == 0, from_end == 1
    # users with >= 3 events: a validation and a test target and a non-empty history
    has_history = np.zeros(len(from_end), dtype=bool)
    has_history[from_end == HOLDOUT] = True
    users_ok = pc.is_in(events["user_id"], value_set=pc.filter(events["user_id"], pa.array(has_history)).unique())
    keep = users_ok.to_numpy(zero_copy_only=False)
    valid = events.filter(pa.array(second & keep))
    test = events.filter(pa.array(last & keep))
    table = pa.table({"user_id": test["user_id"], "valid_item": valid["item_id"], "valid_time": valid["timestamp"],
                      "test_item": test["item_id"], "test_time": test["timestamp"]})
    pq.write_table(table, path)


def _write_future(dataset_dir: Path, after: pa.Table, path: Path) -> None:
    """Per user with events at or after T: the sorted set of categories of those events' items."""
    items_path = dataset_dir / "items.parquet"
    if not items_path.exists() or "category" not in pq.read_schema(items_path).names:
        pq.write_table(pa.table({"user_id": pa.array([], after.schema.field("user_id").type),
                                 "categories": pa.array([], pa.list_(pa.string()))}), path)
        return
    items = pq.read_table(items_path, columns=["item_id", "category"]).to_pandas().explode("category").dropna()
    events = after.select(["user_id", "item_id"]).to_pandas()
    pairs = events.merge(items, on="item_id", how="inner")[["user_id", "category"]].drop_duplicates()
    grouped = pairs.groupby("user_id", sort=True)["category"].agg(lambda c: sorted(c))
    pq.write_table(pa.table({"user_id": pa.array(grouped.index.tolist(), after.schema.field("user_id").type),
                             "categories": pa.array(grouped.tolist(), pa.list_(pa.string()))}), path)


def _build_bois(root: Path, build_config=None) -> None:
    """BoI of every part: the pretraining part learns embeddings and vocabulary, the others reuse them."""
    config = build_config or BuildConfig()
    build(root / "datasets" / "pretrain", root / "boi" / "pretrain", config)
    skip = dataclasses.replace(config, boi=dataclasses.replace(config.boi, on_unknown_items="skip"))
    for part in PARTS[1:]:
        # items first seen after the pretraining part may lack an interest with co-occurrence embeddings: skip them
        build(root / "datasets" / part, root / "boi" / part, skip, vocabulary_dir=root / "boi" / "pretrain" / "vocabulary")
