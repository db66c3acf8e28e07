"""AdaptSSR: pre-training a user model with augmentation-adaptive self-supervised ranking (NeurIPS'23).

Seed ``003``; equations in ``PAPERS.md`` "AdaptSSR". One training step:

1. two explicit augmentations Ŝ_i, S̃_i of every sequence, each drawn from {mask, crop, reorder}
   (:func:`augment`, vectorised on padded tensors, torch's global RNG);
2. each view encoded twice with independent dropout masks (implicit augmentation) -> û_i, û_i⁺,
   ũ_i, ũ_i⁺ (one encoder pass over the 4B stacked sequences: dropout masks are per element);
3. the MPR loss with in-batch hard negatives and the augmentation-adaptive λ_i
   (:mod:`raylurm.losses.mpr`); negatives are the four views of every other user of the global
   batch, gathered with :func:`raylurm.train.distributed.gather_with_grad`.

User model *(code)*: a bidirectional (BERT4Rec-style, post-LN) Transformer over item embeddings
(+ behaviour-type embeddings when the data has several types) + learned positions, padding masked,
then attention pooling with one learned query -> u (dim 64). Sequences longer than the model's
maximum length keep their most recent events.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import torch
import torch.nn as nn
from pydantic import Field, model_validator

from raylurm.config import typed_config
from raylurm.losses.mpr import LAMBDA_MODES, adaptive_lambda, mpr_loss, resolve_lambda
from raylurm.train.batch import DataInfo
from raylurm.train.distributed import gather_with_grad, rank

Augmentation = Literal["mask", "crop", "reorder"]
AUGMENTATIONS = get_args(Augmentation)


@typed_config
class AdaptSSRConfig:
    dim: Annotated[int, Field(ge=1, description="embedding / hidden size")] = 64  # code: emb_dim 64
    num_layers: Annotated[int, Field(ge=1, description="Transformer layers")] = 2  # code: n_layers 2
    num_heads: Annotated[int, Field(ge=1, description="attention heads; must divide dim")] = 2  # code: n_heads 2
    # code: trm_dropout 0.1
    dropout: Annotated[float, Field(
        ge=0.0, lt=1.0, description="Transformer dropout, also the implicit augmentation")] = 0.1
    # code: max_len 150
    max_length: Annotated[int, Field(
        ge=1, description="most recent events kept; capped by DataInfo.max_sequence_length")] = 150
    # paper
    augmentations: Annotated[tuple[Augmentation, ...], Field(
        min_length=1, description="explicit augmentations each view draws from (no repeats)")] = AUGMENTATIONS
    # code: mask_ratio 0.6
    mask_ratio: Annotated[float, Field(gt=0.0, le=1.0, description="fraction of events replaced by [MASK]")] = 0.6
    # code: crop_ratio 0.4
    crop_ratio: Annotated[float, Field(gt=0.0, le=1.0, description="fraction kept by crop, one contiguous piece")] = 0.4
    # code: reorder_ratio 0.6
    reorder_ratio: Annotated[float, Field(gt=0.0, le=1.0, description="length of the shuffled contiguous span")] = 0.6
    # per-sample λ_i (paper); "batch_mean" (code) or "fixed"
    lambda_mode: Annotated[str, Field(description=f"one of {', '.join(LAMBDA_MODES)}")] = "per_sample"
    # the paper's constant-λ ablation; value ours
    fixed_lambda: Annotated[float, Field(ge=0.0, le=1.0, description='λ when lambda_mode == "fixed"')] = 0.5
    # ours
    behavior_embedding: Annotated[bool, Field(
        description="add a behaviour-type embedding when the data has > 1 type")] = True
    lr: Annotated[float, Field(gt=0.0, description="Adam learning rate")] = 2e-4  # code: lr 2e-4
    batch_size: Annotated[int, Field(
        ge=2, description="sequences per step (>= 2: the other users are the negatives)")] = 128  # code: batch_size 128

    @model_validator(mode="after")
    def _rules(self) -> AdaptSSRConfig:
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if len(set(self.augmentations)) < len(self.augmentations):
            raise ValueError(f"augmentations must not repeat, got {self.augmentations}")
        if self.lambda_mode not in LAMBDA_MODES:
            raise ValueError(f"lambda_mode must be one of {LAMBDA_MODES}, got {self.lambda_mode!r}")
        return self


# ---------------------------------------------------------------- explicit augmentations (padded, vectorised)

def _count(lengths: torch.Tensor, ratio: float) -> torch.Tensor:
    """``ceil(ratio · n)``, at least 1 and at most n (0 for an empty sequence), ``(B,)`` int64."""
    c = torch.ceil(lengths.double() * ratio - 1e-9).long()  # tolerance: 0.6 * 5 must give 3, not 4
    return torch.minimum(c.clamp(min=1), lengths)


def _uniform_start(lengths: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """A start uniform in ``[0, n - span]`` per row, ``(B,)`` int64."""
    room = (lengths - span + 1).clamp(min=1).double()
    return (torch.rand(lengths.shape, device=lengths.device, dtype=torch.float64) * room).long()


def crop_index(lengths: torch.Tensor, width: int, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop: keep one contiguous ``ceil(ratio · n)`` events, moved to the front.

    Returns the gather index ``(B, width)`` into the original sequence and the new lengths ``(B,)``.
    """
    span = _count(lengths, ratio)  # (B,)
    start = _uniform_start(lengths, span)  # (B,)
    index = start[:, None] + torch.arange(width, device=lengths.device)  # (B, W)
    return index.clamp(max=width - 1), span


