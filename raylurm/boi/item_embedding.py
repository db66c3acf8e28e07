"""Item embeddings for the Bag of Interests (LURM §3.1.1), from item text or item co-occurrence.

Two methods, chosen by :attr:`ItemEmbeddingConfig.method`:

* ``"text"`` (eq. 1-3): ``e_x = proj(mean_i W_{w_i})`` over the words of item ``x``'s text,
  trained with the symmetric InfoNCE of :func:`raylurm.losses.info_nce` on positive pairs: two
  events of one user less than β apart, on different items. One refinement of eq. 2: another
  copy of the anchor's or the partner's item in the batch is not counted as a negative
  (:func:`accidental_hits`; popular items recur within a batch of 2n).
* ``"cooccurrence"`` (the paper: "other methods which can be used to generate item embedding
  are feasible"), for data without useful text: the same β-window pairs counted into a sparse
  item x item matrix, weighted by PPMI, factorised by randomized SVD (``U sqrt(S)``).
  **Items that never co-occur with another item get the zero vector**; their number is logged
  as a warning and stored as ``config["metrics"]["items_without_cooccurrence"]``.

Every item of ``items.parquet`` gets a row, also items absent from the events. Saved layout
(:meth:`ItemEmbeddings.save`, written atomically)::

    <dir>/items.parquet     item_id (row i <-> embeddings.npy[i])
    <dir>/embeddings.npy    (N, dim) float32, unit rows (zero rows: see above)
    <dir>/config.json       ItemEmbeddingConfig fields + "metrics"
    <dir>/model.pt          text only: TextItemEncoder state_dict
    <dir>/words.json        text only: the word vocabulary, index = word id
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from raylurm.data.errors import DataError
from raylurm.data.io import atomic_dir
from raylurm.losses import info_nce

logger = logging.getLogger(__name__)

METHODS = ("text", "cooccurrence")
UNK, EMPTY = "<unk>", "<empty>"  # word ids 0 and 1
_NON_WORD = r"[^\pL\pN_]+"  # RE2 pattern: the complement of Python's \w (letters, digits, "_")
_SECONDS_PER_DAY = 86_400
_EMBED_BATCH = 8192  # items per forward pass when embedding the whole table
_MAX_DRAW_ROUNDS = 20  # draws of anchors while partners turn out to be the same item
_SVD_OVERSAMPLING = 10  # extra columns for torch.svd_lowrank (Halko et al.: q = k + 5..10)
_SVD_ITERATIONS = 4
_CONTEXT_SMOOTHING = 0.75  # PPMI context-distribution smoothing (Levy, Goldberg & Dagan, 2015)
Bounds = tuple[np.ndarray, np.ndarray]  # per event, [lo, hi) of its user's β-window: (E,), (E,)
_INT_FIELDS = ("dim", "epochs", "batch_size", "max_words", "min_word_count", "pairs_per_epoch", "max_events")


@dataclasses.dataclass(frozen=True)
class ItemEmbeddingConfig:
    """Item-embedding hyper-parameters (paper defaults: d = 128, τ = 0.1, β = 5 days).

    ``cooccurrence`` uses ``window_days``, ``max_events``, ``dim`` and draws about
    ``epochs * pairs_per_epoch`` pairs (every event with a partner is an anchor at least once);
    ``temperature``, ``batch_size``, ``lr``, ``max_words`` and ``min_word_count`` are text-only.
    """

    method: str = "text"  # "text" (eq. 1-3) or "cooccurrence" (for data without good text)
    dim: int = 128  # word/item embedding width (paper: 128)
    temperature: float = 0.1  # τ of eq. 3
    window_days: float = 5.0  # β: two items of one user less than β apart form a positive pair
    epochs: int = 3
    batch_size: int = 1024  # n pairs per batch (2n items)
    lr: float = 1e-3
    max_words: int = 32  # words per item text (truncate; the paper covers 95 %)
    min_word_count: int = 1  # rarer words map to <unk>
    pairs_per_epoch: int = 500_000
    max_events: int = 5_000_000  # events sampled (whole users) to draw pairs from: bounded memory
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown item-embedding method {self.method!r}; choose one of {METHODS}")
        for name in (*_INT_FIELDS, "temperature", "window_days", "lr"):
            value = getattr(self, name)
            kind = int if name in _INT_FIELDS else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or not math.isfinite(value):
                what = "integer" if kind is int else "number"
                raise ValueError(f"ItemEmbeddingConfig.{name} must be a positive {what}, got {value!r}")
        if self.batch_size < 2:
            raise ValueError(f"ItemEmbeddingConfig.batch_size must be >= 2 (a lone pair has no negatives), "
                             f"got {self.batch_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ItemEmbeddingConfig.seed must be a non-negative integer, got {self.seed!r}")


# ----------------------------------------------------------------------------- text encoder (eq. 1)


@dataclasses.dataclass(frozen=True)
class WordBags:
    """Item texts as ragged word ids: item ``i`` is ``ids[offsets[i]:offsets[i + 1]]`` (never empty)."""

    ids: np.ndarray  # (T,) int64
    offsets: np.ndarray  # (N + 1,) int64

    def take(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``nn.EmbeddingBag`` input for items ``rows`` (B,): word ids (T',) and bag offsets (B,)."""
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        bag_offsets = np.cumsum(lengths) - lengths  # (B,)
        flat = np.repeat(starts - bag_offsets, lengths) + np.arange(lengths.sum())  # (T',)
        return torch.from_numpy(self.ids[flat]), torch.from_numpy(bag_offsets)


