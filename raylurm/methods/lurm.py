"""LURM / SMEN (Yang et al., "Learning Universal User Representations via Self-Supervised Lifelong
Behaviors Modeling", §3.2): multi-anchor BoI encoder, GRU over periods, multi-scale switch, trained with InfoNCE between two continuous sub-sequences of the same user's events
(:mod:`raylurm.train.views`).

For each scale ``s`` (month, year) of a batch of B users with ``bags`` periods in all::

    {s}_ids/_values/_offsets --MultiAnchorBoI (eq. 5-6)--> r (bags, M, H)
        --pad per user, GRU over each anchor's periods (§3.2.2)--> r̃ (B, M, H)
    month r̃, year r̃' --ScaleSwitch (eq. 7)--> r̂ (B, M, H);  representation = [r̂^1 … r̂^M]  (B, M·H)
    r̂ of two windows --ProjectionHead (eq. 8-9)--> h_a, h_b (B, M·H) --info_nce (eq. 2-3)--> loss

The multi-anchor module and the GRU are shared by the two scales (§3.2.3, "parameter sharing").
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from raylurm.config import typed_config
from raylurm.encoders import MultiAnchorBoI
from raylurm.losses import info_nce
from raylurm.train.batch import DataInfo
from raylurm.train.distributed import gather_with_grad

Scales = Literal["both", "month", "year"]
SCALES = {"both": ("month", "year"), "month": ("month",), "year": ("year",)}  # one per Scales
_FAR = 2 ** 40  # a window bound that keeps every period (months since 1970)


@typed_config
class LURMConfig:
    num_anchors: Annotated[int, Field(ge=1, description="M, anchors of the multi-anchor module")] = 10  # §4.4
    hidden_dim: Annotated[int, Field(
        ge=1, description="H, width of W^e, of each anchor's vector and of the GRU")] = 128  # §4.4
    # "both" (§4.4); "month"/"year" = Table 4 ablations
    scales: Annotated[Scales, Field(
        description='"both" = month + year joined by the eq. 7 switch; "month" or "year" alone')] = "both"
    temperature: Annotated[float, Field(gt=0.0, description="τ of the contrastive loss")] = 0.1  # §4.4
    # the paper's "continuous sub-sequences ... of the whole life time", drawn on events (raylurm.train.views);
    # "calendar" (our first reading: windows of calendar months) gave 88.6 % of ML-1M's users identical views
    views: Annotated[Literal["events", "calendar"], Field(description=(
        '"events": two windows of each user\'s events, each bucketed into month/year BoI; "calendar": two windows '
        'of calendar periods over the whole-history bags'))] = "events"
    # not in the paper (it gives no window law): a view's length is uniform on [f·n, n] events (or periods of the span).
    # Chosen on validation (tune_configs/lurm_views.py, ML-1M, one worker, val_auc after 10 epochs): f = 0.1 0.6694,
    # 0.25 0.6657, 0.5 0.6548; f = 0.1 reached 0.7053 at epoch 35 (raw BoI with the same vocabulary: 0.7140), while
    # f = 0.5 — two views sharing most of a user's rare interests, a task any fingerprint solves (loss 0.4 of
    # ln 511 = 6.24) — plateaued near 0.68 in 54 epochs. τ = 0.3 matched τ = 0.1 at epoch 10 (0.6707).
    min_window_fraction: Annotated[float, Field(
        gt=0.0, le=1.0, description="shortest positive window, as a fraction of the user's events (or span)")] = 0.1
    # a choice (the paper says nothing of its optimiser's sparsity): with dense gradients a step zero-fills and updates
    # the whole D x H table W^e (D = 10^5: 12.8M floats) for the few thousand interests a batch touches
    sparse_gradients: Annotated[bool, Field(description=(
        "W^e gets row-sparse gradients, updated by lazy Adam (torch.optim.SparseAdam) on the rows a batch touches"))] = True
    lr: Annotated[float, Field(gt=0.0, description="Adam learning rate")] = 1e-3  # §4.4
    batch_size: Annotated[int, Field(
        ge=2, description="users per batch (>= 2: the other users are the negatives)")] = 256  # §4.4


# ---------------------------------------------------------------------------------------------
# Positive pairs: random continuous time windows (§3.2.4)


def _bag_users(lengths: torch.Tensor) -> torch.Tensor:
    """User index of every bag (bags,), from bags per user (B,) in the user-major layout."""
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)


def _randint_below(n: torch.Tensor) -> torch.Tensor:
    """Uniform integers in [0, n) elementwise (n clamped to >= 1), from torch's global RNG."""
    n = n.clamp(min=1)
    return torch.minimum((torch.rand(n.shape, device=n.device) * n).long(), n - 1)