def reorder_index(lengths: torch.Tensor, width: int, ratio: float) -> torch.Tensor:
    """Reorder: shuffle one contiguous span of ``ceil(ratio · n)`` events; gather index ``(B, width)``.

    Positions outside the span keep their integer rank as sort key; inside it they get random keys
    in ``[start, start + span)``, so an argsort permutes the span uniformly and nothing else.
    """
    span = _count(lengths, ratio)[:, None]  # (B, 1)
    start = _uniform_start(lengths, span[:, 0])[:, None]  # (B, 1)
    position = torch.arange(width, device=lengths.device, dtype=torch.float64).expand(len(lengths), width)  # (B, W)
    inside = (position >= start) & (position < start + span)  # (B, W)
    keys = start + torch.rand(position.shape, device=lengths.device, dtype=torch.float64) * span  # (B, W)
    return torch.where(inside, keys, position).argsort(dim=1)


def mask_positions(lengths: torch.Tensor, width: int, ratio: float) -> torch.Tensor:
    """Mask: ``min(ceil(ratio · n), n - 1)`` distinct valid positions, uniformly; ``(B, width)`` bool.

    At least one event stays visible (the public code does the same, and never masks n = 1).
    """
    k = torch.minimum(_count(lengths, ratio), lengths - 1)  # (B,)
    position = torch.arange(width, device=lengths.device)  # (W,)
    scores = torch.rand(len(lengths), width, device=lengths.device)  # (B, W)
    scores = scores.masked_fill(position >= lengths[:, None], 2.0)  # padding sorts last
    order = scores.argsort(dim=1).argsort(dim=1)  # (B, W) rank of each position
    return order < k[:, None]


def _candidate(name: str, lengths: torch.Tensor, width: int, config: AdaptSSRConfig):
    """(gather index (B, W), new lengths (B,), masked (B, W)) of one augmentation for every row."""
    identity = torch.arange(width, device=lengths.device).expand(len(lengths), width)  # (B, W)
    nothing = torch.zeros(len(lengths), width, dtype=torch.bool, device=lengths.device)  # (B, W)
    if name == "mask":
        return identity, lengths, mask_positions(lengths, width, config.mask_ratio)
    if name == "crop":
        return *crop_index(lengths, width, config.crop_ratio), nothing
    return reorder_index(lengths, width, config.reorder_ratio), lengths, nothing


