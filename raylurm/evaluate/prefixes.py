"""Prefix pseudo-users: many (prefix -> next item) examples per user, as BoI rows the encoders read.

The next-item scorer of a representation without its own item scorer (the probe MLP with a
softmax over items) is trained on *prefixes* of each user's ``history`` events: for a user with
``n`` events restricted to items of the vocabulary and ordered by (timestamp, vocabulary index of
the item, index of the behaviour in the BoI manifest's ``behaviors``) — the split's tie rule and
``build_user_rows``' own order, so a prefix is a prefix of the user's BoI sequence — up to
``per_user`` cut positions ``c`` are drawn uniformly without replacement from ``1..n-1``; the
prefix is ``events[:c]`` and the target ``events[c]``. Every prefix is a pseudo-user whose BoI row
is exactly what :func:`raylurm.boi.pipeline.build_user_rows` gives for those ``c`` events (every
scale, the raw sequence capped at ``max_sequence_length``), so the frozen encoder sees it as it
sees a real user. The rows are built in-process (``EventMapper`` +
``build_user_rows``, vectorised, in chunks of prefixes), no Ray.

No prefix holds a held-out event: ``history`` (the same events as ``pretrain``) is every event but
each user's last two, and both prefixes and targets are ``history`` events.

Layout (written once, atomically; ``build`` reuses it)::

    <split.root>/prefixes-<per_user>-<seed>/
        prefixes.json        split id, vocabulary hash, per_user, seed, counts
        events.parquet       the ordered, in-vocabulary history events (user_id, item_id, timestamp, behavior)
        examples.parquet     prefix_id, user_id, cut, target_item, target_time, start (offset in events.parquet)
        boi/manifest.json    the pretraining BoI manifest, with this directory's summary
        boi/vocabulary/      the split's vocabulary (a copy: item_index / DataInfo read it here)
        boi/users/part-NNNNN.parquet   one row per prefix, user_id = prefix_id

``prefix_id = user_row * per_user + k`` (``user_row``: the user's rank among the history part's
users sorted by id; ``k``: the cut's rank among that user's cuts, ascending), as a zero-padded
string (``"000123"``) when the dataset's user ids are strings. ``examples.parquet`` rows and
``users/`` rows are both in ascending ``prefix_id`` order (a Ray Data read need not keep it:
align by id).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import scipy.sparse as sp

from raylurm.boi.pipeline import BoiConfig, EventMapper, build_user_rows, summarize, user_segments
from raylurm.boi.vocabulary import Vocabulary
from raylurm.data.errors import DataError
from raylurm.data.io import atomic_dir

log = logging.getLogger(__name__)

VERSION = 1
EVENT_COLUMNS = ["user_id", "item_id", "timestamp", "behavior"]
#: within a user, the split's tie rule (raylurm.evaluate.split.TIE_RULE) and build_user_rows' order:
#: timestamp, then vocabulary index of the item, then index of the behaviour in the BoI manifest's ``behaviors``
ORDER = [("user_id", "ascending"), ("timestamp", "ascending"), ("_item", "ascending"), ("_behavior", "ascending")]
CHUNK_EVENTS = 1_000_000  # prefix events per build_user_rows call (bounds memory)


@dataclasses.dataclass
class Prefixes:
    """A materialised prefix directory; the example arrays are aligned with each other (one per prefix)."""

    root: Path
    boi: Path  # BoI directory for represent.encode / represent.raw_boi
    prefix_id: np.ndarray  # int64 (or object: str, when user ids are strings)
    user_id: np.ndarray  # the real user of each prefix
    cut: np.ndarray  # int64: prefix length c (events[:c])
    target_item: np.ndarray  # raw item id of events[c]
    target_time: np.ndarray  # int64 timestamp of events[c]
    start: np.ndarray  # int64: offset of the user's first event in events.parquet
    meta: dict

    def __len__(self) -> int:
        return len(self.prefix_id)

    @property
    def events(self) -> Path:
        return self.root / "events.parquet"

    @classmethod
    def load(cls, root: str | os.PathLike) -> "Prefixes":
        root = Path(root)
        meta = json.loads((root / "prefixes.json").read_text())
        table = pq.read_table(root / "examples.parquet")

        def col(name: str) -> np.ndarray:
            return table[name].to_numpy(zero_copy_only=False)

        return cls(root, root / "boi", col("prefix_id"), col("user_id"), col("cut").astype(np.int64),
                   col("target_item"), col("target_time").astype(np.int64), col("start").astype(np.int64), meta)

    def event_rows(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(prefix row, row in events.parquet) of every event of the given prefixes (default: all)."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        return _gather(self.start[rows], self.cut[rows], rows)

    def item_counts(self, index: dict) -> sp.csr_matrix:
        """Prefix × vocabulary-item event counts (rows aligned with the examples; ``index``: raw item id -> column)."""
        items = pq.read_table(self.events, columns=["item_id"])["item_id"].combine_chunks()
        column = _lookup(items, index)
        parts = []
        for rows in _chunks(self.cut, CHUNK_EVENTS):
            prefix, event = self.event_rows(rows)
            cols = column[event]
            keep = cols >= 0
            parts.append(sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (prefix[keep] - rows[0], cols[keep])),
                                       shape=(len(rows), len(index))))
        if not parts:
            return sp.csr_matrix((0, len(index)), dtype=np.float32)
        return sp.vstack(parts, format="csr").astype(np.float32)


def sample_cuts(counts: np.ndarray, per_user: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``per_user`` distinct cuts per user, uniform without replacement from ``1..n-1``.

    ``counts`` is each user's event count ``n`` (users with ``n < 2`` get none). Returns
    ``(user_row, k, cut)`` sorted by user then cut; ``k`` is the cut's rank within its user.
    Deterministic given ``counts``, ``per_user`` and ``seed``.
    """
    if per_user < 1:
        raise ValueError(f"per_user must be >= 1, got {per_user}")
    counts = np.asarray(counts, dtype=np.int64)
    choices = np.maximum(counts - 1, 0)  # candidate cuts 1..n-1
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), choices)
    first = np.cumsum(choices) - choices
    position = np.arange(len(owner), dtype=np.int64) - first[owner] + 1
    keys = np.random.default_rng(seed).random(len(owner))
    order = np.lexsort((keys, owner))  # a random permutation of each user's candidates
    rank = np.arange(len(owner)) - first[owner[order]]
    chosen = order[rank < per_user]
    chosen = chosen[np.lexsort((position[chosen], owner[chosen]))]
    user_row, cut = owner[chosen], position[chosen]
    taken = np.minimum(choices, per_user)
    k = np.arange(len(chosen), dtype=np.int64) - (np.cumsum(taken) - taken)[user_row]
    return user_row, k, cut


