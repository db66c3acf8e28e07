"""Sampled softmax cross-entropy: one positive against a few negatives per row (ATRank, next item).

Pure torch (no Ray, no process groups). Column 0 of each row is the positive, columns 1..N are its
negatives (sampled uniformly from the catalogue, or the other users' targets in the batch). With a
uniform proposal the usual ``log Q`` correction is the same constant for every column and cancels;
with in-batch negatives it would not (popular items are over-sampled) and is not applied here.
"""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "none")


def check_sampled_logits(logits: torch.Tensor, keep: torch.Tensor | None, reduction: str) -> None:
    """Shared argument checks: ``logits`` (B, 1 + N), ``keep`` (B, N) bool or None."""
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be (B, 1 + N) with the positive in column 0, got {tuple(logits.shape)}")
    if keep is not None and keep.shape != (logits.shape[0], logits.shape[1] - 1):
        raise ValueError(f"keep must be (B, N) = {(logits.shape[0], logits.shape[1] - 1)}, got {tuple(keep.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def sampled_softmax(logits: torch.Tensor, keep: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """``-log exp(s_0) / (exp(s_0) + Σ_{j ≥ 1, keep_j} exp(s_j))`` per row.

    Args:
        logits: ``(B, 1 + N)`` scores; column 0 is the positive.
        keep: optional ``(B, N)`` bool, False where a negative must not count (an accidental hit:
            the positive item drawn again as a negative, or a padding/invalid candidate).
        reduction: ``"mean"`` over rows (scalar) or ``"none"`` (``(B,)``).
    """
    check_sampled_logits(logits, keep, reduction)
    if keep is not None:
        negatives = logits[:, 1:].masked_fill(~keep.to(torch.bool), float("-inf"))  # (B, N)
        logits = torch.cat([logits[:, :1], negatives], dim=1)  # (B, 1 + N)
    rows = torch.logsumexp(logits, dim=1) - logits[:, 0]  # (B,)
    return rows.mean() if reduction == "mean" else rows
