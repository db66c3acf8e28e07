"""ATRank: attention over heterogeneous behaviours, pretrained by next-behaviour prediction (seed 001).

Sections of the source article (Zhou et al., "ATRank: An Attention-Based User Behavior Modeling Framework for Recommendation", AAAI 2018, which gives the ideas but no numbered equations):
§1 *Behavior grouping*, §2 *Semantic space mapping*, §3 *Self-attention layer*, §4 *Target network*.
Sizes marked *(code)* come from PAPERS.md's facts about the authors' public implementation.

Pipeline for one user with events ``(item x_l, behaviour a_l, time t_l)``, l = 1..n:

1. §1 behaviour encoding ``e_l = [E_item x_l ; E_cat cat(x_l)] + E_time bucket(T - t_l) + E_act a_l``
   (the article: "custom target code + lookup(discretised time) + lookup(action type)"), with
   ``T`` the prediction time = the last timestamp of the input sequence — or, with the default
   one-pass objective, ``bucket(t_l - t_{l-1})``, the time since the previous event (see ``ATRank``).
2. §1 one projection per behaviour group ``h_l = W_{g(a_l)} e_l + b_{g(a_l)}`` into the shared space.
3. §2–3 multi-space self-attention: ``S_k = h W_k`` for K spaces, attention inside each space,
   spaces concatenated, then a feed-forward layer; residual + LayerNorm as in a Transformer block
   (causal with the default one-pass objective, bidirectional as the paper with ``objective="cuts"``).
4. §4 vanilla attention with the candidate item ``c = W_c [E_item i ; E_cat cat(i)]`` as the query
   over the encoded behaviours gives ``u(i)``; ``logit(i) = b_i + ⟨u(i), c⟩`` *(code)*.
"""

from __future__ import annotations

import contextlib
import math
from typing import Annotated, Iterator, Literal, get_args

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from raylurm.config import typed_config
from raylurm.losses.sampled_sigmoid import sampled_sigmoid
from raylurm.losses.next_item import catalogue_softmax, mixed_negatives
from raylurm.losses.sampled_softmax import sampled_softmax
from raylurm.methods.sasrec import latest
from raylurm.train.batch import DataInfo
from raylurm.train.distributed import gather_with_grad

TIME_THRESHOLDS_DAYS = tuple(2**k for k in range(1, 13))  # 2, 4, ..., 4096 days (code) -> 13 buckets
SECONDS_PER_DAY = 86_400
SCORE_CHUNK = 512  # candidates scored at once by score_items (memory bound only)
SCORE_GROUP = 32  # users scored together on a shared candidate list, trimmed to their longest history
TRAIN_GROUPS = 4  # a training step's cuts, sorted by length, encoded in this many groups trimmed to their longest
Loss = Literal["sigmoid", "softmax"]
LOSSES = {"sigmoid": sampled_sigmoid, "softmax": sampled_softmax}  # one per Loss
Negatives = Literal["shared", "sampled", "in_batch"]
NEGATIVES = get_args(Negatives)
Objective = Literal["all_positions", "cuts"]
TimeReference = Literal["auto", "prediction", "previous"]
NO_PREVIOUS = len(TIME_THRESHOLDS_DAYS) + 1  # time bucket of a window's first event with time_reference="previous"
EXPONENT_FLOOR = -80.0  # prefix attention: exp(s - max) below e^-80 is clamped (float32's normal range ends at e^-87)