def default_root(split, per_user: int, seed: int) -> Path:
    return Path(split.root) / f"prefixes-{per_user}-{seed}"


def build(split, per_user: int = 8, seed: int = 0, root: str | os.PathLike | None = None) -> Prefixes:
    """Materialise (once) the prefix examples and their BoI rows for ``split``; see the module docstring."""
    root = Path(root) if root else default_root(split, per_user, seed)
    source = Path(split.boi("pretrain"))
    manifest = json.loads((source / "manifest.json").read_text())
    key = {"version": VERSION, "split": split.id, "vocabulary_hash": manifest["vocabulary_hash"],
           "per_user": per_user, "seed": seed}
    if (root / "prefixes.json").exists():
        meta = json.loads((root / "prefixes.json").read_text())
        if {k: meta.get(k) for k in key} == key:
            return Prefixes.load(root)
        log.info("prefix directory %s was built for %s, not %s: rebuilding", root, {k: meta.get(k) for k in key}, key)
    started = time.perf_counter()
    with atomic_dir(root) as tmp:
        meta = _build(split, per_user, seed, source, manifest, tmp)
        meta.update(key, seconds=round(time.perf_counter() - started, 2))
        (tmp / "prefixes.json").write_text(json.dumps(meta, indent=2))
    log.info("prefixes: %d of %d users -> %d prefixes, %d prefix events, built in %.1f s at %s",
             meta["users_with_prefixes"], meta["users"], meta["prefixes"], meta["prefix_events"], meta["seconds"], root)
    return Prefixes.load(root)


