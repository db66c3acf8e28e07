"""The evaluation split, owned by the harness: what pretraining may see and what is held out.

One split serves all three tasks, so one pretraining run per method is evaluated on all of them:

* **next item, leave-one-out** — each user's last event is the test target, the second-to-last
  the validation target (the order within a user: :data:`TIE_RULE`, below);
* **category preference** — a global cutoff time ``T`` (the ``cutoff_quantile`` of all event
  times); the input is every event before ``T``, the labels the categories of the items each user
  touched at or after ``T``.

``pretrain`` = every event but each user's last two — what the public leave-one-out anchors
(SASRec, HSTU) train on. It holds no held-out event of the next-item task. The item embeddings
and the interest vocabulary are learnt from it too (they are part of pretraining). Every other
input is a BoI built with that same vocabulary:

=================  ==========================================  ===================================
part               events                                       used for
=================  ==========================================  ===================================
``pretrain``       all but each user's last two                 pretraining (``--split``)
``history``        the same events: the ``pretrain`` directory  profiling; next-item validation;
                                                                Tune's validation metric
``history_test``   all but each user's last one                 next-item test
``before_cutoff``  t < T                                        category preference input
=================  ==========================================  ===================================

``history`` and ``pretrain`` hold the same events, so they are one directory (one BoI build):
``split.json``'s ``parts`` maps every part name to its ``datasets/`` and ``boi/`` directory, and
:meth:`Split.dataset` / :meth:`Split.boi` resolve through it.

**Category preference is transductive, not a forecast.** Its input stops at ``T`` and its labels
(``future.parquet``) come from events at or after ``T`` — but pretraining (the encoder, the item
embeddings and the interest vocabulary) saw those later events as unlabelled interactions, all
but each user's last two. It never saw the label table itself, and the caveat is the same for
every row (every method, every baseline, every seed), so rows compare with each other; what is
measured is how well a representation of the history before ``T`` recovers preferences that the
encoder was fitted on, not how well it predicts an unseen future.

Inputs may contain events pretraining never saw (inference on new data); no input contains the
target it is scored on. ``targets.parquet`` holds each user's held-out items and
``future.parquet`` the categories each user touched at or after ``T``.

**The order within a user** (:data:`TIE_RULE`): by timestamp, then by item — its row in the
dataset's ``items.parquet``, which is its vocabulary index (the item embeddings keep the items
table's rows, the vocabulary keeps theirs; on ML-1M that is MovieID order, not the order of the
title that is the item id) — then by behaviour (its index in the dataset's behaviours, most
frequent first, as a BoI manifest's ``behaviors``). :func:`raylurm.boi.pipeline.build_user_rows`
sorts by (timestamp, vocabulary index, behaviour index), the same rule, so the two held-out
items of a user whose last events share a second (2,544 of ML-1M's 6,040 users) are the last
two items of the BoI's sequence of all their events. Events the rule does not separate are
identical in (user, time, item, behaviour), so which of them is held out changes nothing. (A
part's BoI indexes behaviours by their frequency in that part; where that order differs from the
whole dataset's, only events of the same item in the same second can swap — never a target.)

Layout: ``$RAYLURM_HOME/splits/<dataset>-<id>/{split.json, targets.parquet, future.parquet,
datasets/<directory>/, boi/<directory>/}``; ``id`` hashes the dataset's manifest, a digest of its
events (the multiset of (user, time, item, behaviour), independent of the log's order and
sharding), the items table's order and categories (they decide ties and category labels), the
tie rule and the split config. Checkpoints record it (``raylurm.pretrain --split``) so the
evaluator can refuse a checkpoint that saw held-out events.
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
from raylurm.boi.pipeline import behaviors_of
from raylurm.config import typed_config
from raylurm.data.errors import DataError
from raylurm.data.io import atomic_dir, atomic_file
from raylurm.data.prepare import data_home, load_manifest

log = logging.getLogger(__name__)

PARTS = ("pretrain", "history", "history_test", "before_cutoff")
#: the directory under ``datasets/`` and ``boi/`` holding each part (``history`` = ``pretrain``'s events)
DIRECTORIES = {"pretrain": "pretrain", "history": "pretrain", "history_test": "history_test", "before_cutoff": "before_cutoff"}
HOLDOUT = 2  # leave-one-out: validation + test event per user
TIE_RULE = "within a user: timestamp, then item (vocabulary index = row in items.parquet), then behaviour (most frequent first)"
VERSION = 3  # 2: BoI rows without the earlier events (training windows); 1: pretrain = before T minus the last two, ties by log order, no events digest
EVENT_COLUMNS = ("user_id", "timestamp", "item_id", "behavior")


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

    def _location(self, part: str, kind: str) -> Path:
        """``<root>/<kind>/<directory>`` of ``part`` (kind: "datasets" or "boi"), as ``split.json``'s ``parts`` says."""
        if part not in PARTS:
            raise ValueError(f"unknown split part {part!r}; parts: {', '.join(PARTS)}")
        entry = self.meta.get("parts", {}).get(part)
        if isinstance(entry, dict):  # version 2: {"dataset": "datasets/<dir>", "boi": "boi/<dir>"}
            return self.root / entry["dataset" if kind == "datasets" else "boi"]
        if isinstance(entry, str):  # version 1: "boi/<part>", one directory per part
            return self.root / kind / Path(entry).name
        return self.root / kind / DIRECTORIES[part]

    def dataset(self, part: str) -> Path:
        """The prepared dataset of ``part`` (``history`` resolves to the ``pretrain`` directory)."""
        return self._location(part, "datasets")

    def boi(self, part: str) -> Path:
        """The BoI of ``part`` (``history`` resolves to the ``pretrain`` directory)."""
        return self._location(part, "boi")

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