def split_words(texts: pa.Array, max_words: int) -> tuple[pa.Array, np.ndarray]:
    """Lowercased ``\\w+`` words of each text, at most ``max_words`` each: words (T,), item row (T,)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    lists = pc.split_pattern_regex(pc.utf8_lower(texts.cast(pa.large_string())), _NON_WORD)
    words, owner = pc.list_flatten(lists), pc.list_parent_indices(lists).to_numpy()
    keep = np.array(pc.greater(pc.binary_length(words), 0).to_numpy(zero_copy_only=False), dtype=bool)
    owner = owner[keep]
    position = np.arange(owner.size) - np.searchsorted(owner, owner)  # index of the word in its item
    keep[keep] = position < max_words
    return words.filter(pa.array(keep)), owner[position < max_words]


def build_vocabulary(texts: pa.Array, max_words: int, min_count: int) -> list[str]:
    """``[<unk>, <empty>]`` + the words seen at least ``min_count`` times, most frequent first."""
    counts = pc.value_counts(split_words(texts, max_words)[0])
    table = pa.table({"word": counts.field("values"), "count": counts.field("counts")})
    table = table.filter(pc.greater_equal(table["count"], min_count))
    return [UNK, EMPTY] + table.sort_by([("count", "descending"), ("word", "ascending")])["word"].to_pylist()


def encode_texts(texts: pa.Array, vocabulary: list[str], max_words: int) -> WordBags:
    """Word ids per item; unknown words -> ``<unk>``, an item without words -> one ``<empty>``."""
    words, owner = split_words(texts, max_words)
    ids = pc.fill_null(pc.index_in(words, value_set=pa.array(vocabulary, words.type)), 0).to_numpy()
    counts = np.bincount(owner, minlength=len(texts))
    empty = np.flatnonzero(counts == 0)
    order = np.argsort(np.concatenate([owner, empty]), kind="stable")
    ids = np.concatenate([ids.astype(np.int64), np.ones(empty.size, np.int64)])[order]
    return WordBags(ids, np.concatenate([[0], np.cumsum(np.maximum(counts, 1))]).astype(np.int64))


class ResidualBlock(nn.Module):
    """Pre-norm residual MLP block of ``proj`` (eq. 1): ``x + W_2 ReLU(W_1 LayerNorm(x))``, width ``dim``."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.relu(self.fc1(self.norm(x))))  # (B, D)


class TextItemEncoder(nn.Module):
    """LURM eq. 1: ``e_x = proj(mean_i W_{w_i})``; ``proj`` = two :class:`ResidualBlock` + L2 norm.

    Word vectors start at ``N(0, 1/dim)`` rather than ``N(0, 1)``: the same scale as the blocks'
    outputs, so Adam's steps move rare words noticeably (better genre neighbours on MovieLens).
    """

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.words = nn.EmbeddingBag(vocab_size, dim, mode="mean", sparse=True)  # W, (V, D); sparse grads
        nn.init.normal_(self.words.weight, std=dim**-0.5)
        self.proj = nn.Sequential(ResidualBlock(dim), ResidualBlock(dim))

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """``ids`` (T,) word ids of B items back to back, ``offsets`` (B,) -> unit rows (B, D)."""
        mean = self.words(ids, offsets)  # (B, D)
        return F.normalize(self.proj(mean), dim=-1)  # (B, D)