def augment(items: torch.Tensor, behaviors: torch.Tensor, lengths: torch.Tensor, config: AdaptSSRConfig,
            mask_item: int, mask_behavior: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One explicit view per row, its augmentation drawn uniformly from ``config.augmentations``.

    ``items``, ``behaviors``: ``(B, W)`` left-aligned, 0 = padding; ``lengths``: ``(B,)``. A masked
    event gets ``mask_item`` and ``mask_behavior``; padding stays 0. Returns the view's items,
    behaviours and lengths.
    """
    batch, width = items.shape
    candidates = [_candidate(name, lengths, width, config) for name in config.augmentations]
    choice = torch.randint(len(candidates), (batch,), device=items.device)  # (B,)
    rows = torch.arange(batch, device=items.device)
    index, new_lengths, masked = (torch.stack(parts)[choice, rows] for parts in zip(*candidates))
    keep = torch.arange(width, device=items.device) < new_lengths[:, None]  # (B, W)
    view_items = items.gather(1, index).masked_fill(masked, mask_item) * keep  # (B, W)
    view_behaviors = behaviors.gather(1, index).masked_fill(masked, mask_behavior) * keep  # (B, W)
    return view_items, view_behaviors, new_lengths


def most_recent(sequences: list[torch.Tensor], lengths: torch.Tensor, max_length: int):
    """Keep each row's last ``max_length`` events (still left-aligned); returns (sequences, lengths)."""
    width = sequences[0].shape[1]
    if width <= max_length:
        return sequences, lengths
    start = (lengths - max_length).clamp(min=0)  # (B,)
    index = start[:, None] + torch.arange(max_length, device=lengths.device)  # (B, max_length)
    return [s.gather(1, index) for s in sequences], lengths.clamp(max=max_length)


# ---------------------------------------------------------------- user model

class AttentionPooling(nn.Module):
    """``u = Σ_t softmax_t(h_t · q) h_t`` over the valid positions, one learned query q *(code)*."""

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        scores = (hidden @ self.query).masked_fill(padding, float("-inf"))  # (B, T)
        return torch.einsum("bt,btd->bd", scores.softmax(dim=1), hidden)  # (B, D)


class UserEncoder(nn.Module):
    """Bidirectional Transformer + attention pooling: padded sequences ``(B, T)`` -> u ``(B, D)``."""

    def __init__(self, config: AdaptSSRConfig, num_items: int, num_behaviors: int, max_length: int):
        super().__init__()
        self.items = nn.Embedding(num_items + 2, config.dim, padding_idx=0)  # 0 pad, 1..n items, n+1 [MASK]
        self.behaviors = nn.Embedding(num_behaviors + 2, config.dim, padding_idx=0) if num_behaviors else None
        self.positions = nn.Embedding(max_length, config.dim)
        self.norm = nn.LayerNorm(config.dim)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(config.dim, config.num_heads, 4 * config.dim, config.dropout,
                                           activation="gelu", batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.pooling = AttentionPooling(config.dim)

    def forward(self, items: torch.Tensor, behaviors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        width = items.shape[1]
        position = torch.arange(width, device=items.device)  # (T,)
        x = self.items(items) + self.positions(position)  # (B, T, D)
        if self.behaviors is not None:
            x = x + self.behaviors(behaviors)  # (B, T, D)
        padding = position >= lengths.clamp(min=1)[:, None]  # (B, T); an empty history sees one pad token
        hidden = self.transformer(self.dropout(self.norm(x)), src_key_padding_mask=padding)  # (B, T, D)
        return self.pooling(hidden, padding)  # (B, D)


class AdaptSSR(nn.Module):
    """AdaptSSR pre-training (MPR loss with augmentation-adaptive λ) around :class:`UserEncoder`."""

    name = "adaptssr"
    Config = AdaptSSRConfig

    def __init__(self, config: AdaptSSRConfig, info: DataInfo):
        super().__init__()
        self.config = config
        self.max_length = min(config.max_length, info.max_sequence_length)
        self.num_behaviors = info.num_behaviors if config.behavior_embedding and info.num_behaviors > 1 else 0
        self.mask_item, self.mask_behavior = info.num_items + 1, info.num_behaviors + 1
        self.encoder = UserEncoder(config, info.num_items, self.num_behaviors, self.max_length)
        self.apply(_init_weights)

    @property
    def representation_dim(self) -> int:
        return self.config.dim

    def _inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's raw sequences, cut to the most recent ``max_length`` events."""
        behaviors = batch.get("behaviors", torch.zeros_like(batch["items"]))
        (items, behaviors), lengths = most_recent([batch["items"], behaviors], batch["lengths"], self.max_length)
        return items, behaviors, lengths

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training step: ``{"loss": L, "lambda": mean λ used, "lambda_adaptive": mean λ_i}``."""
        items, behaviors, lengths = self._inputs(batch)
        views = [augment(items, behaviors, lengths, self.config, self.mask_item, self.mask_behavior)
                 for _ in range(2)]  # Ŝ, S̃: each (items (B, T), behaviors (B, T), lengths (B,))
        stacked = [torch.cat([h, h, t, t]) for h, t in zip(*views)]  # Ŝ, Ŝ, S̃, S̃: (4B, T), (4B, T), (4B,)
        u = self.encoder(*stacked)  # (4B, D); independent dropout masks per copy
        hat, hat_pos, tilde, tilde_pos = u.chunk(4)  # (B, D) each; û, û⁺, ũ, ũ⁺
        own = torch.arange(len(hat), device=u.device) + rank() * len(hat)  # rows of this worker's users
        lam_i = adaptive_lambda(hat, hat_pos, tilde, tilde_pos)  # (B,) detached
        lam = resolve_lambda(gather_with_grad(lam_i), self.config.lambda_mode, self.config.fixed_lambda)[own]
        negatives = gather_with_grad(torch.stack([hat, hat_pos, tilde, tilde_pos], dim=1))  # (N, 4, D)
        loss = mpr_loss(hat, hat_pos, tilde, tilde_pos, lam, negatives, own)
        return {"loss": loss, "lambda": lam.mean(), "lambda_adaptive": lam_i.mean()}

    @torch.no_grad()
    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """u of the un-augmented sequence (last ``max_length`` events), dropout off: ``(B, dim)``."""
        was_training = self.training
        self.eval()
        try:
            return self.encoder(*self._inputs(batch))
        finally:
            self.train(was_training)


def _init_weights(module: nn.Module) -> None:
    """N(0, 0.02) linear and embedding weights, zero biases and padding rows (BERT, as the code)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        nn.init.zeros_(module.weight[module.padding_idx])
