"""DSS: disentangled self-supervision for sequential recommenders (Ma et al., KDD'20, §4.2).

A SASRec encoder (causal self-attention over item embeddings + learned positions) gives ``z_i`` per
position; an intention-disentanglement layer (§4.2.3) turns ``z_{1:t}`` into K intention vectors
``φ^(k)``. Each training step samples one cut ``1 ≤ t < T`` per user and minimises seq2item
(eq. 5-6: predict ``h_{t+1}``) plus latent seq2seq (eq. 3: predict ``φ^(k)`` of the REVERSED future
``x_{T:t+1}``) on the λ fraction of (u, t, k) with the smallest seq2seq loss (eq. 4).

Layout: the batch contract's ``items`` (B, L) are left-aligned, ids + 1, 0 = padding. Positions are
counted from the most recent item (0 = latest), as SASRec's left-padded fixed-width input does, so
a sequence's encoding never depends on the batch width. With left-aligned items, causal attention
never lets a real position see padding.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from raylurm.config import typed_config
from raylurm.losses.dss import select_smallest, seq2item_losses, seq2seq_losses
from raylurm.methods.sasrec import SASRecEncoder, window
from raylurm.train.batch import DataInfo
from raylurm.train.distributed import gather_with_grad, rank


@typed_config
class DSSConfig:
    # (code) 64, paper searches {50, 64, 100, 128}
    hidden_dim: Annotated[int, Field(ge=1, description="D, the width of the item embeddings and of every block")] = 64
    num_layers: Annotated[int, Field(ge=1, description="SASRec self-attention blocks")] = 2  # (code) 2
    # paper §5.4: the single-head SASRec
    num_heads: Annotated[int, Field(ge=1, description="attention heads; must divide hidden_dim")] = 1
    # SASRec's ML-1M value; the paper tunes it by random search
    dropout: Annotated[float, Field(ge=0.0, lt=1.0, description="dropout in the embeddings and every block")] = 0.2
    num_intentions: Annotated[int, Field(ge=1, description="K latent intentions")] = 4  # (code) 4, paper {1, 2, 4, 8}
    selection_fraction: Annotated[float, Field(ge=0.0, le=1.0, description=(
        "λ, share of (u, t, k) seq2seq terms kept (eq. 4); 0 = seq2item only"))] = 0.5  # (code) 0.5
    seq2seq_weight: Annotated[float, Field(ge=0.0, description=(
        "weight of the MEAN selected seq2seq term (the paper's sum/sum ratio is λ·K)"))] = 1.0
    max_length: Annotated[int | None, Field(ge=1, description=(
        "positions encoded (default: info.max_sequence_length)"))] = None  # paper: 200 ML, 50 Amazon
    lr: Annotated[float, Field(gt=0.0, description="Adam learning rate")] = 1e-3  # paper §5.4
    batch_size: Annotated[int, Field(ge=1, description="users per step")] = 128  # paper §5.4

    @model_validator(mode="after")
    def _rules(self) -> DSSConfig:
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_dim ({self.hidden_dim})")
        return self


class IntentionDisentanglement(nn.Module):
    """The intention-disentanglement layer (§4.2.3): ``z_{1:t}`` (B, L, D) -> ``φ^(1..K)`` (B, K, D)."""

    def __init__(self, max_length: int, config: DSSConfig):
        super().__init__()
        d, k = config.hidden_dim, config.num_intentions
        self.prototypes = nn.Parameter(torch.empty(k, d))  # c_k
        self.position_embedding = nn.Embedding(max_length, d)  # α_i, this layer's own
        nn.init.xavier_uniform_(self.prototypes)
        nn.init.xavier_uniform_(self.position_embedding.weight)
        self.ln_1, self.ln_2, self.ln_3, self.ln_4, self.ln_5 = (nn.LayerNorm(d) for _ in range(5))
        self.key_transform = nn.Linear(d, d)  # Wᵀ·, b
        self.query_bias = nn.Parameter(torch.zeros(d))  # b'
        self.input_bias = nn.Parameter(0.02 * torch.randn(k, d))  # β_k for input sequences x_{1:t}
        self.future_bias = nn.Parameter(0.02 * torch.randn(k, d))  # β_k for reversed futures x_{T:t+1}

    def category_weights(self, z: torch.Tensor) -> torch.Tensor:
        """p_{k|i} = softmax_k(LN1(z_i)·LN2(c_k)/√D): (B, L, D) -> (B, L, K)."""
        return torch.softmax(self.ln_1(z) @ self.ln_2(self.prototypes).T / math.sqrt(z.shape[-1]), dim=-1)

    def position_weights(self, z: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """p_i = softmax_i(key_i·query/√D), 0 on padding: (B, L, D) -> (B, L).

        key_i = k̃_i + ReLU(Wᵀk̃_i + b), k̃_i = LN3(α_i + z_i); query = LN4(α_t + z_t + b'), t = the latest item.
        """
        alpha = self.position_embedding(positions)  # (B, L, D)
        key = self.ln_3(alpha + z)
        key = key + F.relu(self.key_transform(key))  # (B, L, D)
        last = valid.sum(dim=1) - 1  # (B,) column of x_t
        rows = torch.arange(z.shape[0], device=z.device)
        query = self.ln_4(alpha[rows, last] + z[rows, last] + self.query_bias)  # (B, D)
        logits = torch.einsum("bld,bd->bl", key, query) / math.sqrt(z.shape[-1])
        return torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=1)  # (B, L)

    def forward(self, z: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                future: bool = False) -> torch.Tensor:
        """φ^(k) = LN5(β_k + Σ_i p_{k|i} p_i z_i): (B, L, D) -> (B, K, D); β = the future set if ``future``."""
        weights = self.category_weights(z) * self.position_weights(z, positions, valid)[..., None]  # (B, L, K)
        bias = self.future_bias if future else self.input_bias
        return self.ln_5(bias + torch.einsum("blk,bld->bkd", weights, z))  # (B, K, D)


def sample_cuts(lengths: torch.Tensor) -> torch.Tensor:
    """One cut per user, uniform on 1 ≤ t ≤ T - 1 (t = 1 for users with T < 2, who have no sample)."""
    return (torch.rand(lengths.shape, device=lengths.device) * (lengths - 1).clamp(min=1)).long() + 1


class DSS(nn.Module):
    name = "dss"
    Config = DSSConfig

    def __init__(self, config: DSSConfig, info: DataInfo):
        super().__init__()
        self.config = config
        self.max_length = config.max_length or info.max_sequence_length
        if self.max_length < 1 or info.num_items < 1:
            raise ValueError(f"DSS needs max_length >= 1 and num_items >= 1, got {self.max_length}, {info.num_items}")
        self.item_embedding = nn.Embedding(info.num_items + 1, config.hidden_dim, padding_idx=0)  # H (row 0 = padding)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.encoder = SASRecEncoder(self.item_embedding, self.max_length, config)
        self.disentangle = IntentionDisentanglement(self.max_length, config)

    @property
    def representation_dim(self) -> int:
        return self.config.num_intentions * self.config.hidden_dim

    def intentions(self, items: torch.Tensor, future: bool = False) -> torch.Tensor:
        """Left-aligned sequences (B, L), 0 = padding, at most ``max_length`` long -> φ (B, K, D)."""
        valid = items > 0
        length = valid.sum(dim=1, keepdim=True).clamp(min=1)  # an empty row encodes one padding token
        valid = valid | (torch.arange(items.shape[1], device=items.device) < length)
        positions = (length - 1 - torch.arange(items.shape[1], device=items.device)).clamp(min=0)  # 0 = latest
        z = self.encoder(items, positions, valid)  # (B, L, D)
        return self.disentangle(z, positions, valid, future=future)

    def _history(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The whole available history: the most recent ``max_length`` items, (B, ≤ max_length)."""
        length = batch["lengths"].clamp(max=self.max_length)
        return window(batch["items"], batch["lengths"] - length, length)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One random cut per user; loss = mean seq2item + seq2seq_weight · mean of the kept seq2seq terms.

        Users with fewer than 2 items have no (u, t) sample: they are neither anchors nor candidates.
        Candidates (next items, futures) are gathered from every worker; the selection of eq. 4 is
        made among this worker's (u, t, k).
        """
        items, lengths = batch["items"], batch["lengths"]
        cut = sample_cuts(lengths)  # (B,) t
        valid = lengths >= 2  # (B,)
        input_length = cut.clamp(max=self.max_length)
        phi = self.intentions(window(items, cut - input_length, input_length))  # (B, K, D) φ(x_{1:t})
        candidate_mask = gather_with_grad(valid.float()) > 0  # (N,)
        targets = rank() * items.shape[0] + torch.arange(items.shape[0], device=items.device)  # (B,) own rows
        next_items = torch.where(valid, items.gather(1, cut[:, None].clamp(max=items.shape[1] - 1))[:, 0], 0)
        h = gather_with_grad(self.item_embedding(next_items))  # (N, D) h_{t'+1}
        seq2item = seq2item_losses(phi[valid], h, targets[valid], candidate_mask).sum() / valid.sum().clamp(min=1)
        out = {"seq2item": seq2item.detach()}
        seq2seq = torch.zeros((), device=items.device)
        if self.config.selection_fraction > 0:
            future_length = (lengths - cut).clamp(min=0, max=self.max_length)
            future = window(items, cut, future_length, reverse=True)  # x_{T:t+1}, x_{t+1} last
            phi_future = gather_with_grad(self.intentions(future, future=True))  # (N, K, D)
            losses = seq2seq_losses(phi[valid], phi_future, targets[valid], candidate_mask)  # (B', K)
            keep = select_smallest(losses, self.config.selection_fraction)  # ⌊λ·B'·K⌋ smallest
            seq2seq = losses[keep].sum() / keep.sum().clamp(min=1)
            out.update(seq2seq_all=losses.detach().mean() if losses.numel() else seq2seq.detach(),
                       seq2seq_kept=keep.sum().float())
        out["seq2seq"] = seq2seq.detach()
        out["loss"] = seq2item + self.config.seq2seq_weight * seq2seq
        return out

    @torch.no_grad()
    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[φ^(1) … φ^(K)] of the whole history with the input β set: (B, K·D). Always without dropout."""
        was_training = self.training
        self.eval()
        phi = self.intentions(self._history(batch))  # (B, K, D)
        self.train(was_training)
        return phi.flatten(1)

    @torch.no_grad()
    def score_items(self, batch: dict[str, torch.Tensor], item_ids: torch.Tensor) -> torch.Tensor:
        """Next-item scores ``max_k h_j·φ^(k)`` (the seq2item numerator, without 1/√D).

        item_ids: 0-based vocabulary indices, ``(C,)`` shared or ``(B, C)`` per user -> (B, C).
        """
        phi = self.embed(batch).view(-1, self.config.num_intentions, self.config.hidden_dim)  # (B, K, D)
        h = self.item_embedding(item_ids + 1)  # (C, D) or (B, C, D)
        if h.ndim == 2:
            return torch.einsum("bkd,cd->bck", phi, h).amax(dim=-1)
        return torch.einsum("bkd,bcd->bck", phi, h).amax(dim=-1)  # (B, C)
