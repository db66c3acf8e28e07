"""DSS losses (Ma et al., KDD'20, §4.2.2): seq2item, latent seq2seq, and high-confidence selection.

Pure torch. Scores are scaled dot products ``x·y/√D`` as in the paper. Both contrastive losses
take their candidates (next items, or future-sequence intentions) as an ``(N, ...)`` tensor that
may hold other workers' rows too (``gather_with_grad``); ``targets`` says which row is each
sample's positive, and ``candidate_mask`` drops rows that are no sample (a user with no cut).
"""

from __future__ import annotations

import math

import torch

from raylurm.losses.next_item import catalogue_cross_entropy

CATALOGUE_ELEMENTS = 1 << 26  # scores held at once against the whole catalogue (256 MB float32; memory bound only)


def _masked(logits: torch.Tensor, candidate_mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Set the logits of masked-out candidates (along ``dim``) to -inf."""
    if candidate_mask is None:
        return logits
    shape = [1] * logits.ndim
    shape[dim] = -1
    return logits.masked_fill(~candidate_mask.to(torch.bool).view(shape), float("-inf"))


def seq2item_losses(intentions: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor,
                    candidate_mask: torch.Tensor | None = None, scale: float | None = None,
                    over: str = "pairs") -> torch.Tensor:
    """Per-sample seq2item loss, DSS eq. 5-6 (in-batch next items as the candidates).

    ``L_s2i(u, t) = −ln [max_k exp(h_{t+1}·φ^(k)(x_{1:t})/√D)
                         / Σ_{(u',t')∈B} Σ_{k'} exp(h_{t'+1}·φ^(k')(x_{1:t})/√D)]``

    Args:
        intentions: ``(B, K, D)`` φ^(k)(x_{1:t}) of each sample's input sequence.
        candidates: ``(N, D)`` next-item embeddings h_{t'+1} of every sample of the (global) batch.
        targets: ``(B,)`` row of ``candidates`` holding each sample's own next item.
        candidate_mask: optional ``(N,)`` bool, False for rows that are not a sample.

    Returns:
        ``(B,)`` losses.
    """
    scale = 1.0 / math.sqrt(intentions.shape[-1]) if scale is None else scale  # the paper's 1/√D by default
    scores = torch.einsum("bkd,nd->bnk", intentions, candidates) * scale  # (B, N, K)
    positive = scores[torch.arange(scores.shape[0], device=scores.device), targets].amax(dim=-1)  # (B,)
    scores = _masked(scores, candidate_mask, dim=1)
    if over == "items":  # each candidate's best intention, as a ranking by max_k scores it
        return torch.logsumexp(scores.amax(dim=-1), dim=1) - positive  # (B,)
    return torch.logsumexp(scores.flatten(1), dim=1) - positive  # (B,)


def catalogue_seq2item_losses(intentions: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                              max_elements: int = CATALOGUE_ELEMENTS, scale: float | None = None,
                              over: str = "pairs") -> torch.Tensor:
    """Per-sample seq2item loss of eq. 5-6 with the whole catalogue as the candidates.

    ``L(u, t) = −ln [max_k exp(h_{x_{t+1}}·φ^(k)/√D) / Σ_{j ∈ catalogue} Σ_{k'} exp(h_j·φ^(k')/√D)]``
    (``over="pairs"``, the paper); ``over="items"`` normalises by ``Σ_j max_k exp(h_j·φ^(k)/√D)``,
    the cross-entropy of the ``max_k`` score the ranking uses;
    at most ``max_elements`` scores (B × C × K) held at once (the fused
    :func:`raylurm.losses.next_item.catalogue_cross_entropy`). intentions (B, K, D), items (C, D),
    targets (B,) in [0, C) -> (B,).
    """
    scale = 1.0 / math.sqrt(intentions.shape[-1]) if scale is None else scale  # the paper's 1/√D by default
    return catalogue_cross_entropy(intentions, items, targets, scale, max_elements, over=over)


def seq2seq_losses(intentions: torch.Tensor, future_intentions: torch.Tensor, targets: torch.Tensor,
                   candidate_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-(sample, intention) latent seq2seq loss, DSS eq. 3.

    ``L_s2s(u, t, k) = −ln [exp(φ^(k)(x_{T:t+1})·φ^(k)(x_{1:t})/√D)
                            / Σ_{(u',t')∈B} Σ_{k'} exp(φ^(k')(x'_{T:t'+1})·φ^(k)(x_{1:t})/√D)]``

    Args:
        intentions: ``(B, K, D)`` φ^(k)(x_{1:t}) of each sample's input sequence.
        future_intentions: ``(N, K, D)`` φ^(k')(x_{T:t'+1}) of every reversed future sequence of the (global) batch.
        targets: ``(B,)`` row of ``future_intentions`` holding each sample's own future.
        candidate_mask: optional ``(N,)`` bool, False for rows that are not a sample.

    Returns:
        ``(B, K)`` losses.
    """
    b, k, d = intentions.shape
    scores = torch.einsum("bkd,nld->bknl", intentions, future_intentions) / math.sqrt(d)  # (B, K, N, K)
    rows, cats = torch.arange(b, device=scores.device)[:, None], torch.arange(k, device=scores.device)[None, :]
    positive = scores[rows, cats, targets[:, None], cats]  # (B, K)
    scores = _masked(scores, candidate_mask, dim=2)
    return torch.logsumexp(scores.flatten(2), dim=2) - positive  # (B, K)


def select_smallest(losses: torch.Tensor, fraction: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """High-confidence seq2seq samples, DSS eq. 4: keep the ⌊λ·M⌋ smallest of the M valid losses.

    The paper keeps ``L ≤ τ`` with τ the ⌊λ·|B|·K⌋-th smallest loss; this keeps exactly that many
    (ties broken by ``topk``). Selection uses the current values only (no gradient).

    Args:
        losses: any shape, e.g. ``(B, K)``.
        fraction: λ in [0, 1].
        valid: optional bool of the same shape; invalid entries are never kept and not counted in M.

    Returns:
        bool mask of ``losses``'s shape, True on the kept entries.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    flat = losses.detach().flatten()
    valid_flat = torch.ones_like(flat, dtype=torch.bool) if valid is None else valid.flatten().to(torch.bool)
    count = math.floor(fraction * int(valid_flat.sum()) + 1e-9)  # ⌊λ·|B|·K⌋ (epsilon: 0.29·100 is 28.999…)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.masked_fill(~valid_flat, float("inf")).topk(count, largest=False).indices] = True
    return keep.view(losses.shape)