def _build(split, per_user: int, seed: int, source: Path, manifest: dict, out: Path) -> dict:
    boi_config = manifest["config"]["boi"]
    config = BoiConfig(**{**boi_config, "scales": tuple(boi_config["scales"]), "on_unknown_items": "skip"})
    vocab = Vocabulary.load(source / "vocabulary")
    events = _history_events(Path(split.dataset("history")), vocab, list(manifest["behaviors"]), config)
    pq.write_table(events, out / "events.parquet")
    users, starts = user_segments(events["user_id"])
    user_row, k, cut = sample_cuts(np.diff(starts), per_user, seed)
    start = starts[:-1][user_row]
    integer_ids = pa.types.is_integer(events.schema.field("user_id").type)
    ids = user_row * per_user + k
    if integer_ids:
        prefix_ids = pa.array(ids, pa.int64())
    else:  # zero-padded, so that text order is numeric order
        width = len(str(int(ids.max()))) if len(ids) else 1
        prefix_ids = pa.array(np.char.zfill(ids.astype(str), width), pa.string())
    target = pa.array(start + cut, pa.int64())
    examples = pa.table({"prefix_id": prefix_ids, "user_id": users.take(pa.array(user_row, pa.int64())),
                         "cut": pa.array(cut, pa.int64()), "target_item": events["item_id"].take(target),
                         "target_time": events["timestamp"].take(target).cast(pa.int64()),
                         "start": pa.array(start, pa.int64())})
    pq.write_table(examples, out / "examples.parquet")

    boi = out / "boi"
    (boi / "users").mkdir(parents=True)
    shutil.copytree(source / "vocabulary", boi / "vocabulary")
    mapper = EventMapper(vocab.table(), list(manifest["behaviors"]), config, 1)
    for part, rows in enumerate(_chunks(cut, CHUNK_EVENTS)):
        prefix, event = _gather(start[rows], cut[rows], rows)
        owners = prefix_ids.take(pa.array(prefix, pa.int64()))
        batch = events.take(pa.array(event, pa.int64())).set_column(0, "user_id", owners)
        pq.write_table(build_user_rows(mapper(batch), config), boi / "users" / f"part-{part:05d}.parquet")
    summary = summarize(boi / "users", config.scales)
    boi_manifest = {**manifest, "dataset": str(Path(split.dataset("history")).resolve()),
                    "config": {**manifest["config"], "boi": {**boi_config, "on_unknown_items": "skip"}},
                    "summary": summary, "prefixes": {"split": split.id, "per_user": per_user, "seed": seed}}
    (boi / "manifest.json").write_text(json.dumps(boi_manifest, indent=2))
    return {"users": len(users), "users_with_prefixes": int(len(np.unique(user_row))), "events": events.num_rows,
            "prefixes": examples.num_rows, "prefix_events": int(cut.sum()),
            "skipped_prefix_events": summary["skipped_events"]}


def _history_events(dataset_dir: Path, vocab: Vocabulary, behaviors: list[str], config: BoiConfig) -> pa.Table:
    """The part's events in the BoI time range with a vocabulary item, sorted by user then :data:`ORDER`."""
    table = pads.dataset(dataset_dir / "events", format="parquet").to_table(columns=EVENT_COLUMNS)
    item = pc.index_in(table["item_id"], value_set=vocab.item_ids.cast(table.schema.field("item_id").type))
    mask = pc.is_valid(item)
    if config.since is not None:
        mask = pc.and_(mask, pc.greater_equal(table["timestamp"], config.since))
    if config.until is not None:
        mask = pc.and_(mask, pc.less(table["timestamp"], config.until))
    behavior = pc.index_in(table["behavior"], value_set=pa.array(behaviors, pa.string()))
    unknown = pc.unique(pc.filter(table["behavior"], pc.and_(mask, pc.is_null(behavior))))
    if len(unknown):
        raise DataError(f"behaviours {unknown.to_pylist()[:5]} of the history part are not in the pretraining BoI's "
                        f"{behaviors}", file=str(dataset_dir / "events"), column="behavior")
    table = table.append_column("_item", item).append_column("_behavior", behavior).filter(mask)
    return table.take(pc.sort_indices(table, ORDER)).drop_columns(["_item", "_behavior"]).combine_chunks()


def _gather(starts: np.ndarray, cuts: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For prefixes (start, cut): the owning row of each prefix event and the event's offset ``start + j``, j < cut."""
    total = int(cuts.sum())
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(cuts) - cuts, cuts)
    return np.repeat(rows, cuts), np.repeat(starts, cuts) + within


def _chunks(cuts: np.ndarray, budget: int):
    """Consecutive row ranges whose cuts sum to about ``budget`` (one row at least)."""
    if len(cuts) == 0:
        return
    bounds = np.searchsorted(np.cumsum(cuts), np.arange(budget, int(cuts.sum()), budget), side="left") + 1
    edges = np.unique(np.concatenate([[0], bounds, [len(cuts)]]))
    for a, b in zip(edges[:-1], edges[1:]):
        yield np.arange(a, b, dtype=np.int64)


def _lookup(items: pa.Array, index: dict) -> np.ndarray:
    """Column of each raw item id in ``index`` (-1 when absent), vectorised."""
    if not index:
        return np.full(len(items), -1, dtype=np.int64)
    keys = pa.array(list(index.keys()))
    if keys.type != items.type:
        keys = keys.cast(items.type)
    values = np.fromiter(index.values(), dtype=np.int64, count=len(index))
    position = pc.index_in(items, value_set=keys).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.where(position >= 0, values[np.maximum(position, 0)], -1)