def _random_window(periods: torch.Tensor, lengths: torch.Tensor,
                   min_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One window ``[start, end]`` (inclusive, in the scale's periods) per user (B,) each.

    The user's span is ``[first, last]`` period; the width is uniform in ``[⌈f·span⌉, span]``. The
    window is placed so that it covers a randomly drawn period of the user (uniform placement among
    those that do), so it is never empty even when the active periods are sparse. Users without
    periods get an unbounded window.
    """
    first_idx = torch.cumsum(lengths, 0) - lengths  # (B,)
    padded = torch.cat([periods, periods.new_zeros(1)])  # a safe gather for users without periods
    first, last = padded[first_idx], padded[(first_idx + lengths - 1).clamp(min=0)]  # (B,)
    span = (last - first + 1).clamp(min=1)
    shortest = torch.ceil(span * min_fraction).long().clamp(1)
    width = torch.minimum(shortest + _randint_below(span - shortest + 1), span)  # (B,)
    centre = padded[first_idx + _randint_below(lengths)]  # a period the window must cover
    low, high = torch.maximum(first, centre - width + 1), torch.minimum(centre, last - width + 1)
    start = low + _randint_below(high - low + 1)
    has = lengths > 0
    return torch.where(has, start, -_FAR), torch.where(has, start + width - 1, _FAR)


def sample_windows(batch: dict[str, torch.Tensor], scales: tuple[str, ...],
                   min_fraction: float) -> dict[str, torch.Tensor]:
    """A random continuous time window per user -> a keep mask ``(bags,)`` per scale (§3.2.4).

    The window is drawn on the finest scale present (month if used, else year) and applied in
    absolute time to every scale: a month bag is kept if its month is inside the window, a year
    bag if its year overlaps it (years since 1970 = months since 1970 // 12).
    """
    reference = scales[0]  # "month" if present (SCALES lists month first)
    months_per_period = 1 if reference == "month" else 12
    start, end = _random_window(batch[f"{reference}_periods"], batch[f"{reference}_lengths"], min_fraction)
    start, end = start * months_per_period, end * months_per_period + months_per_period - 1  # (B,) in months
    keep = {}
    for scale in scales:
        user, periods = _bag_users(batch[f"{scale}_lengths"]), batch[f"{scale}_periods"]  # (bags,) each
        if scale == "year":
            periods = periods * 12  # overlap test: year y covers months [12y, 12y + 11]
            start_s, end_s = torch.div(start, 12, rounding_mode="floor") * 12, end
        else:
            start_s, end_s = start, end
        keep[scale] = (periods >= start_s[user]) & (periods <= end_s[user])
    return keep


def merge_views(batch: dict[str, torch.Tensor], scales: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The ``view0_*`` and ``view1_*`` bags of B users (:mod:`raylurm.train.views`) -> one batch of 2B users (view 0 first)."""
    missing = [f"view0_{s}_ids" for s in scales if f"view0_{s}_ids" not in batch]
    if missing:
        raise ValueError(f"views=\"events\" needs the batch's event-level views ({missing[0]} is missing): train through "
                         "raylurm.train, or add LURM.training_inputs(...)(table) to the collated batch")
    out = {}
    for s in scales:
        a, b = (f"view0_{s}_", f"view1_{s}_")
        out[f"{s}_ids"] = torch.cat([batch[a + "ids"], batch[b + "ids"]])
        out[f"{s}_values"] = torch.cat([batch[a + "values"], batch[b + "values"]])
        out[f"{s}_offsets"] = torch.cat([batch[a + "offsets"], batch[b + "offsets"] + batch[a + "ids"].numel()])
        out[f"{s}_periods"] = torch.cat([batch[a + "periods"], batch[b + "periods"]])
        out[f"{s}_lengths"] = torch.cat([batch[a + "lengths"], batch[b + "lengths"]])
    return out


# ---------------------------------------------------------------------------------------------
# Modules (§3.2.2 - §3.2.4)


def _pad_by_user(r: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Bags in user-major order (bags, ...) -> left-aligned, zero-padded (B, T, ...)."""
    user = _bag_users(lengths)  # (bags,)
    position = torch.arange(r.shape[0], device=r.device) - (torch.cumsum(lengths, 0) - lengths)[user]
    out = r.new_zeros(lengths.numel(), max(int(lengths.max()), 1), *r.shape[1:])  # (B, T, ...)
    out[user, position] = r
    return out


class TimeAggregation(nn.Module):
    """§3.2.2: each anchor's period sequence ``r^i_{t1..tN}`` -> ``r̃^i ∈ R^H``, the GRU's last state.

    One GRU, shared by the M anchors (and by both scales, §3.2.3). The paper says each ``R^i`` is
    "aggregated separately" by "a GRU": we read it as M separate sequences through one GRU, so the
    M·B sequences run as one batch (a few padded length buckets) and parameters do not grow with M; the
    anchors stay distinct because their inputs differ (their own α in eq. 6).

    Periods are the user's non-empty bags in time order: empty months are absent, not zero
    vectors (the batch carries only non-empty bags; a zero BoI gives r = ReLU(0) = 0 and would only
    tell the GRU how long the user was idle, at the cost of sequences as long as the whole span).

    Incremental updates (serving): the GRU's hidden state IS the representation before the
    switch, so ``initial_state`` (B, M, H) — a user's previous ``r̃`` — lets new periods be folded
    in without re-reading the history. Users without periods keep their initial state (zeros).
    """

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.gru = nn.GRU(hidden_dim, hidden_dim, batch_first=True)

    def forward(self, r: torch.Tensor, lengths: torch.Tensor,
                initial_state: torch.Tensor | None = None) -> torch.Tensor:
        """r (bags, M, H) of B users with ``lengths`` (B,) bags each -> r̃ (B, M, H).

        The B·M sequences run through the GRU padded, in buckets of similar length (each row's lengths in
        ``(2^(k-1), 2^k]`` padded to the bucket's longest), and each row's state is read at its own last
        period — exact, as the padding comes after it. (A ``PackedSequence`` gives the same states, but
        on CPU its backward zero-fills the whole packed input once per time step: 40 % of a LURM step at
        30 months.) Every bucket's input is gathered straight from ``r`` in one ``index_select``, so the
        backward is one scatter-add into ``r``'s size; slicing each bucket out of one padded (B·M, T, H)
        tensor zero-filled that whole tensor once per bucket in the backward — 32 % of a step on
        synth-lifelong's 12-year histories (13k month bags per view)."""
        b, (bags, m, h) = lengths.numel(), r.shape
        steps = lengths.repeat_interleave(m)  # (B·M,) row = user·M + anchor
        state = r.new_zeros(b * m, h) if initial_state is None else initial_state.reshape(b * m, h)
        first = (torch.cumsum(lengths, 0) - lengths).repeat_interleave(m)  # (B·M,) the row's user's first bag
        anchor = torch.arange(b * m, device=r.device) % m  # (B·M,)
        padding = bags * m  # index of the zero row appended below
        bucket = torch.ceil(torch.log2(steps.clamp(min=1).to(torch.float64))).long()  # (B·M,) 0 for one period
        plans, indices = [], []
        for k in torch.unique(bucket[steps > 0]).tolist():
            rows = torch.nonzero((bucket == k) & (steps > 0)).squeeze(1)  # (R,)
            width = int(steps[rows].max())
            t = torch.arange(width, device=r.device)[None, :]  # (1, width)
            index = (first[rows, None] + t) * m + anchor[rows, None]  # (R, width) rows of r viewed as (bags·M, H)
            indices.append(torch.where(t < steps[rows, None], index, padding).reshape(-1))
            plans.append((rows, width))
        if not plans:
            return state.view(b, m, h)
        flat = torch.cat([r.reshape(bags * m, h), r.new_zeros(1, h)])  # (bags·M + 1, H)
        gathered = flat.index_select(0, torch.cat(indices)).split([len(rows) * width for rows, width in plans])
        finals = []
        for (rows, width), x in zip(plans, gathered):
            out, _ = self.gru(x.view(len(rows), width, h), state[rows][None].contiguous())  # (R, width, H)
            finals.append(out[torch.arange(len(rows), device=out.device), steps[rows] - 1])  # (R, H) state at the last period
        return state.index_copy(0, torch.cat([rows for rows, _ in plans]), torch.cat(finals)).view(b, m, h)


def _per_anchor_weight(num_anchors: int, fan_out: int, fan_in: int) -> nn.Parameter:
    """M independent (fan_out, fan_in) matrices, initialised like ``nn.Linear``."""
    bound = 1 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(num_anchors, fan_out, fan_in).uniform_(-bound, bound))


class ScaleSwitch(nn.Module):
    """Eq. 7: ``r̂^i = s^i([r̃^i, r̃'^i]) ⊙ r̃^i + (1 − s^i) ⊙ r̃'^i``.

    ``s^i`` = a fully-connected layer 2H → H + sigmoid, one per anchor (a gate per coordinate).
    """

    def __init__(self, num_anchors: int, hidden_dim: int):
        super().__init__()
        self.weight = _per_anchor_weight(num_anchors, hidden_dim, 2 * hidden_dim)  # (M, H, 2H)
        self.bias = nn.Parameter(torch.zeros(num_anchors, hidden_dim))  # (M, H)

    def forward(self, month: torch.Tensor, year: torch.Tensor) -> torch.Tensor:
        """month r̃, year r̃' (..., M, H) -> r̂ (..., M, H)."""
        both = torch.cat([month, year], dim=-1)  # (..., M, 2H)
        s = torch.sigmoid(torch.einsum("...mk,mhk->...mh", both, self.weight) + self.bias)  # (..., M, H)
        return s * month + (1 - s) * year


class ProjectionHead(nn.Module):
    """Eq. 8-9: ``v = a([W^{h1}_1 r̂^1, …, W^{h1}_M r̂^M])``, ``h = W^{h2} a(v + mix(v, W^{h3}))``.

    ``mix(v, W^{h3}) = r_2(W^{h3} r_1(v))``: v reshaped to M×H, left-multiplied by ``W^{h3} ∈ R^{M×M}``
    (anchors exchange information), flattened. ``a`` = ReLU. No biases, as written in the paper.
    """

    def __init__(self, num_anchors: int, hidden_dim: int):
        super().__init__()
        self.per_anchor = _per_anchor_weight(num_anchors, hidden_dim, hidden_dim)  # W^{h1}_i (M, H, H)
        bound = 1 / math.sqrt(num_anchors)
        self.mix = nn.Parameter(torch.empty(num_anchors, num_anchors).uniform_(-bound, bound))  # W^{h3} (M, M)
        self.out = nn.Linear(num_anchors * hidden_dim, num_anchors * hidden_dim, bias=False)  # W^{h2} (MH, MH)

    def forward(self, r_hat: torch.Tensor) -> torch.Tensor:
        """r̂ (B, M, H) -> h (B, M·H)."""
        v = F.relu(torch.einsum("bmk,mhk->bmh", r_hat, self.per_anchor))  # (B, M, H) eq. 8, first line
        mixed = torch.einsum("nm,bmh->bnh", self.mix, v)  # (B, M, H) eq. 9
        return self.out(F.relu(v + mixed).flatten(1))  # (B, M·H) eq. 8, second line


# ---------------------------------------------------------------------------------------------
# The method


class LURM(nn.Module):
    """SMEN over multi-scale BoI sequences (LURM §3.2); representation ``[r̂^1 … r̂^M]`` (M·H).

    ``forward`` encodes two views per user (eq. 5-7) — windows of its events bucketed into BoI on the
    worker (:mod:`raylurm.train.views`), or with ``views="calendar"`` random windows of calendar periods
    (:func:`sample_windows`) — projects them (eq. 8-9) and returns InfoNCE (eq. 2-3) with the other users of the
    gathered batch as negatives. ``embed`` encodes the whole history, no windows, no head.
    """

    name = "lurm"
    Config = LURMConfig
    reads_interests = True  # its input is the BoI's interest bags: a checkpoint is bound to its vocabulary
    # what checkpoints written before ``views`` existed were trained with (raylurm.train.checkpoint.build_model)
    legacy_options = {"views": "calendar", "sparse_gradients": False}

    @staticmethod
    def training_inputs(config: LURMConfig, info: DataInfo, boi_dir, seed: int = 0):
        """What the training loop adds to every batch: the event-level views (``None`` with calendar windows)."""
        if config.views != "events":
            return None
        from raylurm.train.views import EventViews, ItemInterests  # numpy/pyarrow side of training only

        return EventViews(ItemInterests.from_boi(boi_dir), SCALES[config.scales], config.min_window_fraction, seed)

    def __init__(self, config: LURMConfig, info: DataInfo):
        super().__init__()
        self.config, self.scales = config, SCALES[config.scales]
        missing = [s for s in self.scales if s not in info.scales]
        if missing:
            raise ValueError(f"scales={config.scales!r} needs BoI scale(s) {missing}; the data has {list(info.scales)}")
        m, h = config.num_anchors, config.hidden_dim
        self.anchors = MultiAnchorBoI(info.num_interests, m, h, sparse=config.sparse_gradients)  # eq. 5-6, shared by the scales
        self.time = TimeAggregation(h)  # §3.2.2, shared by the anchors and the scales
        self.switch = ScaleSwitch(m, h) if len(self.scales) == 2 else None  # eq. 7
        self.head = ProjectionHead(m, h)  # eq. 8-9

    @property
    def representation_dim(self) -> int:
        return self.config.num_anchors * self.config.hidden_dim

    def anchor_bags(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eq. 5-6 for the bags of every scale in one call (shared parameters) -> {scale: r (bags_s, M, H)}."""
        ids = [batch[f"{s}_ids"] for s in self.scales]
        offsets = [batch[f"{s}_offsets"] + sum(i.numel() for i in ids[:k]) for k, s in enumerate(self.scales)]
        values = torch.cat([batch[f"{s}_values"] for s in self.scales])
        r = self.anchors(torch.cat(ids), values, torch.cat(offsets))  # (all bags, M, H) month bags first
        return dict(zip(self.scales, r.split([o.numel() for o in offsets])))

    def aggregate(self, r: torch.Tensor, lengths: torch.Tensor,
                  keeps: list[torch.Tensor] | None = None) -> torch.Tensor:
        """One scale's r (bags, M, H) -> r̃ (V, B, M, H) for V views (bag masks ``keeps``), or V = 1 (all bags).

        Eq. 5-6 ran once over all bags; a view only selects bags before the GRU.
        """
        if keeps is None:
            return self.time(r, lengths)[None]  # (1, B, M, H)
        user = _bag_users(lengths)  # (bags,)
        r_views = torch.cat([r[keep] for keep in keeps])  # (kept bags of all views, M, H)
        lengths_views = torch.cat([torch.bincount(user[keep], minlength=lengths.numel()) for keep in keeps])  # (V·B,)
        return self.time(r_views, lengths_views).view(len(keeps), lengths.numel(), *r.shape[1:])

    def encode(self, batch: dict[str, torch.Tensor],
               keeps: list[dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
        """-> r̂ (V, B, M, H): eq. 7 across the scales' r̃, or the single scale's r̃."""
        r = self.anchor_bags(batch)
        states = [self.aggregate(r[s], batch[f"{s}_lengths"], None if keeps is None else [k[s] for k in keeps])
                  for s in self.scales]  # each (V, B, M, H)
        return states[0] if self.switch is None else self.switch(*states)

    def project_views(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Two views per user -> head outputs h_a, h_b (B, M·H) and what to report of the views: the share of
        identical view pairs (event-level views) or of bags inside a window (calendar windows)."""
        if self.config.views == "events":
            h = self.head(self.encode(merge_views(batch, self.scales))[0])  # (2B, M·H): the 2B users of both views, one pass
            report = {"identical_views": batch["identical_views"].detach().float()}
        else:
            keeps = [sample_windows(batch, self.scales, self.config.min_window_fraction) for _ in range(2)]
            h = self.head(self.encode(batch, keeps).flatten(0, 1))  # (2, B, M, H) -> (2B, M·H)
            kept = torch.cat([keep[self.scales[0]] for keep in keeps]).float()
            report = {"window_kept_fraction": kept.sum() / max(kept.numel(), 1)}  # finest scale's bags inside a window
        h_a, h_b = h.chunk(2)
        return h_a, h_b, report

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training step: InfoNCE (eq. 2-3) between two views of each user; other users are negatives."""
        h_a, h_b, report = self.project_views(batch)
        h_a, h_b = gather_with_grad(h_a), gather_with_grad(h_b)
        return {"loss": info_nce(h_a, h_b, self.config.temperature),
                "loss_chance": torch.tensor(math.log(max(2 * h_a.shape[0] - 1, 1))),  # uniform over the 2n - 1 others
                **report}

    @torch.no_grad()
    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Frozen representation ``[r̂^1 … r̂^M]`` (B, M·H) over the whole history (no windows)."""
        return self.encode(batch)[0].flatten(1)
