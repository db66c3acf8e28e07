"""The text item encoder of LURM eq. 1-3: ``e_x = proj(mean_i W_{w_i})``, trained with symmetric InfoNCE.

Positive pairs are two events of one user less than β apart, on different items
(:mod:`raylurm.boi.embeddings.pairs`). One refinement of eq. 2: another copy of the anchor's or
the partner's item in the batch is not counted as a negative (:func:`accidental_hits`; popular
items recur within a batch of 2n).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from raylurm.boi.embeddings.config import ItemEmbeddingConfig
from raylurm.boi.embeddings.pairs import Bounds, EventLog, draw_pairs
from raylurm.losses import info_nce

logger = logging.getLogger(__name__)

UNK, EMPTY = "<unk>", "<empty>"  # word ids 0 and 1
_NON_WORD = r"[^\pL\pN_]+"  # RE2 pattern: the complement of Python's \w (letters, digits, "_")
_EMBED_BATCH = 8192  # items per forward pass when embedding the whole table


@dataclasses.dataclass
class TextFit:
    """What :func:`fit_text` trained: item vectors (N, dim), metrics, the encoder's weights and word vocabulary."""

    vectors: np.ndarray
    metrics: dict
    model_state: dict[str, torch.Tensor]
    words: list[str]


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


def build_word_vocabulary(texts: pa.Array, max_words: int, min_count: int) -> list[str]:
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


def fit_text(items: pa.Table, log: EventLog, bounds: Bounds, config: ItemEmbeddingConfig,
             rng: np.random.Generator, progress: bool, device: str | torch.device) -> TextFit:
    """Train eq. 1 with eq. 3 on β-window pairs, then embed every item."""
    words = build_word_vocabulary(items["text"], config.max_words, config.min_word_count)
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
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return TextFit(embed_bags(model, bags, device), {"loss_per_epoch": losses, "vocab_size": len(words)}, state, words)
