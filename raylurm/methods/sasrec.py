"""SASRec, the field's reference sequential recommender, as a baseline (Kang & McAuley, ICDM 2018).

A causal Transformer over the user's items: ``z_t = f(x_1 … x_t)`` (§III-A/B: item embedding
``√D·E[x]`` plus a learned position, pre-LayerNorm blocks of single-head causal self-attention
and a point-wise feed-forward net, dropout 0.2 on ML-1M), trained to predict ``x_{t+1}`` from
``z_t`` at **every position of every sequence in one causal pass** (§III-D), scored against the
shared item embeddings ``r_{t, i} = z_t · E[i]`` (§III-C). It is DSS's backbone without the
intentions and the seq2seq term, so "DSS > SASRec" (the DSS paper's claim) is measured by this
project's own harness on the same split: a baseline, not one of the four methods studied.

**Loss** (``SASRecConfig.loss``). The paper's binary cross-entropy with ONE sampled negative per
position is ``"bce"`` (kept for the ablation). The default ``"auto"`` is the full softmax over the
catalogue (``"full"``, chunked: :func:`raylurm.losses.next_item.catalogue_softmax`), replaced by a
sampled softmax with log-Q correction and accidental-hit masking (``"sampled"``) above
``full_softmax_max_items``: with full cross-entropy SASRec reaches its published ML-1M accuracy
in far fewer epochs than with BCE (Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec
really better than SASRec?", RecSys 2023; Petrov & Macdonald, "gSASRec", RecSys 2023).

**Positions** count from the first item of the encoded window (0 = oldest), so the state at t of
one pass over x_1 … x_T equals the state of the prefix x_1 … x_t encoded alone: what is trained at
position t is what ``embed``/``score_items`` compute for a history of length t. A history longer
than ``max_length`` is trained as a random window of ``max_length + 1`` items per step (each
position's input and target inside it) and encoded at inference as its last ``max_length`` items.

**Representation** (``embed``): ``z_T``, the state after the whole history (``hidden_dim`` wide).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from raylurm.config import typed_config
from raylurm.losses.next_item import catalogue_softmax, mixed_negatives, sampled_softmax_logq
from raylurm.train.batch import DataInfo
from raylurm.train.windows import encoded_length_window

Loss = Literal["auto", "full", "sampled", "bce"]


@typed_config
class SASRecConfig:
    # the paper's ML-1M width is 50; 64 as RecBole's SASRec and DSS here, so "DSS vs SASRec" is at equal size
    hidden_dim: Annotated[int, Field(ge=1, description="D, the width of the item embeddings and of every block")] = 64
    num_layers: Annotated[int, Field(ge=1, description="self-attention blocks")] = 2  # paper §IV-B: 2
    num_heads: Annotated[int, Field(ge=1, description="attention heads; must divide hidden_dim")] = 1  # paper: 1
    dropout: Annotated[float, Field(ge=0.0, lt=1.0, description="dropout in the embeddings and every block")] = 0.2  # paper, ML-1M
    max_length: Annotated[int | None, Field(ge=1, description=(
        "positions encoded (default: info.max_sequence_length)"))] = None  # paper: 200 on ML-1M
    # "auto" (a choice, see the module docstring): the full softmax where the catalogue allows it
    loss: Annotated[Loss, Field(description=(
        '"full": softmax over the catalogue; "sampled": sampled softmax with log-Q correction; '
        '"bce": the paper\'s binary cross-entropy with one negative; "auto": full up to full_softmax_max_items, else sampled'))] = "auto"
    # a choice: 100k items x 64 floats x 4096 rows per chunk stays ~1.6 GB of logits; beyond, sample
    full_softmax_max_items: Annotated[int, Field(ge=1, description='largest catalogue "auto" trains with the full softmax')] = 100_000
    # gSASRec (RecSys 2023) uses 256 negatives per positive
    num_negatives: Annotated[int, Field(ge=1, description='shared uniform negatives per step with loss="sampled"')] = 256
    # 0 = uniform (the gSASRec setting); a share drawn from the step's own targets adds the popular items a full ranking
    # competes with (raylurm.losses.next_item.mixed_negatives), log-Q corrected for the mixture
    popular_fraction: Annotated[float, Field(ge=0.0, lt=1.0, description=(
        'with loss="sampled": share of the negatives drawn from the step\'s targets (by popularity), the rest uniform'))] = 0.0
    lr: Annotated[float, Field(gt=0.0, description="Adam learning rate")] = 1e-3  # paper §IV-B
    # per worker: the default 2 workers x 64 = the paper's 128 users per step (§IV-B); 128 per worker halved the
    # optimiser steps per epoch (23 on ML-1M), and with every position trained the epochs, not the targets, are what is short
    batch_size: Annotated[int, Field(ge=1, description="users per step on each worker")] = 64

    @model_validator(mode="after")
    def _rules(self) -> SASRecConfig:
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_dim ({self.hidden_dim})")
        return self


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.num_heads, self.dropout = num_heads, dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, L, D/H) each
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, length, d)))  # (B, L, D)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: causal self-attention + point-wise feed-forward (SASRec §III-B)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, num_heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class SASRecEncoder(nn.Module):
    """Causal self-attention over ``√D·H[x_i] + P[pos_i]``: ``z_i`` depends on ``x_{≤i}`` only (SASRec).

    ``config`` is any method config with ``hidden_dim``, ``num_layers``, ``num_heads`` and
    ``dropout`` (SASRec's and DSS's)."""

    def __init__(self, item_embedding: nn.Embedding, max_length: int, config: SASRecConfig):
        super().__init__()
        d = config.hidden_dim
        self.item_embedding = item_embedding  # shared with the seq2item targets h
        self.position_embedding = nn.Embedding(max_length, d)
        nn.init.xavier_uniform_(self.position_embedding.weight)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(d, config.num_heads, config.dropout) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, items: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """items, positions, valid: (B, L) -> z: (B, L, D); padding rows are zeroed."""
        scale = math.sqrt(self.item_embedding.embedding_dim)
        x = self.item_embedding(items) * scale + self.position_embedding(positions)  # (B, L, D)
        x = self.dropout(x) * valid[..., None]  # (B, L, D)
        for block in self.blocks:
            x = block(x) * valid[..., None]
        return self.ln_f(x) * valid[..., None]  # (B, L, D)


def window(items: torch.Tensor, start: torch.Tensor, length: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Left-aligned ``items[b, start_b : start_b + length_b]`` (reversed if ``reverse``), 0-padded: (B, max length)."""
    width = max(1, int(length.max())) if length.numel() else 1
    j = torch.arange(width, device=items.device)[None, :]  # (1, W)
    offset = (length[:, None] - 1 - j) if reverse else j
    valid = j < length[:, None]
    index = (start[:, None] + offset).clamp(0, items.shape[1] - 1)
    return torch.where(valid, items.gather(1, index), torch.zeros_like(index))  # (B, W)


