"""DSS: disentangled self-supervision for sequential recommenders (Ma et al., KDD'20, §4.2).

A SASRec encoder (causal self-attention over item embeddings + learned positions) gives ``z_i`` per
position; an intention-disentanglement layer (§4.2.3) turns ``z_{1:t}`` into K intention vectors
``φ^(k)``. The loss is seq2item (eq. 5-6: predict ``h_{t+1}`` from ``φ(x_{1:t})``) plus latent
seq2seq (eq. 3: predict ``φ^(k)`` of the REVERSED future ``x_{T:t+1}``) on the λ fraction of
(u, t, k) with the smallest seq2seq loss (eq. 4).

**Objective** (``DSSConfig.objective``). The paper samples ONE cut t per user per step, with the
other users' next items as the seq2item candidates (``"one_cut"`` + ``seq2item_candidates=
"in_batch"``): ~6k targets per ML-1M epoch, and in-batch candidates without a log-Q correction
teach popularity (rare items are almost never negatives). The default ``"all_positions"`` trains
seq2item at **every** t of a window of ``max_length + 1`` items in one pass — causal intention
pooling (each query t pools over i ≤ t, window-absolute positions) gives ``φ(x_{1:t})`` for every
t at once — against the whole catalogue (``seq2item_candidates="catalogue"``, the paper's eq. 5-6
with all items in the denominator, chunked), and the seq2seq term at ``cuts_per_user`` cuts per
user, the reversed window encoded once (its prefix of length T − t is ``x_{T:t+1}``), λ-selection
over every (u, t, k) of the batch. The paper's setting stays available (and is the ablation row).

Layout: the batch contract's ``items`` (B, L) are left-aligned, ids + 1, 0 = padding. Positions:
``"window"`` counts from the first item of the encoded window (0 = oldest), so the state at t of
one pass equals that of the prefix encoded alone; ``"from_latest"`` (0 = the latest item, as
SASRec's left-padded input; what checkpoints written before ``positions`` existed use) only with
``objective="one_cut"``. With left-aligned items, causal attention never lets a real position see
padding.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from raylurm.config import typed_config
from raylurm.losses.dss import catalogue_seq2item_losses, select_smallest, seq2item_losses, seq2seq_losses
from raylurm.methods.sasrec import SASRecEncoder, latest, random_window, window
from raylurm.train.batch import DataInfo
from raylurm.train.distributed import gather_with_grad, rank
from raylurm.train.windows import encoded_length_window


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
    # a choice, measured: on a 1,000-item successor task (150 steps, unit temperature) next-item top-1 after
    # training was 0.34 / 0.33 / 0.22 / 0.06 with weights 0 / 0.1 / 0.3 / 1 — the seq2seq term at full weight
    # drowns seq2item; 1.0 (our earlier default; the paper's sum/sum ratio is λ·K) is in paper_loss
    seq2seq_weight: Annotated[float, Field(ge=0.0, description=(
        "weight of the MEAN selected seq2seq term (the paper's sum/sum ratio is λ·K)"))] = 0.1
    # a choice, measured: φ is LayerNorm'd (|φ| ≈ √D), so the paper's 1/√D bounds the logits by |h| and on the
    # task above seq2item stalled (loss 8.25 -> 8.19 in 150 steps, top-1 0.02; sasrec 6.28 -> 3.87, 0.28);
    # "unit" (h·φ, the scorer's own scores) learns (top-1 0.34). "sqrt_d" (eq. 5-6) is in paper_loss
    seq2item_temperature: Annotated[Literal["unit", "sqrt_d"], Field(description=(
        'seq2item logits: "unit" h·φ; "sqrt_d" h·φ/√D as eq. 5-6'))] = "unit"
    # a choice, measured ("pairs" = eq. 6, in paper_loss): eq. 5-6 normalise over every (item, intention) pair while
    # the numerator and the ranking take each item's best intention, so the K-1 other intentions' scores of the target
    # are pushed down like a negative's. "items" is the cross-entropy of the ranking's own score max_k h_j·φ^(k). On
    # the ML-1M split, validation NDCG@10 after epochs 1-4: items 0.019, 0.038, 0.080, 0.103; pairs 0.018, 0.024,
    # 0.042, 0.066; the sasrec baseline 0.021, 0.044, 0.082, 0.105
    seq2item_normaliser: Annotated[Literal["pairs", "items"], Field(description=(
        'seq2item denominator: "pairs" Σ_j Σ_k exp(h_j·φ^(k)) (eq. 6); "items" Σ_j max_k exp(h_j·φ^(k))'))] = "items"
    max_length: Annotated[int | None, Field(ge=1, description=(
        "positions encoded (default: info.max_sequence_length)"))] = None  # paper: 200 ML, 50 Amazon
    # a choice (the module docstring): every position trains; "one_cut" is the paper's sampling
    objective: Annotated[Literal["all_positions", "one_cut"], Field(description=(
        '"all_positions": seq2item at every t of a window, seq2seq at cuts_per_user cuts; "one_cut": one random cut per user'))] = "all_positions"
    # a choice: the catalogue in the denominator of eq. 6; "in_batch" is the paper's (needs objective="one_cut")
    seq2item_candidates: Annotated[Literal["catalogue", "in_batch"], Field(description=(
        'seq2item denominator: "catalogue" = every item; "in_batch" = the other samples\' next items (the paper)'))] = "catalogue"
    cuts_per_user: Annotated[int, Field(ge=1, description=(
        'seq2seq cuts per user per step with objective="all_positions"'))] = 4  # a choice: 4 x 128 futures per worker
    positions: Annotated[Literal["window", "from_latest"], Field(description=(
        '"window": 0 = the oldest encoded item; "from_latest": 0 = the latest (needs objective="one_cut")'))] = "window"
    # a choice (False = the paper, in paper_loss): the first ML-1M run without it stopped at validation NDCG@10
    # 0.173 (sasrec 0.187); its intentions collapsed (one takes 0.75 of p_{k|i} for every item) and its pooling
    # put 0.22 of its weight on the latest item, where sasrec predicts from z_t alone. Adding z_t to every
    # φ^(k) gives seq2item that path; 2-epoch runs on the split: 0.0198, 0.0237 with it, 0.0158, 0.0199 without
    latest_state: Annotated[bool, Field(description=(
        "add z_t, the encoder's state at the prefix's latest item, to every intention φ^(k) (a residual path)"))] = True
    lr: Annotated[float, Field(gt=0.0, description="Adam learning rate")] = 1e-3  # paper §5.4
    # per worker: the default 2 workers x 64 = the paper's 128 (§5.4), the same steps per epoch as the sasrec baseline
    batch_size: Annotated[int, Field(ge=1, description="users per step on each worker")] = 64

    @model_validator(mode="after")
    def _rules(self) -> DSSConfig:
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_dim ({self.hidden_dim})")
        if self.objective == "all_positions" and (self.seq2item_candidates == "in_batch" or self.positions == "from_latest"):
            raise ValueError('objective="all_positions" needs seq2item_candidates="catalogue" and positions="window" '
                             '(in-batch candidates and positions from the latest item are the paper\'s one-cut setting)')
        return self


class IntentionDisentanglement(nn.Module):
    """The intention-disentanglement layer (§4.2.3): ``z_{1:t}`` (B, L, D) -> ``φ^(1..K)`` (B, K, D)."""

    def __init__(self, max_length: int, config: DSSConfig):
        super().__init__()
        d, k = config.hidden_dim, config.num_intentions
        self.latest_state = config.latest_state
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

    def every_prefix(self, z: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                     future: bool = False, rows: torch.Tensor | None = None) -> torch.Tensor:
        """φ^(k)(z_{1:t}) for every t in one pass — causal pooling, each query t over i ≤ t: (B, L, D) -> (B, L, K, D).

        Row t equals :meth:`forward` of the prefix ``z_{1:t}`` (its query is x_t, the latest item
        of that prefix); rows at padding positions are meaningless and must be ignored. ``rows`` (B, C):
        only the prefixes ending at these columns -> (B, C, K, D), the same values as those rows of the
        full result at C/L of the pooling's cost (the seq2seq futures need a few prefixes per user)."""
        alpha = self.position_embedding(positions)  # (B, L, D)
        key = self.ln_3(alpha + z)
        key = key + F.relu(self.key_transform(key))  # (B, L, D)
        query = alpha + z + self.query_bias  # (B, L, D): the query of the prefix ending at t, before LN4
        length = z.shape[1]
        steps = torch.arange(length, device=z.device)
        if rows is None:
            causal = (steps[None, :] <= steps[:, None])[None]  # (1, L, L) i <= t
        else:
            query = query.gather(1, rows[..., None].expand(-1, -1, query.shape[-1]))  # (B, C, D)
            causal = steps[None, None, :] <= rows[..., None]  # (B, C, L)
        logits = torch.einsum("btd,bid->bti", self.ln_4(query), key) / math.sqrt(z.shape[-1])  # (B, T, L_i)
        allowed = causal & valid[:, None, :]  # (B, T, L)
        allowed = allowed | ~allowed.any(dim=-1, keepdim=True)  # padding rows: anything finite
        p = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)  # (B, T, L_i) p_i per query t
        values = self.category_weights(z)[..., None] * z[:, :, None, :]  # (B, L_i, K, D) p_{k|i} z_i
        pooled = torch.bmm(p, values.flatten(2)).view(z.shape[0], p.shape[1], -1, z.shape[-1])  # (B, T, K, D)
        bias = self.future_bias if future else self.input_bias
        phi = self.ln_5(bias + pooled)  # (B, T, K, D)
        if self.latest_state:  # + z_t of each prefix's latest item
            phi = phi + (z if rows is None else z.gather(1, rows[..., None].expand(-1, -1, z.shape[-1])))[:, :, None, :]
        return phi

    def forward(self, z: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                future: bool = False) -> torch.Tensor:
        """φ^(k) = LN5(β_k + Σ_i p_{k|i} p_i z_i) (+ z_t with ``latest_state``): (B, L, D) -> (B, K, D); β = the future set if ``future``."""
        weights = self.category_weights(z) * self.position_weights(z, positions, valid)[..., None]  # (B, L, K)
        bias = self.future_bias if future else self.input_bias
        phi = self.ln_5(bias + torch.einsum("blk,bld->bkd", weights, z))  # (B, K, D)
        if self.latest_state:  # + z_t of the latest item
            phi = phi + latest(z, valid)[:, None, :]
        return phi


