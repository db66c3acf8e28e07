"""AdaptSSR's multiple pairwise ranking (MPR) loss with in-batch hard negatives and its adaptive λ.

Pure torch functions (no Ray, no process groups). Notation of the paper (AdaptSSR, §"Multiple
Pairwise Ranking with In-batch Hard Negative Sampling" and §"Augmentation-Adaptive Fusion"):
each sequence S_i gets two explicit augmentations Ŝ_i, S̃_i; each is encoded twice with
independent dropout masks, giving û_i, û_i⁺ and ũ_i, ũ_i⁺. The similarity ``sim`` is the cosine
similarity (the public code L2-normalises the representations before its dot products, and λ_i
is only a weight in [0, 1] with a cosine sim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LAMBDA_MODES = ("per_sample", "batch_mean", "fixed")


def adaptive_lambda(hat: torch.Tensor, hat_pos: torch.Tensor, tilde: torch.Tensor,
                    tilde_pos: torch.Tensor) -> torch.Tensor:
    """Augmentation-adaptive coefficient, detached: ``λ_i = 1 - ¼ Σ_ŝ Σ_s̃ max(sim(ŝ, s̃), 0)``.

    ŝ ∈ {û_i, û_i⁺}, s̃ ∈ {ũ_i, ũ_i⁺}. All inputs ``(B, D)``; returns ``(B,)`` in [0, 1]. λ_i is a
    weight, not a target: gradients are stopped (the public code ``.detach()``es it; the paper
    does not say).
    """
    a = F.normalize(torch.stack([hat, hat_pos], dim=1), dim=-1)  # (B, 2, D)
    b = F.normalize(torch.stack([tilde, tilde_pos], dim=1), dim=-1)  # (B, 2, D)
    sims = torch.einsum("bid,bjd->bij", a, b).clamp(min=0)  # (B, 2, 2)
    return (1 - sims.sum(dim=(1, 2)) / 4).detach()


def resolve_lambda(lam: torch.Tensor, mode: str, fixed_lambda: float = 0.5) -> torch.Tensor:
    """The λ the loss uses, ``(B,)``: ``per_sample`` λ_i (paper), ``batch_mean`` (public code:
    one λ for the batch, the mean of ``lam``), or ``fixed`` (a constant hyper-parameter)."""
    if mode == "per_sample":
        return lam
    if mode == "batch_mean":
        return lam.mean().expand_as(lam)
    if mode == "fixed":
        return torch.full_like(lam, fixed_lambda)
    raise ValueError(f"lambda mode must be one of {LAMBDA_MODES}, got {mode!r}")


def pairwise_ranking(anchor: torch.Tensor, positive: torch.Tensor, semi: torch.Tensor, negatives: torch.Tensor,
                     own: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Per-anchor MPR loss with in-batch hard negatives (the paper's second L̂_i equation).

    ``L̂_i = -log σ[λ_i (sim(a_i, p_i) - max_v sim(a_i, v)) + (1 - λ_i)(min_v sim(a_i, v) - max_w sim(a_i, w))]``
    with v over ``semi[i]`` and w over every view of every user in ``negatives`` except row ``own[i]``.

    Args:
        anchor, positive: ``(B, D)`` û_i and û_i⁺ (the same view under another dropout mask).
        semi: ``(B, K, D)`` the other view's encodings {ũ_i, ũ_i⁺} (K = 2).
        negatives: ``(N, V, D)`` all views of all users of the (global) batch; row ``own[i]`` is user i.
        own: ``(B,)`` int64 row of each anchor's user in ``negatives`` (excluded from U_i⁻).
        lam: ``(B,)`` the weight λ_i.
    Returns:
        ``(B,)`` per-anchor losses.
    """
    if negatives.shape[0] < 2:
        raise ValueError("MPR needs at least one other user in the batch as a negative")
    a, p = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)  # (B, D)
    s, n = F.normalize(semi, dim=-1), F.normalize(negatives, dim=-1)  # (B, K, D), (N, V, D)
    sim_pos = (a * p).sum(-1)  # (B,)
    sim_semi = torch.einsum("bd,bkd->bk", a, s)  # (B, K)
    sim_neg = torch.einsum("bd,nvd->bnv", a, n)  # (B, N, V)
    is_own = torch.arange(n.shape[0], device=a.device)[None, :] == own[:, None]  # (B, N)
    hardest_neg = sim_neg.masked_fill(is_own[:, :, None], float("-inf")).flatten(1).amax(1)  # (B,)
    first = sim_pos - sim_semi.amax(1)  # sim(u, u⁺) ≥ sim(u, û)
    second = sim_semi.amin(1) - hardest_neg  # sim(u, û) ≥ sim(u, u⁻)
    return -F.logsigmoid(lam * first + (1 - lam) * second)


def mpr_loss(hat: torch.Tensor, hat_pos: torch.Tensor, tilde: torch.Tensor, tilde_pos: torch.Tensor,
             lam: torch.Tensor, negatives: torch.Tensor | None = None, own: torch.Tensor | None = None) -> torch.Tensor:
    """``L = Σ_i (L̂_i + L̃_i) / 2B``; L̃_i is L̂_i with the two views swapped (anchor ũ_i, positive ũ_i⁺).

    ``hat``, ``hat_pos``, ``tilde``, ``tilde_pos``: ``(B, D)``; ``lam``: ``(B,)``. ``negatives``
    ``(N, 4, D)`` and ``own`` ``(B,)`` default to this batch's four views and ``arange(B)``; under
    DDP pass the views gathered from every worker and the anchors' global rows.
    """
    if negatives is None:
        negatives = torch.stack([hat, hat_pos, tilde, tilde_pos], dim=1)  # (B, 4, D)
        own = torch.arange(hat.shape[0], device=hat.device)
    if own is None:
        raise ValueError("own (each anchor's row in negatives) is required when negatives are given")
    loss_hat = pairwise_ranking(hat, hat_pos, torch.stack([tilde, tilde_pos], 1), negatives, own, lam)  # (B,)
    loss_tilde = pairwise_ranking(tilde, tilde_pos, torch.stack([hat, hat_pos], 1), negatives, own, lam)  # (B,)
    return (loss_hat + loss_tilde).mean() / 2