@typed_config
class ATRankConfig:
    item_dim: Annotated[int, Field(ge=1, description="item embedding width")] = 64  # (code)
    # (code); [item; category] is the behaviour encoding
    category_dim: Annotated[int, Field(ge=1, description="category embedding width")] = 64
    hidden_dim: Annotated[int, Field(ge=1, description="shared space after the per-group projections")] = 128  # (code)
    num_spaces: Annotated[int, Field(ge=1, description="K semantic spaces = attention heads")] = 8  # (code)
    num_blocks: Annotated[int, Field(ge=1, description="self-attention blocks")] = 1  # (code: one)
    # 4 x hidden, Transformer convention (a choice)
    ffn_dim: Annotated[int, Field(ge=1, description="feed-forward width")] = 512
    # a choice, Transformer default
    dropout: Annotated[float, Field(ge=0.0, lt=1.0, description="dropout on embeddings and residual branches")] = 0.1
    # a choice: "softmax" over many negatives learns (gSASRec, RecSys 2023); the public code's is "sigmoid" with one
    loss: Annotated[Loss, Field(
        description='"sigmoid": point-wise sigmoid cross-entropy; "softmax": sampled softmax')] = "softmax"
    # a choice: "shared" (many uniform items scored by the fused target network); the public code's is "sampled" (one)
    negatives: Annotated[Negatives, Field(description=(
        '"shared": num_shared uniform items shared by the batch; "sampled": num_sampled uniform items per user; '
        '"in_batch": the other users\' targets'))] = "shared"
    # (code: one)
    num_sampled: Annotated[int, Field(ge=1, description='negatives per positive with negatives="sampled"')] = 1
    # a choice, as the SASRec baseline's sampled softmax; accidental hits are masked
    num_shared: Annotated[int, Field(ge=1, description='uniform negatives shared by the batch with negatives="shared"')] = 256
    # 0 = uniform; a share drawn from the step's own targets (by popularity), log-Q corrected for the mixture
    # (raylurm.losses.next_item.mixed_negatives): uniform negatives rarely include the popular items of a top 10
    popular_fraction: Annotated[float, Field(ge=0.0, lt=1.0, description=(
        'with negatives="shared": share of them drawn from the step\'s targets (by popularity), the rest uniform'))] = 0.0
    # a choice: the public code predicts one random cut per user per step ("cuts", the ablation row); "all_positions"
    # predicts the next item at every position of the window in one causal pass, ~50x the targets per step
    objective: Annotated[Objective, Field(description=(
        '"all_positions": next item at every position, one pass (causal self-attention, time since the previous event); '
        '"cuts": cuts_per_user random cuts per user, each encoded on its own (the paper)'))] = "all_positions"
    # "auto" = "previous" with all_positions (a prefix-independent encoding, which one pass needs), "prediction" with cuts
    time_reference: Annotated[TimeReference, Field(description=(
        '"prediction": days from each event to the prediction time (the paper); "previous": days since the previous event'))] = "auto"
    # a choice, off by default until measured: with time counted from the previous event, nothing tells the target
    # network which events are recent; a learned per-space linear bias on the distance in events is recency that one pass
    # allows (ALiBi, Press et al., ICLR 2022: its exp factor of the prediction point cancels in every prefix's softmax)
    recency_bias: Annotated[bool, Field(description=(
        "target network: add -γ_k · (events between l and the prediction point) to space k's attention logits, γ_k >= 0 learned"))] = False
    # a choice: the paper's encoding has no order but time buckets, and with time counted from the previous event
    # (one pass) nothing marks which events are the latest; a learned embedding of the event's position in the window
    # (0 = the oldest encoded event, as the sasrec baseline's) added to the behaviour encoding gives the causal
    # self-attention the order. "none" = the paper
    positions: Annotated[Literal["window", "none"], Field(description=(
        '"window": add a learned embedding of each event\'s position in the encoded window (0 = oldest); "none": the paper'))] = "window"
    # a choice: the target network reads the history only through a candidate-weighted average, which blurs the latest
    # events that next-item prediction on ML-1M mostly depends on; adding <h_t, c> (the self-attention state at the
    # prediction point, SASRec's read-out) gives it that path. False = the paper's logit b_i + <u(i), c>
    latest_state: Annotated[bool, Field(description=(
        "add <h_t, c_i> (the self-attention output at the prediction point) to the target network's logit"))] = True
    # a choice, measured, off (0) for now: the target network's attention makes every negative cost B·K·L² work, so
    # only num_shared of them are affordable (1,024 take 6x the step time of 256), and a sampled softmax learns slowly
    # (sasrec, validation NDCG@10 after 3 epochs: 0.020 with 256 uniform negatives, 0.040 with 1,024, 0.082 with the
    # full softmax); the read-out's part of the logit, b_i + <h_t, c_i>, costs one matmul per position over the whole
    # catalogue, so it can also be trained by a full softmax (chunked, as sasrec's), at this weight. Measured on ML-1M
    # (weight 1, epochs 1-3): 0.017, 0.035, 0.045 against 0.016, 0.022, 0.029 without, at ~1.3x the step time — about
    # one epoch ahead, not sasrec's pace; whether it lifts the plateau is the next run's question
    readout_softmax_weight: Annotated[float, Field(ge=0.0, description=(
        "with latest_state and all_positions: weight of a full-catalogue softmax of b_i + <h_t, c_i> (an auxiliary loss)"))] = 0.0
    # a choice: the paper cuts once per user per step; several cuts give more targets per step
    cuts_per_user: Annotated[int, Field(ge=1, description="random cuts (next-item targets) per user per step")] = 4
    # a choice: equal tasks
    behavior_weight: Annotated[float, Field(
        ge=0.0, description="weight of the next-behaviour-type cross-entropy")] = 1.0
    lr: Annotated[float, Field(gt=0.0, description="Adam learning rate")] = 1e-3  # a choice, project-wide Adam default
    # a choice, as SASRec and DSS here: 2 workers x 64 = SASRec's 128 windows per step; every position is trained, so
    # the optimiser steps per epoch, not the targets, are what is short
    batch_size: Annotated[int, Field(ge=1, description="training windows per step on each worker")] = 64

    @model_validator(mode="after")
    def _rules(self) -> ATRankConfig:
        if self.hidden_dim % self.num_spaces:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by num_spaces ({self.num_spaces})")
        if self.objective == "all_positions" and self.time_reference == "prediction":
            raise ValueError('objective="all_positions" encodes every prefix in one pass, so an event\'s time cannot depend '
                             'on the prediction time: use time_reference="previous" (or "auto")')
        if self.readout_softmax_weight > 0 and not (self.latest_state and self.objective == "all_positions"):
            raise ValueError("readout_softmax_weight > 0 trains the latest-state read-out at every position: it needs "
                             'latest_state=true and objective="all_positions"')
        if self.objective == "all_positions" and self.negatives != "shared":
            raise ValueError('objective="all_positions" scores negatives shared by the batch: use negatives="shared"')
        return self

    @property
    def causal(self) -> bool:
        """Causal self-attention (each event sees the earlier ones only): what one pass over every prefix needs."""
        return self.objective == "all_positions"

    @property
    def time_from(self) -> str:
        """The resolved time reference: "prediction" or "previous"."""
        if self.time_reference != "auto":
            return self.time_reference
        return "previous" if self.objective == "all_positions" else "prediction"


def time_buckets(timestamps: Tensor, prediction_time: Tensor) -> Tensor:
    """§1 discretised time: ``#{θ ∈ 2, 4, ..., 4096 : gap_days + 1 >= θ}`` ∈ [0, 12] *(code)*.

    ``gap_days`` = calendar-day index of the prediction time minus that of the event (UTC days,
    clamped at 0). timestamps (B, L) seconds, prediction_time (B,) — or (B, L), one per event — seconds
    -> (B, L) int64.
    """
    days = torch.div(timestamps, SECONDS_PER_DAY, rounding_mode="floor")  # (B, L)
    now = torch.div(prediction_time, SECONDS_PER_DAY, rounding_mode="floor")  # (B,) or (B, L)
    gap = ((now[:, None] if now.ndim == 1 else now) - days).clamp_min(0)  # (B, L)
    thresholds = torch.tensor(TIME_THRESHOLDS_DAYS, dtype=gap.dtype, device=gap.device)
    return torch.bucketize(gap + 1, thresholds, right=True)  # (B, L) number of thresholds <= gap + 1