def sample_cuts(lengths: torch.Tensor) -> torch.Tensor:
    """One cut per user, uniform on 1 ≤ t ≤ T - 1 (t = 1 for users with T < 2, who have no sample)."""
    return (torch.rand(lengths.shape, device=lengths.device) * (lengths - 1).clamp(min=1)).long() + 1


class DSS(nn.Module):
    name = "dss"
    Config = DSSConfig
    # the paper's training (§4.2: one cut per user, in-batch seq2item candidates, positions from the latest): an ablation row
    paper_loss = {"objective": "one_cut", "seq2item_candidates": "in_batch", "positions": "from_latest",
                  "seq2item_temperature": "sqrt_d", "seq2seq_weight": 1.0, "latest_state": False,
                  "seq2item_normaliser": "pairs"}

    # checkpoints written before these options existed were trained with the paper's loss
    # (raylurm.train.checkpoint.build_model fills the options they lack from here)
    legacy_options = paper_loss

    @property
    def _seq2item_scale(self) -> float:
        return 1.0 if self.config.seq2item_temperature == "unit" else 1.0 / math.sqrt(self.config.hidden_dim)

    training_window = staticmethod(encoded_length_window)  # windows over the whole history (raylurm.train.windows)

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

    def _encode(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-aligned sequences (B, L ≤ max_length), 0 = padding -> z (B, L, D), positions, valid (B, L)."""
        valid = items > 0
        length = valid.sum(dim=1, keepdim=True).clamp(min=1)  # an empty row encodes one padding token
        valid = valid | (torch.arange(items.shape[1], device=items.device) < length)
        steps = torch.arange(items.shape[1], device=items.device)
        if self.config.positions == "window":
            positions = steps.expand_as(items)  # 0 = the oldest encoded item
        else:
            positions = (length - 1 - steps).clamp(min=0)  # 0 = latest
        return self.encoder(items, positions, valid), positions, valid

    def intentions(self, items: torch.Tensor, future: bool = False) -> torch.Tensor:
        """Left-aligned sequences (B, L), 0 = padding, at most ``max_length`` long -> φ (B, K, D)."""
        z, positions, valid = self._encode(items)
        return self.disentangle(z, positions, valid, future=future)

    def every_prefix(self, items: torch.Tensor, future: bool = False, rows: torch.Tensor | None = None) -> torch.Tensor:
        """φ(x_{1:t}) of every prefix in one pass: (B, L) -> (B, L, K, D) (row t: the prefix ending at item t);
        with ``rows`` (B, C) only the prefixes ending at those columns, (B, C, K, D)."""
        z, positions, valid = self._encode(items)
        return self.disentangle.every_prefix(z, positions, valid, future=future, rows=rows)

    def _history(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The whole available history: the most recent ``max_length`` items, (B, ≤ max_length)."""
        length = batch["lengths"].clamp(max=self.max_length)
        return window(batch["items"], batch["lengths"] - length, length)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss = mean seq2item + seq2seq_weight · mean of the kept seq2seq terms (see the module docstring)."""
        if self.config.objective == "all_positions":
            return self._all_positions(batch)
        return self._one_cut(batch)

    def _all_positions(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Seq2item at every position of a random window per user, seq2seq at ``cuts_per_user`` cuts."""
        items, lengths = batch["items"], batch["lengths"]
        sequence, span = random_window(items, lengths, self.max_length + 1)  # (B, W + 1) x_1 … x_T of the window
        inputs, targets = sequence[:, :-1], sequence[:, 1:]  # position t predicts x_{t+1}
        if inputs.shape[1] == 0:  # every user has a single item: nothing to predict
            zero = self.item_embedding.weight.sum() * 0.0
            return {"loss": zero, "seq2item": zero.detach(), "seq2seq": zero.detach()}
        trained = targets > 0  # (B, W)
        phi = self.every_prefix(inputs)  # (B, W, K, D) φ(x_{1:t})
        seq2item = catalogue_seq2item_losses(phi[trained], self.item_embedding.weight[1:], targets[trained] - 1,
                                             scale=self._seq2item_scale, over=self.config.seq2item_normaliser)
        seq2item = seq2item.mean() if seq2item.numel() else phi.sum() * 0.0
        out = {"seq2item": seq2item.detach(), "positions": trained.sum().float()}
        seq2seq = torch.zeros((), device=items.device)
        if self.config.selection_fraction > 0:
            valid = span >= 2  # users with a cut 1 ≤ t ≤ T - 1
            # x_T … x_2: every future x_{T:t+1} of a cut t >= 1 is one of its prefixes (x_1 is never a future),
            # and at most max_length long, as its position embeddings
            reversed_window = window(sequence, torch.ones_like(span), (span - 1).clamp(min=0), reverse=True)
            cuts = torch.stack([sample_cuts(span) for _ in range(self.config.cuts_per_user)], dim=1)  # (B, C) t
            rows = torch.arange(len(span), device=items.device)[:, None].expand_as(cuts)  # (B, C)
            inputs_phi = phi[rows, (cuts - 1).clamp(max=phi.shape[1] - 1)]  # (B, C, K, D) φ(x_{1:t})
            # row m of the reversed window's prefixes is φ(x_{T:T-m}); only the cuts' futures are pooled
            future_rows = (span[:, None] - cuts - 1).clamp(min=0)  # ≤ span - 2 < the reversed window's width
            futures = self.every_prefix(reversed_window, future=True, rows=future_rows)  # (B, C, K, D) φ(x_{T:t+1})
            sample = valid[:, None].expand_as(cuts).reshape(-1)  # (B·C,)
            candidates = gather_with_grad(futures.flatten(0, 1))  # (N, K, D) every worker's futures
            candidate_mask = gather_with_grad(sample.float()) > 0  # (N,)
            own = rank() * sample.numel() + torch.arange(sample.numel(), device=items.device)  # (B·C,)
            seq2seq = self._selected(seq2seq_losses(inputs_phi.flatten(0, 1)[sample], candidates, own[sample], candidate_mask), out)
        return self._total(seq2item, seq2seq, out)

    def _selected(self, losses: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 4: the mean of the ⌊λ·M⌋ smallest seq2seq losses; their statistics go into ``out``."""
        keep = select_smallest(losses, self.config.selection_fraction)
        seq2seq = losses[keep].sum() / keep.sum().clamp(min=1)
        out.update(seq2seq_all=losses.detach().mean() if losses.numel() else seq2seq.detach(), seq2seq_kept=keep.sum().float())
        return seq2seq

    def _total(self, seq2item: torch.Tensor, seq2seq: torch.Tensor, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out.update(seq2seq=seq2seq.detach(), loss=seq2item + self.config.seq2seq_weight * seq2seq)
        return out

    def _one_cut(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The paper's sampling: one random cut per user.

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
        if self.config.seq2item_candidates == "catalogue":
            seq2item = catalogue_seq2item_losses(phi[valid], self.item_embedding.weight[1:], next_items[valid] - 1,
                                                 scale=self._seq2item_scale, over=self.config.seq2item_normaliser)
            seq2item = seq2item.sum() / valid.sum().clamp(min=1)
        else:
            h = gather_with_grad(self.item_embedding(next_items))  # (N, D) h_{t'+1}
            seq2item = seq2item_losses(phi[valid], h, targets[valid], candidate_mask, scale=self._seq2item_scale,
                                       over=self.config.seq2item_normaliser).sum() / valid.sum().clamp(min=1)
        out = {"seq2item": seq2item.detach()}
        seq2seq = torch.zeros((), device=items.device)
        if self.config.selection_fraction > 0:
            future_length = (lengths - cut).clamp(min=0, max=self.max_length)
            future = window(items, cut, future_length, reverse=True)  # x_{T:t+1}, x_{t+1} last
            phi_future = gather_with_grad(self.intentions(future, future=True))  # (N, K, D)
            seq2seq = self._selected(seq2seq_losses(phi[valid], phi_future, targets[valid], candidate_mask), out)  # (B', K)
        return self._total(seq2item, seq2seq, out)

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