@torch.no_grad()
def embed_bags(model: TextItemEncoder, bags: WordBags, device: str | torch.device = "cpu") -> np.ndarray:
    """``e_x`` of every item of ``bags``: (N, D) float32."""
    model.eval()
    n = len(bags.offsets) - 1
    chunks = [np.arange(start, min(start + _EMBED_BATCH, n)) for start in range(0, n, _EMBED_BATCH)]
    out = [model(*(t.to(device) for t in bags.take(rows))).cpu() for rows in chunks]
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, model.words.embedding_dim), np.float32)


# ----------------------------------------------------------------------------- events and positive pairs


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


# ----------------------------------------------------------------------------- the two methods


def _train_epoch(model: TextItemEncoder, optimizers: list[torch.optim.Optimizer], bags: WordBags,
                 pairs: tuple[np.ndarray, np.ndarray], config: ItemEmbeddingConfig, bar: tqdm,
                 device: str | torch.device) -> float:
    """One pass over item pairs (x_i, y_i) (P,) with the eq. 3 loss; returns the mean loss."""
    total, seen = 0.0, 0
    for start in range(0, pairs[0].size, config.batch_size):
        x, y = (p[start:start + config.batch_size] for p in pairs)
        if x.size < 2:
            continue  # a lone pair has no negatives
        rows, partners = np.concatenate([x, y]), np.concatenate([y, x])  # (2n,) item rows
        ids, offsets = bags.take(rows)
        e = model(ids.to(device), offsets.to(device))  # (2n, D)
        loss = info_nce(e[: x.size], e[x.size:], config.temperature, accidental_hits(rows, partners).to(device))
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        value = loss.item()
        total, seen = total + value * x.size, seen + x.size
        bar.update()
        bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    return total / max(seen, 1)


def accidental_hits(rows: np.ndarray, partners: np.ndarray) -> torch.Tensor:
    """(2n, 2n) True where candidate j is a copy of anchor i's item or of its partner's item:
    such a copy cannot be told apart from the positive, so eq. 2 does not count it as a negative."""
    return torch.from_numpy((rows[None, :] == rows[:, None]) | (rows[None, :] == partners[:, None]))


def _optimizers(model: TextItemEncoder, lr: float) -> list[torch.optim.Optimizer]:
    """Adam; on the word table the lazy (sparse) variant, which touches only the batch's words."""
    words = torch.optim.SparseAdam(list(model.words.parameters()), lr=lr)
    return [words, torch.optim.Adam(model.proj.parameters(), lr=lr)]