def latest(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state at each row's last unmasked position (masks are prefixes; an empty row: position 0): (B, L, D) -> (B, D)."""
    last = (mask.sum(dim=1) - 1).clamp(min=0)  # (B,)
    return states[torch.arange(states.shape[0], device=states.device), last]


def random_window(items: torch.Tensor, lengths: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per user a window of ``min(length, size)`` consecutive items at a uniform random start, left-aligned:
    -> (B, ≤ size) items and (B,) window lengths."""
    span = lengths.clamp(max=size)
    start = (torch.rand(lengths.shape, device=items.device) * (lengths - span + 1)).long()
    return window(items, start, span), span


class SASRec(nn.Module):
    name = "sasrec"
    Config = SASRecConfig
    baseline = True  # the field's reference, reported beside the four methods (not one of them)
    # the paper's own loss (§III-E: one sampled negative per position, binary cross-entropy): an ablation row
    paper_loss = {"loss": "bce"}

    training_window = staticmethod(encoded_length_window)  # windows over the whole history (raylurm.train.windows)

    def __init__(self, config: SASRecConfig, info: DataInfo):
        super().__init__()
        self.config, self.num_items = config, info.num_items
        self.max_length = config.max_length or info.max_sequence_length
        if self.max_length < 1 or info.num_items < 1:
            raise ValueError(f"SASRec needs max_length >= 1 and num_items >= 1, got {self.max_length}, {info.num_items}")
        self.item_embedding = nn.Embedding(info.num_items + 1, config.hidden_dim, padding_idx=0)  # row 0 = padding
        nn.init.xavier_uniform_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.encoder = SASRecEncoder(self.item_embedding, self.max_length, config)
        full = config.loss == "full" or (config.loss == "auto" and info.num_items <= config.full_softmax_max_items)
        self.loss = "full" if full else ("bce" if config.loss == "bce" else "sampled")

    @property
    def representation_dim(self) -> int:
        return self.config.hidden_dim

    def states(self, items: torch.Tensor) -> torch.Tensor:
        """Left-aligned sequences (B, L ≤ max_length), 0 = padding -> z (B, L, D); z_t sees x_{≤t} only."""
        valid = items > 0
        positions = torch.arange(items.shape[1], device=items.device).expand_as(items)  # 0 = oldest in the window
        return self.encoder(items, positions, valid)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Next item at every position of a window of ``max_length + 1`` items per user -> {"loss", ...}."""
        items, lengths = batch["items"], batch["lengths"]
        sequence, _ = random_window(items, lengths, self.max_length + 1)  # (B, W + 1): inputs + the last target
        inputs, targets = sequence[:, :-1], sequence[:, 1:]  # (B, W): target of position t is x_{t+1}
        if inputs.shape[1] == 0:  # every user has one item: nothing to predict
            return {"loss": self.item_embedding.weight.sum() * 0.0, "positions": torch.zeros(())}
        trained = targets > 0  # (B, W) positions with a next item
        z = self.states(inputs)[trained]  # (N, D)
        target = targets[trained] - 1  # (N,) 0-based
        catalogue = self.item_embedding.weight[1:]  # (C, D)
        if self.loss == "full":
            losses = catalogue_softmax(z, catalogue, target)
        elif self.loss == "sampled":
            negatives, log_q = mixed_negatives(target, self.num_items, self.config.num_negatives,
                                               self.config.popular_fraction)  # (S,), (C,)
            losses = sampled_softmax_logq(z, catalogue[target], catalogue[negatives], log_q[target], log_q[negatives],
                                          negatives[None, :] == target[:, None])
        else:  # "bce": one uniform negative per position (the paper; a negative equal to the target is redrawn once)
            negative = torch.randint(0, self.num_items, target.shape, device=items.device)
            negative = torch.where(negative == target, (negative + 1) % self.num_items, negative)
            positive_logit, negative_logit = (z * catalogue[target]).sum(-1), (z * catalogue[negative]).sum(-1)
            losses = F.softplus(-positive_logit) + F.softplus(negative_logit)
        return {"loss": losses.mean() if losses.numel() else z.sum() * 0.0, "positions": torch.tensor(float(len(target)))}

    def _history(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The most recent ``max_length`` items, left-aligned: (B, ≤ max_length)."""
        length = batch["lengths"].clamp(max=self.max_length)
        return window(batch["items"], batch["lengths"] - length, length)

    @torch.no_grad()
    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """z after the whole history (its last ``max_length`` items): (B, hidden_dim). Always without dropout."""
        was_training = self.training
        self.eval()
        history = self._history(batch)  # (B, L)
        z = self.states(history)  # (B, L, D)
        self.train(was_training)
        return latest(z, history > 0)  # (B, D)

    @torch.no_grad()
    def score_items(self, batch: dict[str, torch.Tensor], item_ids: torch.Tensor) -> torch.Tensor:
        """Next-item scores ``z_T · E[i]`` for 0-based vocabulary ids (C,) shared or (B, C) per user -> (B, C)."""
        if item_ids.numel() and (item_ids.min() < 0 or item_ids.max() >= self.num_items):
            raise ValueError(f"item_ids must be 0-based vocabulary indices in [0, {self.num_items})")
        z = self.embed(batch)  # (B, D)
        e = self.item_embedding(item_ids + 1)  # (C, D) or (B, C, D)
        return z @ e.T if e.ndim == 2 else torch.einsum("bd,bcd->bc", z, e)