def previous_event_buckets(timestamps: Tensor) -> Tensor:
    """Discretised days since each event's previous event, on the same thresholds as :func:`time_buckets`.

    timestamps (B, L) seconds -> (B, L) int64 in [0, 12], and ``NO_PREVIOUS`` (13) for the first event of each
    row. It depends on the event and its predecessor only, so every prefix of a row gets the same buckets."""
    first = torch.full_like(timestamps[:, :1], NO_PREVIOUS)
    return torch.cat([first, time_buckets(timestamps[:, :-1], timestamps[:, 1:])], dim=1)  # each event seen from the next


class MultiSpaceAttention(nn.Module):
    """§2–3 attention inside K semantic spaces: ``softmax(Q_k K_kᵀ / √d) V_k`` per space, concatenated.

    Projecting into K spaces of width d = H / K and attending inside each is a multi-head
    attention with one head per space. Keys where ``mask`` is False (padding) get zero weight.
    """

    def __init__(self, dim: int, num_spaces: int, recency: bool = False) -> None:
        super().__init__()
        self.num_spaces = num_spaces
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))
        # γ_k = softplus(ρ_k) >= 0 per space, initialised at ~0.13 per event (a choice: a half-life of ~5 events)
        self.recency = nn.Parameter(torch.full((num_spaces,), -2.0)) if recency else None

    def slopes(self) -> Tensor | None:
        """γ_k >= 0 of the recency bias (K,), or None without one."""
        return None if self.recency is None else F.softplus(self.recency)

    def logit_bias(self, allowed: Tensor, query_end: Tensor) -> Tensor:
        """SDPA mask: ``-γ_k · (t_q - l)`` where ``allowed`` (B, 1, Q, L) and -inf elsewhere -> (B, K, Q, L) float;
        ``query_end`` (B, Q): the position t_q of each query's prediction point (the last event it may see)."""
        distance = (query_end[:, None, :, None] - torch.arange(allowed.shape[-1], device=allowed.device)).to(torch.float32)
        bias = -self.slopes()[None, :, None, None] * distance.clamp_min(0)  # (B, K, Q, L)
        return bias.masked_fill(~allowed, float("-inf"))

    def forward(self, queries: Tensor, keys: Tensor, mask: Tensor, causal: bool = False) -> Tensor:
        """queries (B, Q, H), keys (B, L, H), mask (B, L) bool -> (B, Q, H).

        torch's fused ``scaled_dot_product_attention`` (it never holds the (B, K, Q, L) weights); a
        row with no key at all attends uniformly to every position, as a softmax of equal logits.
        ``causal`` (Q = L): query t attends to keys 0..t only."""
        (b, q, h), length, k = queries.shape, keys.shape[1], self.num_spaces
        query = self.query(queries).view(b, q, k, h // k).transpose(1, 2)  # (B, K, Q, d)
        key = self.key(keys).view(b, length, k, h // k).transpose(1, 2)  # (B, K, L, d)
        value = self.value(keys).view(b, length, k, h // k).transpose(1, 2)  # (B, K, L, d)
        allowed = (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]  # (B, 1, 1, L)
        if causal:  # a prefix mask keeps every query's own position, so no causal row is empty
            allowed = allowed & torch.ones(q, length, dtype=torch.bool, device=mask.device).tril()
        if self.recency is not None:  # prediction point: the query's own position (causal), else the last event
            end = (torch.arange(q, device=mask.device).expand(b, q) if causal
                   else (mask.sum(dim=1, keepdim=True) - 1).clamp_min(0).expand(b, q))
            allowed = self.logit_bias(allowed.expand(b, 1, q, length), end)  # (B, K, Q, L) float
        spaces = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed)  # (B, K, Q, d)
        return self.out(spaces.transpose(1, 2).reshape(b, q, h))  # (B, Q, H) concatenated spaces


class SelfAttentionBlock(nn.Module):
    """§3 one self-attention layer: multi-space attention + feed-forward, each residual + LayerNorm."""

    def __init__(self, config: ATRankConfig) -> None:
        super().__init__()
        self.causal = config.causal
        self.attention = MultiSpaceAttention(config.hidden_dim, config.num_spaces)
        self.feed_forward = nn.Sequential(nn.Linear(config.hidden_dim, config.ffn_dim), nn.ReLU(),
                                          nn.Linear(config.ffn_dim, config.hidden_dim))
        self.norm1, self.norm2 = nn.LayerNorm(config.hidden_dim), nn.LayerNorm(config.hidden_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, L, H), mask (B, L) -> (B, L, H)."""
        x = self.norm1(x + self.dropout(self.attention(x, x, mask, causal=self.causal)))  # (B, L, H)
        return self.norm2(x + self.dropout(self.feed_forward(x)))  # (B, L, H)


def category_table(info: DataInfo) -> Tensor:
    """``(num_items + 1,)`` category index of each shifted item id (row 0 = padding -> category 0)."""
    categories = list(info.item_category) or [0] * info.num_items
    if len(categories) != info.num_items:
        raise ValueError(f"info.item_category has {len(categories)} entries, expected num_items={info.num_items}")
    table = torch.tensor([0] + categories, dtype=torch.long)
    if table.min() < 0 or table.max() >= info.num_categories:
        raise ValueError(f"item categories must lie in [0, num_categories={info.num_categories})")
    return table


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (no dropout) and restore its previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def next_item_cut(lengths: Tensor) -> tuple[Tensor, Tensor]:
    """A random cut per user: input = events [0, cut), target = event ``cut``; cut ∈ [1, n - 1].

    lengths (B,) -> cut (B,), valid (B,) bool. Users with fewer than 2 events cannot be split:
    valid is False, cut = max(n, 1) (their whole history as input, no target).
    """
    valid = lengths >= 2
    span = (lengths - 1).clamp_min(1)  # (B,) number of admissible cuts
    cut = 1 + (torch.rand(lengths.shape, device=lengths.device) * span).long().clamp_max(span - 1)
    return torch.where(valid, cut, lengths.clamp_min(1)), valid


class ATRank(nn.Module):
    """ATRank encoder + target network, pretrained by next-behaviour prediction from logs.

    **Behaviour groups.** The paper groups behaviours by target entity type (item, coupon, query),
    each group with its own projection. Every target here is an item, so the groups are the
    behaviour types of the data (``info.num_behaviors``, e.g. click / cart / buy, or a single
    "rate"): one ``nn.Linear`` per type maps the behaviour encoding into the shared space.

    **Objective** (``forward``), multi-task ("all2all", one shared model): (a) the next item, scored
    by the target network against negatives, and (b) when the data has several behaviour types,
    the next behaviour type, a cross-entropy head on the target network's output for the true
    next item (``behavior_weight``).

    * ``objective="all_positions"`` (default, a choice): the next item at *every* position t of
      each training window, from events 0..t, in one pass — ~25× the targets of four cuts per
      user at about the same cost per step (measured: 6,381 vs 256 targets per 64-window step,
      5.1 vs 5.5 s on one thread). One pass needs an encoding of event l that does not depend
      on the prediction point, so the self-attention is causal and an event's time is counted
      from its previous event (``time_reference="previous"``); the target network's softmax over
      each prefix is a ratio of cumulative sums (:meth:`prefix_shared_logits`). Negatives:
      ``num_shared`` uniform items shared by the batch with a sampled softmax (the uniform
      proposal's log-Q correction is a constant and cancels; accidental hits are masked). The
      exact catalogue softmax is not offered here: the target network scores each candidate
      with its own attention over every prefix, B·L·C·L work per step.
    * ``objective="cuts"``: ``cuts_per_user`` random cuts t per user, the events before t
      (bidirectional self-attention, times counted from the prediction time, as the paper) as
      input and the event at t as target, against the shared negatives as above, ``num_sampled``
      uniform items per user (``negatives="sampled"``) or the other users' targets in the
      (all-worker) batch (``"in_batch"``). The public code's training — one cut, one uniform
      negative, sigmoid — is :attr:`paper_loss`, the ablation row.

    Users with < 2 events are skipped.

    **Representation** (``embed``). The target network needs a candidate, so the
    candidate-independent user vector is the masked *mean of the self-attention outputs* over the
    whole history (``hidden_dim`` wide). It adds no parameters, so nothing in it is left
    untrained (a learned "user query" would only be trained by an extra loss term the paper
    does not have). ``score_items`` gives the candidate-aware next-item scores.
    """

    name = "atrank"
    Config = ATRankConfig
    # the public code's training (one cut per user, bidirectional attention, time from the prediction time, one uniform
    # negative, sigmoid cross-entropy): an ablation row
    paper_loss = {"objective": "cuts", "negatives": "sampled", "num_sampled": 1, "loss": "sigmoid", "cuts_per_user": 1,
                  "positions": "none", "latest_state": False}
    # what checkpoints written before ``objective`` existed were trained with (raylurm.train.checkpoint.build_model)
    legacy_options = {"objective": "cuts", "time_reference": "prediction", "positions": "none", "latest_state": False}

    @staticmethod
    def training_window(config, info: DataInfo) -> int:
        """Events per training window over the whole history (raylurm.train.windows): the encoded length + the last target."""
        return info.max_sequence_length + 1

    def __init__(self, config: ATRankConfig, info: DataInfo) -> None:
        super().__init__()
        if info.num_items < 1 or info.num_behaviors < 1:
            raise ValueError(f"need num_items >= 1 and num_behaviors >= 1, got {info.num_items}, {info.num_behaviors}")
        self.config, self.num_items = config, info.num_items
        encoding = config.item_dim + config.category_dim  # E
        self.register_buffer("item_category", category_table(info))  # (num_items + 1,)
        self.item_embedding = nn.Embedding(info.num_items + 1, config.item_dim, padding_idx=0)
        self.category_embedding = nn.Embedding(info.num_categories, config.category_dim)
        self.time_embedding = nn.Embedding(len(TIME_THRESHOLDS_DAYS) + 1 + (config.time_from == "previous"), encoding)
        self.behavior_embedding = nn.Embedding(info.num_behaviors + 1, encoding, padding_idx=0)
        self.position_embedding = (nn.Embedding(max(info.max_sequence_length, 1), encoding)
                                   if config.positions == "window" else None)  # 0 = the oldest encoded event
        self.group_projections = nn.ModuleList(nn.Linear(encoding, config.hidden_dim)
                                               for _ in range(info.num_behaviors))
        self.candidate_projection = nn.Linear(encoding, config.hidden_dim)
        self.blocks = nn.ModuleList(SelfAttentionBlock(config) for _ in range(config.num_blocks))
        self.target_attention = MultiSpaceAttention(config.hidden_dim, config.num_spaces, recency=config.recency_bias)
        self.item_bias = nn.Embedding(info.num_items + 1, 1)
        self.behavior_head = nn.Linear(config.hidden_dim, info.num_behaviors) if info.num_behaviors > 1 else None
        self.dropout = nn.Dropout(config.dropout)
        self._init_embeddings()

    def _init_embeddings(self) -> None:
        for table in (self.item_embedding, self.category_embedding, self.time_embedding, self.behavior_embedding,
                      self.position_embedding):
            if table is not None:
                nn.init.normal_(table.weight, std=0.02)  # nanoGPT-style small init
        nn.init.zeros_(self.item_bias.weight)
        for table in (self.item_embedding, self.behavior_embedding):
            nn.init.zeros_(table.weight[0])  # padding rows

    @property
    def representation_dim(self) -> int:
        return self.config.hidden_dim

    # --- §1 behaviour encoding and per-group projection -------------------------------------
    def target_encoding(self, items: Tensor) -> Tensor:
        """§1 target code ``[E_item x ; E_cat cat(x)]``: shifted item ids (...) -> (..., E)."""
        return torch.cat([self.item_embedding(items), self.category_embedding(self.item_category[items])], dim=-1)

    def project(self, encoding: Tensor, groups: Tensor) -> Tensor:
        """§1 per-group projection ``W_g e + b_g``: encoding (B, L, E), groups (B, L) in [0, G) -> (B, L, H)."""
        out = encoding.new_zeros(*groups.shape, self.config.hidden_dim)  # (B, L, H)
        for group, projection in enumerate(self.group_projections):
            selected = groups == group  # (B, L)
            out[selected] = projection(encoding[selected]).to(out.dtype)  # (n_g, H)
        return out

    def encode(self, items: Tensor, behaviors: Tensor, timestamps: Tensor, mask: Tensor) -> Tensor:
        """§1–3: behaviours where ``mask`` (a prefix of each row) -> self-attended vectors (B, L, H).

        The prediction time is each row's last unmasked timestamp (``time_reference="previous"``:
        each event's time is counted from its previous event instead); masked positions are zeroed
        before embedding, so nothing beyond the mask (future events, padding) reaches the output.
        With ``objective="all_positions"`` the self-attention is causal: position t's output is
        that of the prefix 0..t encoded alone.
        """
        if self.config.time_from == "previous":
            buckets = previous_event_buckets(timestamps)  # (B, L)
        else:
            last = (mask.sum(dim=1) - 1).clamp_min(0)  # (B,)
            buckets = time_buckets(timestamps, timestamps.gather(1, last[:, None]).squeeze(1))  # (B, L)
        items, behaviors = items * mask, behaviors * mask  # (B, L), 0 = padding
        encoding = self.target_encoding(items) + self.time_embedding(buckets) + self.behavior_embedding(behaviors)
        if self.position_embedding is not None:  # column l of a left-aligned row = the l-th oldest event of the window
            steps = torch.arange(items.shape[1], device=items.device).clamp_max(self.position_embedding.num_embeddings - 1)
            encoding = encoding + self.position_embedding(steps)[None]
        h = self.dropout(self.project(encoding, (behaviors - 1).clamp_min(0)))  # (B, L, H)
        for block in self.blocks:
            h = block(h, mask)  # (B, L, H)
        return h

    # --- §4 target network ---------------------------------------------------------------------
    def candidates(self, items: Tensor) -> tuple[Tensor, Tensor]:
        """Candidate vectors ``c = W_c [E_item i ; E_cat cat(i)]`` (..., H) and biases ``b_i`` (...)."""
        return self.candidate_projection(self.target_encoding(items)), self.item_bias(items).squeeze(-1)

    def target_network(self, h: Tensor, mask: Tensor, vectors: Tensor, bias: Tensor,
                       causal: bool = False) -> tuple[Tensor, Tensor]:
        """§4 vanilla attention with each candidate as query: h (B, L, H), vectors (B, C, H), bias (B, C)
        -> logits ``b_i + ⟨u(i), c_i⟩`` (B, C) and user vectors u (B, C, H). ``causal`` (C = L):
        candidate t attends to events 0..t only (the next item of position t)."""
        users = self.target_attention(vectors, h, mask, causal=causal)  # (B, C, H)
        logits = bias + (users * vectors).sum(dim=-1)  # (B, C)
        if self.config.latest_state:  # + <h_t, c>: candidate t's own position (causal), else each row's last event
            state = h if causal else latest(h, mask)[:, None]  # (B, C, H) or (B, 1, H)
            logits = logits + (state * vectors).sum(dim=-1)
        return logits, users

    def shared_logits(self, h: Tensor, mask: Tensor, ids: Tensor) -> Tensor:
        """Differentiable target-network logits of candidates shared by the batch: h (B, L, H), ids (C,) -> (B, C).

        The same function as :meth:`target_network`, computed as :meth:`_score_shared` explains; for
        training with many shared negatives."""
        return self._attend_shared(h, mask | ~mask.any(dim=1, keepdim=True), self._candidate_side(ids))

    def _candidate_side(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per candidate: its queries (K, C, d), ``W_oᵀ c`` per space (K, C, d), ``b_i + ⟨b_o, c⟩`` (C,) and c (C, H)."""
        attention = self.target_attention
        k = attention.num_spaces
        vectors, bias = self.candidates(ids)  # (C, H), (C,)
        d = vectors.shape[-1] // k
        queries = attention.query(vectors).view(-1, k, d).transpose(0, 1)  # (K, C, d)
        folded = (vectors @ attention.out.weight).view(-1, k, d).transpose(0, 1)  # (K, C, d) = W_oᵀ c per space
        return queries, folded, bias + vectors @ attention.out.bias, vectors

    def _attend_shared(self, h: Tensor, mask: Tensor, side: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        """Logits of every candidate of ``side`` for histories h (B, L, H) with non-empty prefix masks -> (B, C)."""
        attention, (b, length, _) = self.target_attention, h.shape
        queries, folded, constant, vectors = side
        k, d = queries.shape[0], queries.shape[-1]
        keys = attention.key(h).view(b, length, k, d).transpose(1, 2)  # (B, K, L, d), once for every chunk
        values = attention.value(h).view(b, length, k, d).transpose(1, 2)  # (B, K, L, d)
        pad = mask[:, None, None, :]  # (B, 1, 1, L)
        if attention.recency is not None:  # the prediction point is each row's last event
            pad = attention.logit_bias(pad, (mask.sum(dim=1, keepdim=True) - 1).clamp_min(0))  # (B, K, 1, L)
        out = []
        for start in range(0, queries.shape[1], SCORE_CHUNK):
            q = queries[None, :, start:start + SCORE_CHUNK].expand(b, -1, -1, -1)  # (B, K, c, d)
            spaces = F.scaled_dot_product_attention(q, keys, values, attn_mask=pad)  # (B, K, c, d)
            out.append(constant[start:start + SCORE_CHUNK] + (spaces * folded[None, :, start:start + SCORE_CHUNK]).sum(dim=(1, 3)))
        logits = torch.cat(out, dim=1) if out else h.new_zeros(b, 0)  # (B, C)
        if self.config.latest_state:
            logits = logits + latest(h, mask) @ vectors.T  # + <h_t, c>, t = each row's last event
        return logits

    def negatives(self, target: Tensor, valid: Tensor, vector: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Negative vectors (B, N, H), biases (B, N) and keep mask (B, N) (False = accidental hit / invalid).

        "sampled": ``num_sampled`` uniform items per user. "in_batch": every user's target from every
        worker (``gather_with_grad``); a user's own target and any copy of it are masked out.
        """
        b = target.shape[0]
        if self.config.negatives == "sampled":
            ids = torch.randint(1, self.num_items + 1, (b, self.config.num_sampled), device=target.device)  # (B, N)
            return *self.candidates(ids), ids != target[:, None]
        gathered = gather_with_grad(torch.cat([vector, bias[:, None]], dim=1))  # (B·W, H + 1)
        ids = gather_with_grad(torch.where(valid, target, torch.full_like(target, -1)))  # (B·W,)
        keep = (ids[None, :] != target[:, None]) & (ids[None, :] >= 0)  # (B, B·W)
        return gathered[None, :, :-1].expand(b, -1, -1), gathered[None, :, -1].expand(b, -1), keep

    # --- the interface -------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Next-behaviour prediction at every position, or at ``cuts_per_user`` random cuts per user (see the class docstring) -> {"loss", ...}."""
        if self.config.objective == "all_positions":
            return self._all_positions(batch)
        items, behaviors, timestamps, lengths = batch["items"], batch["behaviors"], batch["timestamps"], batch["lengths"]
        if self.config.cuts_per_user > 1:  # each user's row once per cut
            items, behaviors, timestamps, lengths = (x.repeat_interleave(self.config.cuts_per_user, dim=0)
                                                     for x in (items, behaviors, timestamps, lengths))
        cut, valid = next_item_cut(lengths)  # (B,), (B,)
        at_cut = cut.clamp_max(items.shape[1] - 1)[:, None]  # (B, 1)
        target = torch.where(valid, items.gather(1, at_cut).squeeze(1), 0)  # (B,) shifted item id
        next_behavior = behaviors.gather(1, at_cut).squeeze(1) - 1  # (B,)
        shared = (self.shared_negatives(target[valid])
                  if self.config.negatives == "shared" else None)  # (N,) shifted ids and (num_items + 1,) log Q, one draw
        # the loss is a mean over cuts: they are encoded in groups of similar length, each trimmed to its
        # longest input, so short cuts do not pay for the padding of long ones (in-batch negatives: one group)
        groups = (torch.argsort(cut, descending=True, stable=True).tensor_split(min(TRAIN_GROUPS, len(cut)))
                  if self.config.negatives != "in_batch" and len(cut) else [torch.arange(len(cut), device=items.device)])
        parts = [self._cut_losses(items[g], behaviors[g], timestamps[g], cut[g], valid[g], target[g], next_behavior[g], shared)
                 for g in groups if len(g)]
        order = torch.cat([g for g in groups if len(g)])
        item_loss, behavior_loss = (torch.cat([p[i] for p in parts]) for i in (0, 1))  # (B,) in ``order``
        valid = valid[order]
        weight = valid.float() / valid.sum().clamp_min(1)  # (B,) mean over users with a target
        loss = (weight * (item_loss + self.config.behavior_weight * behavior_loss)).sum()
        return {"loss": loss, "item_loss": (weight * item_loss).sum().detach(),
                "behavior_loss": (weight * behavior_loss).sum().detach(), "positions": valid.sum().float()}

    def _all_positions(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Next item (and behaviour) at every position t of each window, from events 0..t, in one causal pass.

        The rows are encoded in ``TRAIN_GROUPS`` groups of similar length, each trimmed to its
        longest; the loss is the mean over every (row, t) with a next event."""
        items, behaviors, timestamps, lengths = batch["items"], batch["behaviors"], batch["timestamps"], batch["lengths"]
        shared, log_q = self.shared_negatives(items[:, 1:][items[:, 1:] > 0])  # (N,) shifted, (num_items + 1,): one draw per step
        item_losses, behavior_losses, readout_losses = [], [], []
        readout = self.config.readout_softmax_weight > 0
        if readout:  # the catalogue's read-out side [c_i ; b_i], once for the step
            vectors, biases = self.candidates(torch.arange(1, self.num_items + 1, device=items.device))  # (C, H), (C,)
            catalogue = torch.cat([vectors, biases[:, None]], dim=1)  # (C, H + 1)
        for group in torch.argsort(lengths, descending=True, stable=True).tensor_split(min(TRAIN_GROUPS, max(len(lengths), 1))):
            width = int(lengths[group].max()) if len(group) else 0
            if width < 2:
                continue  # nothing to predict in this group
            inputs = slice(0, width - 1)  # position t (0-based) predicts event t + 1
            mask = torch.arange(width - 1, device=items.device)[None, :] < lengths[group, None]  # (b, W - 1)
            target = items[group, 1:width]  # (b, W - 1) shifted ids, 0 = none
            trained = target > 0  # (b, W - 1) positions with a next event
            h = self.encode(items[group, inputs], behaviors[group, inputs], timestamps[group, inputs], mask)  # (b, W - 1, H)
            vector, bias = self.candidates(target)  # (b, W - 1, H), (b, W - 1)
            positive, users = self.target_network(h, mask, vector, bias, causal=True)  # (b, W - 1), (b, W - 1, H)
            negative = self.prefix_shared_logits(h, shared)  # (b, W - 1, N)
            logits = torch.cat([positive[..., None] - log_q[target][..., None], negative - log_q[shared]], dim=-1)[trained]  # (n, 1 + N)
            keep = shared[None, :] != target[trained][:, None]  # (n, N) accidental hits out
            item_losses.append(LOSSES[self.config.loss](logits, keep, reduction="none"))
            behavior_losses.append(self.behavior_loss(users[trained], behaviors[group, 1:width][trained] - 1))
            if readout:  # -log softmax_i(b_i + <h_t, c_i>) of the next item over every item
                states = torch.cat([h[trained], h.new_ones(int(trained.sum()), 1)], dim=1)  # (n, H + 1) [h_t ; 1]
                readout_losses.append(catalogue_softmax(states, catalogue, target[trained] - 1))
        if not item_losses:  # every row has a single event
            zero = self.item_bias.weight.sum() * 0.0
            return {"loss": zero, "item_loss": zero.detach(), "behavior_loss": zero.detach(), "positions": torch.zeros(())}
        item_loss, behavior_loss = torch.cat(item_losses).mean(), torch.cat(behavior_losses).mean()
        loss = item_loss + self.config.behavior_weight * behavior_loss
        out = {"item_loss": item_loss.detach(), "behavior_loss": behavior_loss.detach(),
               "positions": torch.tensor(float(sum(len(x) for x in item_losses)))}
        if readout:
            readout_loss = torch.cat(readout_losses).mean()
            loss = loss + self.config.readout_softmax_weight * readout_loss
            out["readout_loss"] = readout_loss.detach()
        return {"loss": loss, **out}

    def shared_negatives(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """The step's shared negatives: shifted target ids (n,) -> shifted negative ids (N,) and log Q (num_items + 1,)
        of every shifted id under their proposal (uniform, or mixed with the step's targets: ``popular_fraction``;
        row 0, padding, is 0 and never read for a real item)."""
        ids, log_q = mixed_negatives(targets - 1, self.num_items, self.config.num_shared, self.config.popular_fraction)
        return ids + 1, torch.cat([log_q.new_zeros(1), log_q])

    def prefix_shared_logits(self, h: Tensor, ids: Tensor) -> Tensor:
        """Target-network logits of shared candidates after every prefix: h (B, L, H) causal states -> (B, L, N).

        Entry (b, t, n) is :meth:`target_network`'s logit of candidate n over events 0..t of row b.
        Per space k the attention read ``⟨W_o^k s_k, c⟩`` is a softmax average over l ≤ t of the
        scalars ``r_l = ⟨v_l^k, W_o^kᵀ c⟩`` with weights ``exp(a_l)``, ``a_l = q_c^k · key_l^k / √d``
        (+ ``γ_k · l`` with the recency bias: its ``-γ_k · t`` is the same for every l ≤ t and
        cancels), so every prefix is a ratio of two cumulative sums along l: no (B, K, N, L, d)
        tensor is formed. Without the recency bias the exponent is shifted by its row maximum (a
        constant that cancels) and floored at ``EXPONENT_FLOOR`` (plain ``cumsum``); with it the
        logits spread by γ_k · L, so the sums are taken in log space (``logcumsumexp``, ~2× the cost,
        exact at any spread) with r shifted to be positive by a per-row constant subtracted again."""
        attention, (b, length, _) = self.target_attention, h.shape
        queries, folded, constant, vectors = self._candidate_side(ids)  # (K, N, d), (K, N, d), (N,), (N, H)
        k, d = queries.shape[0], queries.shape[-1]
        keys = attention.key(h).view(b, length, k, d)  # (B, L, K, d)
        values = attention.value(h).view(b, length, k, d)  # (B, L, K, d)
        scores = torch.einsum("blkd,knd->bknl", keys, queries) / math.sqrt(d)  # (B, K, N, L)
        reads = torch.einsum("blkd,knd->bknl", values, folded)  # (B, K, N, L)
        slopes = attention.slopes()
        if slopes is None:  # the logits' own spread: shift by the row maximum (cancels), floored at e^-80
            weights = torch.exp((scores - scores.detach().amax(dim=-1, keepdim=True)).clamp_min(EXPONENT_FLOOR))
            averaged = (weights * reads).cumsum(dim=-1) / weights.cumsum(dim=-1)  # (B, K, N, L)
        else:  # γ_k · l spreads the logits by γ_k · L: one shift cannot serve every prefix, so log space
            scores = scores + slopes[None, :, None, None] * torch.arange(length, device=h.device, dtype=scores.dtype)
            offset = 1 - reads.detach().amin(dim=-1, keepdim=True).clamp_max(0)  # (B, K, N, 1): reads + offset >= 1
            numerator = torch.logcumsumexp(scores + torch.log(reads + offset), dim=-1)  # (B, K, N, L)
            averaged = torch.exp(numerator - torch.logcumsumexp(scores, dim=-1)) - offset  # (B, K, N, L)
        logits = constant + averaged.sum(dim=1).transpose(1, 2)  # (B, L, N)
        return logits + h @ vectors.T if self.config.latest_state else logits  # + <h_t, c> at every t

    def _cut_losses(self, items: Tensor, behaviors: Tensor, timestamps: Tensor, cut: Tensor, valid: Tensor, target: Tensor,
                    next_behavior: Tensor, shared: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        """Item and behaviour losses (B,) of predicting ``target`` from events [0, cut) of each row."""
        width = max(1, int(cut.max()))  # positions >= every cut are masked anyway
        items, behaviors, timestamps = items[:, :width], behaviors[:, :width], timestamps[:, :width]
        mask = torch.arange(width, device=items.device)[None, :] < cut[:, None]  # (B, L)
        h = self.encode(items, behaviors, timestamps, mask)  # (B, L, H)
        vector, bias = self.candidates(target)  # (B, H), (B,)
        if shared is not None:
            shared, log_q = shared  # (N,) shifted ids, (num_items + 1,) their proposal's log Q
            positive, users = self.target_network(h, mask, vector[:, None], bias[:, None])  # (B, 1), (B, 1, H)
            logits = torch.cat([positive - log_q[target][:, None], self.shared_logits(h, mask, shared) - log_q[shared]], dim=1)  # (B, 1 + N)
            keep = shared[None, :] != target[:, None]  # (B, N) accidental hits out
        else:
            negative_vectors, negative_bias, keep = self.negatives(target, valid, vector, bias)
            logits, users = self.target_network(h, mask, torch.cat([vector[:, None], negative_vectors], dim=1),
                                                torch.cat([bias[:, None], negative_bias], dim=1))  # (B, 1 + N)
        return LOSSES[self.config.loss](logits, keep, reduction="none"), self.behavior_loss(users[:, 0], next_behavior)

    def behavior_loss(self, users: Tensor, behavior: Tensor) -> Tensor:
        """Auxiliary task: cross-entropy of the next behaviour type from u(true next item), (B, H) -> (B,).
        Zero when the data has a single behaviour type."""
        if self.behavior_head is None:
            return users.new_zeros(users.shape[0])
        return F.cross_entropy(self.behavior_head(users), behavior.clamp_min(0), reduction="none")

    def encode_history(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Whole history, prediction time = last event: -> h (B, L, H), mask (B, L)."""
        items, lengths = batch["items"], batch["lengths"]
        mask = torch.arange(items.shape[1], device=items.device)[None, :] < lengths[:, None]  # (B, L)
        return self.encode(items, batch["behaviors"], batch["timestamps"], mask), mask

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Masked mean of the self-attention outputs over the whole history -> (B, hidden_dim).

        Always computed in eval mode (no dropout), so identical input gives identical output."""
        with evaluating(self):
            h, mask = self.encode_history(batch)  # (B, L, H), (B, L)
        weights = mask.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)  # (B, H)

    @torch.no_grad()
    def score_items(self, batch: dict[str, Tensor], item_ids: Tensor) -> Tensor:
        """Next-item logits ``b_i + ⟨u(i), c_i⟩`` for 0-based vocabulary item ids (C,) or (B, C) -> (B, C).

        Uses the whole history (prediction time = the last event), eval mode. With one candidate
        list for the whole batch (C,), the candidate side is computed once and the target
        network's output projection is folded into the candidates (see :meth:`_score_shared`);
        per-user lists (B, C) go through :meth:`target_network` itself."""
        if item_ids.numel() and (item_ids.min() < 0 or item_ids.max() >= self.num_items):
            raise ValueError(f"item_ids must be 0-based vocabulary indices in [0, {self.num_items})")
        with evaluating(self):
            h, mask = self.encode_history(batch)  # (B, L, H)
            if item_ids.ndim == 1:
                return self._score_shared(h, mask, item_ids + 1)
            return torch.cat([self.target_network(h, mask, *self.candidates(chunk))[0]
                              for chunk in (item_ids + 1).split(SCORE_CHUNK, dim=1)], dim=1)  # (B, C)

    def _score_shared(self, h: Tensor, mask: Tensor, ids: Tensor) -> Tensor:
        """:meth:`target_network` logits for candidates shared by every user: h (B, L, H), ids (C,) -> (B, C).

        The same function, computed in an order that does each piece once: the candidates'
        vectors, biases and queries once for the batch (not once per user); the history's keys and
        values once (not once per candidate chunk); and since the attention's output layer is
        linear, ``⟨W_o s + b_o, c⟩ = ⟨s, W_oᵀ c⟩ + ⟨b_o, c⟩`` moves the output projection to the C
        candidates instead of the B × C attended vectors. The attention itself is torch's fused
        ``scaled_dot_product_attention`` (it never holds the (B, K, C, L) weights), over users
        sorted by length in groups trimmed to their longest history, so padding costs little.
        """
        side = self._candidate_side(ids)  # once for the batch
        mask = mask | ~mask.any(dim=1, keepdim=True)  # an empty row attends uniformly, as the softmax of a masked row
        lengths = mask.sum(dim=1)  # (B,) masks are prefixes
        out = h.new_empty(h.shape[0], ids.shape[0])  # (B, C)
        for group in torch.argsort(lengths, descending=True).split(SCORE_GROUP):
            n = int(lengths[group].max())
            out[group] = self._attend_shared(h[group, :n], mask[group, :n], side)
        return out