def _fit_text(items: pa.Table, log: EventLog, bounds: Bounds, config: ItemEmbeddingConfig,
              rng: np.random.Generator, progress: bool, device: str | torch.device) -> ItemEmbeddings:
    """Train eq. 1 with eq. 3 on β-window pairs, then embed every item."""
    words = build_vocabulary(items["text"], config.max_words, config.min_word_count)
    bags = encode_texts(items["text"], words, config.max_words)
    model = TextItemEncoder(len(words), config.dim).to(device)
    optimizers = _optimizers(model, config.lr)
    losses = []
    steps = config.epochs * -(-config.pairs_per_epoch // config.batch_size)
    with tqdm(total=steps, desc="item embeddings (text)", disable=not progress) as bar:
        for epoch in range(config.epochs):
            anchors, partners = draw_pairs(log, bounds, config.pairs_per_epoch, rng)
            pairs = (log.item[anchors], log.item[partners])  # (P,) item rows
            losses.append(_train_epoch(model, optimizers, bags, pairs, config, bar, device))
            logger.info("item embeddings epoch %d/%d: loss %.4f", epoch + 1, config.epochs, losses[-1])
    metrics = {"loss_per_epoch": losses, "vocab_size": len(words), **_coverage(log, items.num_rows)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    vectors = embed_bags(model, bags, device)
    return ItemEmbeddings(items["item_id"].combine_chunks(), vectors, _record(config, metrics), state, words)


def cooccurrence_counts(log: EventLog, bounds: Bounds, budget: int, num_items: int,
                        rng: np.random.Generator) -> torch.Tensor:
    """Symmetric sparse (N, N) counts of sampled β-window pairs. Every event with a window partner
    anchors ``ceil(budget / #such events)`` draws (rather than random anchors), so rare items are
    covered; pairs on one item are dropped."""
    eligible = np.flatnonzero(bounds[1] - bounds[0] > 1)
    if eligible.size == 0:
        raise DataError("no positive pairs: no user has two events closer than the window β")
    anchors, partners = sample_partners(log, bounds, np.repeat(eligible, -(-budget // eligible.size)), rng)
    x, y = log.item[anchors], log.item[partners]
    indices = torch.from_numpy(np.stack([np.concatenate([x, y]), np.concatenate([y, x])]))  # (2, 2P)
    values = torch.ones(indices.shape[1], dtype=torch.float64)
    return torch.sparse_coo_tensor(indices, values, (num_items, num_items), check_invariants=True).coalesce()


def ppmi(counts: torch.Tensor, smoothing: float = _CONTEXT_SMOOTHING) -> torch.Tensor:
    """``max(0, log c_ij - log c_i - log P_α(j))`` on the non-zeros of symmetric sparse counts,
    ``P_α(j) = c_j^α / Σ_k c_k^α`` (context smoothing); float32 sparse (N, N)."""
    (i, j), c = counts.indices(), counts.values()
    row = torch.zeros(counts.shape[0], dtype=c.dtype).index_add_(0, i, c)  # (N,) = column sums
    context = row.pow(smoothing)
    pmi = c.log() - row[i].log() - (context[j] / context.sum()).log()  # (nnz,)
    keep = pmi > 0
    indices, values = counts.indices()[:, keep], pmi[keep].float()
    return torch.sparse_coo_tensor(indices, values, counts.shape, check_invariants=True).coalesce()


def svd_vectors(matrix: torch.Tensor, dim: int) -> np.ndarray:
    """Unit rows of ``U sqrt(S)`` from a rank-``dim`` randomized SVD of a sparse (N, N) matrix;
    empty rows stay zero. Width ``dim`` (zero-padded when N < dim)."""
    n = matrix.shape[0]
    u, s, _ = torch.svd_lowrank(matrix, q=min(dim + _SVD_OVERSAMPLING, n), niter=_SVD_ITERATIONS)
    vectors = torch.zeros(n, dim)
    k = min(dim, s.numel())
    vectors[:, :k] = u[:, :k] * s[:k].sqrt()  # (N, k)
    empty = torch.zeros(n, dtype=torch.bool).index_fill_(0, matrix.indices()[0], True).logical_not()
    vectors[empty] = 0.0
    return F.normalize(vectors, dim=1).numpy()


def _fit_cooccurrence(items: pa.Table, log: EventLog, bounds: Bounds, config: ItemEmbeddingConfig,
                      rng: np.random.Generator) -> ItemEmbeddings:
    """Windowed co-occurrence -> PPMI -> randomized SVD; items without co-occurrence get zeros."""
    counts = cooccurrence_counts(log, bounds, config.epochs * config.pairs_per_epoch, items.num_rows, rng)
    weights = ppmi(counts)
    vectors = svd_vectors(weights, config.dim)
    missing = int((np.abs(vectors).sum(axis=1) == 0).sum())
    if missing:
        logger.warning("%d of %d item(s) have no co-occurrence within %g days: their vectors are zero",
                       missing, items.num_rows, config.window_days)
    metrics = {"pairs": int(counts.values().sum().item()) // 2, "nonzeros": int(weights.values().numel()),
               "items_without_cooccurrence": missing, **_coverage(log, items.num_rows)}
    return ItemEmbeddings(items["item_id"].combine_chunks(), vectors, _record(config, metrics))


def _coverage(log: EventLog, num_items: int) -> dict:
    return {"events": int(log.item.size), "items_without_events": num_items - int(np.unique(log.item).size)}


def _record(config: ItemEmbeddingConfig, metrics: dict) -> dict:
    return {**dataclasses.asdict(config), "metrics": metrics}


def _read_items(dataset_dir: Path, method: str) -> pa.Table:
    path = dataset_dir / "items.parquet"
    if not path.exists():
        raise DataError("the dataset has no items table (items.parquet); item embeddings need one",
                        file=str(dataset_dir))
    table = pq.read_table(path)
    if table.num_rows == 0:
        raise DataError("the items table is empty", file=str(path))
    no_text = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    text = table["text"] if "text" in table.column_names else no_text
    if method == "text" and text.null_count == table.num_rows:
        raise DataError("no item has text; use ItemEmbeddingConfig(method='cooccurrence')", file=str(path))
    if method == "text" and text.null_count:
        logger.warning("%d of %d item(s) have no text: they embed as <empty>", text.null_count, table.num_rows)
    return pa.table({"item_id": table["item_id"].combine_chunks(), "text": text.combine_chunks()})


def train_item_embeddings(dataset_dir: str | os.PathLike, config: ItemEmbeddingConfig, progress: bool = True,
                          device: str | torch.device = "cpu") -> ItemEmbeddings:
    """Embed every item of a prepared dataset (LURM §3.1.1); deterministic for ``config.seed``."""
    started = time.perf_counter()
    dataset_dir = Path(dataset_dir)
    items = _read_items(dataset_dir, config.method)
    rng = np.random.default_rng(config.seed)
    log = load_events(dataset_dir, items["item_id"], config.max_events, rng)
    bounds = window_bounds(log, config.window_days * _SECONDS_PER_DAY)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.method == "text":
            result = _fit_text(items, log, bounds, config, rng, progress, device)
        else:
            result = _fit_cooccurrence(items, log, bounds, config, rng)
    logger.info("embedded %d items (%s) from %d events in %.1f s", items.num_rows, config.method, log.item.size,
                time.perf_counter() - started)
    return result


# ----------------------------------------------------------------------------- result


@dataclasses.dataclass
class ItemEmbeddings:
    """Unit item vectors aligned with ``item_ids``; the text method also keeps its encoder."""

    item_ids: pa.Array  # (N,) ids as in items.parquet (int64 or string)
    vectors: np.ndarray  # (N, dim) float32, L2-normalised rows (zero rows: see module docstring)
    config: dict  # ItemEmbeddingConfig fields + "metrics"
    model_state: dict[str, torch.Tensor] | None = None  # text: TextItemEncoder.state_dict()
    words: list[str] | None = None  # text: vocabulary, index = word id

    def save(self, directory: str | os.PathLike) -> None:
        """Write the layout of the module docstring atomically (replacing ``directory``)."""
        with atomic_dir(directory) as tmp:
            pq.write_table(pa.table({"item_id": self.item_ids}), tmp / "items.parquet")
            np.save(tmp / "embeddings.npy", np.ascontiguousarray(self.vectors, np.float32))
            (tmp / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True))
            if self.model_state is not None:
                torch.save(self.model_state, tmp / "model.pt")
                (tmp / "words.json").write_text(json.dumps(self.words))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ItemEmbeddings:
        directory = Path(directory)
        if not (directory / "embeddings.npy").exists():
            raise DataError("not an item-embedding directory (no embeddings.npy)", file=str(directory))
        has_model = (directory / "model.pt").exists()
        return cls(
            item_ids=pq.read_table(directory / "items.parquet")["item_id"].combine_chunks(),
            vectors=np.load(directory / "embeddings.npy"),
            config=json.loads((directory / "config.json").read_text()),
            model_state=torch.load(directory / "model.pt", weights_only=True) if has_model else None,
            words=json.loads((directory / "words.json").read_text()) if has_model else None,
        )

    def content_hash(self) -> str:
        """sha256 of the config, the ids and the vectors; equal before and after save/load."""
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        digest.update(str(self.item_ids.type).encode())
        if pa.types.is_integer(self.item_ids.type):
            digest.update(self.item_ids.to_numpy().astype(np.int64).tobytes())
        else:
            digest.update(json.dumps(self.item_ids.to_pylist()).encode())
        vectors = np.ascontiguousarray(self.vectors, np.float32)
        digest.update(str(vectors.shape).encode())
        digest.update(vectors.tobytes())
        return digest.hexdigest()

    def encoder(self) -> TextItemEncoder:
        """The trained eq. 1 encoder (text method only), rebuilt from this checkpoint alone."""
        if self.model_state is None or self.words is None:
            raise ValueError(f"method {self.config.get('method')!r} has no text encoder")
        model = TextItemEncoder(len(self.words), self.config["dim"])
        model.load_state_dict(self.model_state)
        return model

    def embed_texts(self, texts: Sequence[str | None]) -> np.ndarray:
        """Embed new item texts with the trained encoder: (len(texts), dim) float32."""
        model = self.encoder()
        bags = encode_texts(pa.array(list(texts), pa.large_string()), self.words, self.config["max_words"])
        return embed_bags(model, bags)