def split_key(dataset_dir: Path, config: SplitConfig) -> dict:
    """What the split id hashes: manifest counts, events and items digests, tie rule, holdout, config."""
    dataset_dir = Path(dataset_dir)
    manifest = load_manifest(dataset_dir)
    return {"dataset": {k: manifest.get(k) for k in ("name", "counts", "time_span", "id_types")},
            "events_digest": events_digest(dataset_dir), "items_digest": items_digest(dataset_dir),
            "config": dataclasses.asdict(config), "holdout": HOLDOUT, "tie_rule": TIE_RULE, "version": VERSION}


def _id_of(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def split_id(dataset_dir: Path, config: SplitConfig) -> str:
    """12 hex digits of :func:`split_key`."""
    return _id_of(split_key(dataset_dir, config))


def default_root(dataset_dir: Path, config: SplitConfig) -> Path:
    return _root_of(Path(dataset_dir), split_id(dataset_dir, config))


def _root_of(dataset_dir: Path, sid: str) -> Path:
    name = load_manifest(dataset_dir).get("name") or dataset_dir.name
    return data_home() / "splits" / f"{name}-{sid}"


def events_digest(dataset_dir: Path) -> str:
    """sha256 of the events as a multiset: the (user, time, item, behaviour) columns sorted by all four.

    The log's order and sharding do not change it; any changed, added or removed event does.
    About 1 s for ML-1M's 1M events on 2 busy cores (read 0.3 s, sort 0.4 s, take 0.2 s, hash 0.15 s)."""
    events = _read_table(Path(dataset_dir) / "events", list(EVENT_COLUMNS))
    events = events.take(pc.sort_indices(events, [(c, "ascending") for c in EVENT_COLUMNS]))
    return _table_digest(events.select(list(EVENT_COLUMNS)))


def items_digest(dataset_dir: Path) -> str | None:
    """sha256 of ``items.parquet``'s item ids in row order (the tie rule) and categories (the labels)."""
    path = Path(dataset_dir) / "items.parquet"
    if not path.exists():
        return None
    names = pq.read_schema(path).names
    return _table_digest(_read_table(path, [c for c in ("item_id", "category") if c in names]))


def users_digest(dataset_dir: Path) -> str | None:
    """sha256 of ``users.parquet`` (every column, rows by user id): the labels a split copies."""
    path = Path(dataset_dir) / "users.parquet"
    if not path.exists():
        return None
    users = pq.read_table(path)
    return _table_digest(users.take(pc.sort_indices(users, [("user_id", "ascending")])))


def _table_digest(table: pa.Table) -> str:
    """16 hex digits of sha256 over every column's values, in row order."""
    h = hashlib.sha256()
    for name in table.column_names:
        _update(h, name, table[name])
    return h.hexdigest()[:16]


def _update(h, name: str, column: pa.ChunkedArray | pa.Array) -> None:
    """Feed one column's values (not its chunking or buffer layout) into ``h``."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    h.update(f"{name}:{array.type}:{len(array)}:{array.null_count};".encode())
    if array.null_count:
        h.update(np.asarray(pc.is_null(array).to_numpy(zero_copy_only=False)).tobytes())
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        h.update(lengths.tobytes())
        _update(h, f"{name}.values", pc.list_flatten(array))
    elif pa.types.is_string(array.type) or pa.types.is_large_string(array.type) or pa.types.is_binary(array.type):
        array = pc.fill_null(array, "").cast(pa.large_binary())
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset:array.offset + len(array) + 1]
        h.update((offsets - offsets[0]).tobytes())
        h.update(memoryview(array.buffers()[2] or b"")[offsets[0]:offsets[-1]] if len(array) else b"")
    elif pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_boolean(array.type):
        h.update(np.ascontiguousarray(pc.fill_null(array, False if pa.types.is_boolean(array.type) else 0)
                                      .to_numpy(zero_copy_only=False)).tobytes())
    else:
        h.update(json.dumps(array.to_pylist(), default=str).encode())


def _read_table(path: Path, columns: list[str] | None) -> pa.Table:
    """Read ``columns`` (None: all) of a Parquet file or directory; a missing or unreadable input is a DataError naming it."""
    if not path.exists():
        raise DataError("missing: a prepared dataset has an events/ directory (and items.parquet for a BoI)", file=str(path))
    try:
        return pads.dataset(path, format="parquet").to_table(columns=columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, KeyError) as err:
        what = f"columns {', '.join(columns)}" if columns else "it"
        raise DataError(f"cannot read {what} as Parquet: {err}", file=str(path)) from None


def read_events(dataset_dir: Path) -> pa.Table:
    """All events plus the tie-break columns of :data:`TIE_RULE`: ``_item`` and ``_behavior``.

    ``_item`` is the item's row in ``items.parquet`` = its vocabulary index (-1 for an item not in
    the table, which is then ordered by its id); ``_behavior`` its behaviour's index, most frequent
    first (:func:`raylurm.boi.pipeline.behaviors_of`, the BoI manifest's ``behaviors``)."""
    dataset_dir = Path(dataset_dir)
    table = _read_table(dataset_dir / "events", None)
    missing = set(EVENT_COLUMNS) - set(table.column_names)
    if missing:
        raise DataError(f"events lack column(s) {', '.join(sorted(missing))}", file=str(dataset_dir / "events"))
    items_path = dataset_dir / "items.parquet"
    if items_path.exists():
        items = _read_table(items_path, ["item_id"])["item_id"].combine_chunks()
        if items.type != table.schema.field("item_id").type:
            raise DataError(f"item_id is {items.type} here but {table.schema.field('item_id').type} in the events",
                            file=str(items_path), column="item_id")
        item = pc.index_in(table["item_id"], value_set=items)
    else:
        item = pa.nulls(table.num_rows, pa.int32())
    behaviors = pa.array(behaviors_of(dataset_dir), pa.string())
    behavior = pc.index_in(table["behavior"], value_set=behaviors)
    return table.append_column("_item", pc.fill_null(item, -1).cast(pa.int64())).append_column(
        "_behavior", pc.fill_null(behavior, -1).cast(pa.int64()))


def rank_from_end(events: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Events sorted by user then :data:`TIE_RULE`, and each event's position from its user's end (0 = last)."""
    keys = ["user_id", "timestamp", "_item", "item_id", "_behavior", "behavior"]
    events = events.take(pc.sort_indices(events, [(k, "ascending") for k in keys]))
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
    key = split_key(dataset_dir, config)  # the events digest: once per call
    sid = _id_of(key)
    root = Path(root) if root else _root_of(dataset_dir, sid)
    wanted = build_config or chosen_build_config(dataset_dir)
    if (root / "split.json").exists():
        split = Split.load(root)
        if split.id != sid:
            raise DataError(f"split directory holds split {split.id}, not {sid}", file=str(root))
        split = _finish_interrupted_rebuild(split)
        split = _check_labels(split, dataset_dir)
        if wanted is not None and not same_vocabulary(split, wanted):
            # the chosen embeddings and vocabulary; the split's own BoI options (scales, lengths) stay as they were
            stored = stored_build_config(split)
            split = rebuild_bois(split, dataclasses.replace(stored, embedding=wanted.embedding, vocabulary=wanted.vocabulary))
        return split
    with atomic_dir(root, overwrite=False) as tmp:
        meta = _write_parts(dataset_dir, config, tmp, key)
        _build_bois(tmp / "datasets", tmp / "boi", wanted)
        meta["vocabulary_hash"] = json.loads((tmp / "boi" / "pretrain" / "manifest.json").read_text())["vocabulary_hash"]
        (tmp / "split.json").write_text(json.dumps(meta, indent=2))
    log.info("split %s ready at %s", meta["id"], root)
    return Split.load(root)


def _check_labels(split: Split, dataset_dir: Path) -> Split:
    """Refuse a split whose dataset's users table (the profiling labels) changed since it was cut.

    The split id hashes the events and items only, so a dataset regenerated with other labels but the same
    events (a synthetic benchmark's label parameters) would silently keep the old labels' copies; a split cut
    before the digest was recorded gets it recorded now."""
    digest = users_digest(dataset_dir)
    if "users_digest" not in split.meta:
        with atomic_file(split.root / "split.json") as path:
            path.write_text(json.dumps({**split.meta, "users_digest": digest}, indent=2))
        return Split.load(split.root)
    if split.meta["users_digest"] == digest:
        return split
    raise DataError(f"the users table (the profiling labels) changed since split {split.id} was cut from this dataset; "
                    f"its copies, the runs pretrained on it and its stored evaluations hold the old labels: move "
                    f"{split.root} away to cut the split again", file=str(Path(dataset_dir) / "users.parquet"))


def chosen_build_config(dataset_dir: Path) -> BuildConfig | None:
    """The BoI build config a named dataset's vocabulary was chosen with (:data:`raylurm.data.datasets.VOCABULARIES`)."""
    from raylurm.data.datasets import chosen_build_config as chosen

    return chosen(load_manifest(dataset_dir).get("name"))


def _vocabulary_fields(config: dict) -> dict:
    """The embedding and vocabulary sections of a stored build config, read through their config classes (a field
    added since, absent from the stored JSON, takes its default; tuples and lists compare equal), as plain JSON."""
    from raylurm.boi.embeddings import ItemEmbeddingConfig
    from raylurm.boi.vocabulary import VocabularyConfig

    out = {}
    for name, cls in (("embedding", ItemEmbeddingConfig), ("vocabulary", VocabularyConfig)):
        known = {f.name for f in dataclasses.fields(cls)}
        section = {k: v for k, v in (config.get(name) or {}).items() if k in known}
        out[name] = json.loads(json.dumps(dataclasses.asdict(cls(**section))))
    return out


def stored_build_config(split: Split) -> BuildConfig:
    """The build config the split's BoI was made with (through the config classes, as :func:`_vocabulary_fields`)."""
    from raylurm.boi.embeddings import ItemEmbeddingConfig
    from raylurm.boi.pipeline import BoiConfig
    from raylurm.boi.vocabulary import VocabularyConfig

    stored = json.loads((split.boi("pretrain") / "manifest.json").read_text())["config"]
    fields = _vocabulary_fields(stored)
    known = {f.name for f in dataclasses.fields(BoiConfig)}
    boi = {k: tuple(v) if isinstance(v, list) else v for k, v in (stored.get("boi") or {}).items() if k in known}
    return BuildConfig(embedding=ItemEmbeddingConfig(**fields["embedding"]), vocabulary=VocabularyConfig(**fields["vocabulary"]),
                       boi=BoiConfig(**boi))


def same_vocabulary(split: Split, config: BuildConfig) -> bool:
    """Whether the split's BoI was built with ``config``'s item embeddings and vocabulary settings."""
    stored = json.loads((split.boi("pretrain") / "manifest.json").read_text())["config"]
    return _vocabulary_fields(stored) == _vocabulary_fields(json.loads(json.dumps(dataclasses.asdict(config))))


def _finish_interrupted_rebuild(split: Split) -> Split:
    """A rebuild killed between swapping the BoI in and writing ``split.json``: record the BoI's vocabulary now
    (without ``same_item_sequences``: the events the earlier BoI kept are no longer known, so no earlier
    checkpoint is vouched for)."""
    built = json.loads((split.boi("pretrain") / "manifest.json").read_text())["vocabulary_hash"]
    if built == split.meta.get("vocabulary_hash"):
        return split
    log.warning("split %s: its BoI has vocabulary %s but split.json says %s (an interrupted rebuild): recording it",
                split.id, built, split.meta.get("vocabulary_hash"))
    meta = {**split.meta, "vocabulary_hash": built, "same_item_sequences": [],
            "previous_vocabulary_hashes": [*split.meta.get("previous_vocabulary_hashes", []), split.meta.get("vocabulary_hash")]}
    with atomic_file(split.root / "split.json") as path:
        path.write_text(json.dumps(meta, indent=2))
    return Split.load(split.root)


def _kept_events(boi_root: Path) -> dict[str, tuple[int, int]]:
    """(events kept, events skipped) of every BoI directory under ``boi_root``: equal before and after a rebuild means
    the item sequences are the same."""
    out = {}
    for directory in sorted(set(DIRECTORIES.values())):
        summary = json.loads((boi_root / directory / "manifest.json").read_text())["summary"]
        out[directory] = (summary["events"], summary.get("skipped_events", 0))
    return out


def rebuild_bois(split: Split, config: BuildConfig) -> Split:
    """Replace the split's BoI directories by ones built with ``config`` (a newly chosen vocabulary); same split id.

    The parts (events, targets, labels) are untouched. Where every BoI directory keeps the same events
    (no item lost or gained an embedding), the item sequences are the same, so a sequence model's
    checkpoint stays valid: ``split.json``'s ``same_item_sequences`` lists the earlier vocabularies for
    which that holds. Checkpoints of methods that read interests (LURM) record the old vocabulary's hash
    and are refused by the evaluator from then on. The item embeddings are reused when their config is
    the same. The new directories are built beside the old ones and swapped in (then ``split.json``), so
    a failed build leaves the split as it was."""
    old = json.loads((split.boi("pretrain") / "manifest.json").read_text())
    boi_root = split.boi("pretrain").parent
    kept_before = _kept_events(boi_root)
    log.info("split %s: its vocabulary (%s) is not the chosen one (%s): rebuilding its BoI", split.id,
             _vocabulary_fields(old["config"]), _vocabulary_fields(json.loads(json.dumps(dataclasses.asdict(config)))))
    same_embeddings = _vocabulary_fields(old["config"])["embedding"] == json.loads(json.dumps(dataclasses.asdict(config.embedding)))
    embeddings = split.boi("pretrain") / "item_embeddings" if same_embeddings else None
    with atomic_dir(boi_root) as tmp:
        _build_bois(split.root / "datasets", tmp, config, embeddings_dir=embeddings)
    kept = _kept_events(boi_root)
    same = [*split.meta.get("same_item_sequences", []), split.meta["vocabulary_hash"]] if kept == kept_before else []
    if not same:
        log.warning("split %s: the new vocabulary keeps other events (%s, before %s): sequence checkpoints of the earlier "
                    "vocabulary are no longer valid on it", split.id, kept, kept_before)
    meta = {**split.meta, "vocabulary_hash": json.loads((split.boi("pretrain") / "manifest.json").read_text())["vocabulary_hash"],
            "previous_vocabulary_hashes": [*split.meta.get("previous_vocabulary_hashes", []), split.meta["vocabulary_hash"]],
            "same_item_sequences": same}
    with atomic_file(split.root / "split.json") as path:
        path.write_text(json.dumps(meta, indent=2))
    log.info("split %s: BoI rebuilt with vocabulary %s", split.id, meta["vocabulary_hash"])
    return Split.load(split.root)


def _write_parts(dataset_dir: Path, config: SplitConfig, out: Path, key: dict | None = None) -> dict:
    dataset_dir = Path(dataset_dir)
    key = key or split_key(dataset_dir, config)
    events, from_end = rank_from_end(read_events(dataset_dir))
    if events.num_rows == 0:
        raise DataError("the dataset has no events to split", file=str(dataset_dir / "events"))
    timestamps = events["timestamp"].to_numpy()
    cutoff = int(np.quantile(timestamps, config.cutoff_quantile, method="higher"))
    before = timestamps < cutoff
    masks = {"pretrain": from_end >= HOLDOUT, "history_test": from_end >= 1, "before_cutoff": before}
    plain = events.drop_columns(["_item", "_behavior"])
    for directory, mask in masks.items():
        shared = [p for p in PARTS if DIRECTORIES[p] == directory]
        _write_dataset(dataset_dir, out / "datasets" / directory, plain.filter(pa.array(mask)), directory, shared)
    _write_targets(plain, from_end, out / "targets.parquet")
    _write_future(dataset_dir, plain.filter(pa.array(~before)), out / "future.parquet")
    manifest = load_manifest(dataset_dir)
    return {"id": _id_of(key), "version": VERSION, "dataset": manifest.get("name"),
            "dataset_dir": str(dataset_dir.resolve()), "config": dataclasses.asdict(config), "holdout": HOLDOUT,
            "tie_rule": TIE_RULE, "events_digest": key["events_digest"], "items_digest": key["items_digest"],
            "users_digest": users_digest(dataset_dir), "cutoff": cutoff, "events": {p: int(masks[DIRECTORIES[p]].sum()) for p in PARTS},
            "parts": {p: {"dataset": f"datasets/{DIRECTORIES[p]}", "boi": f"boi/{DIRECTORIES[p]}"} for p in PARTS}}


def _write_dataset(source: Path, out: Path, events: pa.Table, directory: str, parts: list[str]) -> None:
    (out / "events").mkdir(parents=True)
    pq.write_table(events, out / "events" / "part-00000.parquet")
    for name in ("items.parquet", "users.parquet"):
        if (source / name).exists():
            shutil.copyfile(source / name, out / name)
    manifest = load_manifest(source)
    manifest["name"] = f"{manifest.get('name') or source.name}:{directory}"
    manifest["counts"] = {**manifest.get("counts", {}), "events": events.num_rows}
    manifest["split_part"] = directory
    manifest["split_parts"] = parts  # every part name this directory serves
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


def _build_bois(datasets: Path, bois: Path, build_config=None, embeddings_dir: Path | None = None) -> None:
    """BoI of every directory: the pretraining part learns embeddings and vocabulary, the others reuse them."""
    config = build_config or BuildConfig()
    build(datasets / "pretrain", bois / "pretrain", config, embeddings_dir=embeddings_dir)
    skip = dataclasses.replace(config, boi=dataclasses.replace(config.boi, on_unknown_items="skip"))
    for directory in sorted(set(DIRECTORIES.values()) - {"pretrain"}):
        # items first seen in a held-out event may lack an interest with co-occurrence embeddings: skip them
        build(datasets / directory, bois / directory, skip, vocabulary_dir=bois / "pretrain" / "vocabulary")
