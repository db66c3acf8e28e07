"""Point-wise sigmoid cross-entropy with sampled negatives (ATRank's public code: one random negative).

Pure torch. Column 0 of each row is a positive example (label 1), columns 1..N negatives (label 0).
Each row averages its ``1 + #kept`` binary cross-entropies, so with one negative per positive the
mean over rows equals the mean over the 2B point-wise examples, as in the *(code)* facts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raylurm.losses.sampled_softmax import check_sampled_logits


def sampled_sigmoid(logits: torch.Tensor, keep: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """``[-log σ(s_0) - Σ_{j ≥ 1, keep_j} log(1 - σ(s_j))] / (1 + Σ_j keep_j)`` per row.

    Args:
        logits: ``(B, 1 + N)`` scores; column 0 is the positive.
        keep: optional ``(B, N)`` bool, False where a negative must not count (accidental hit).
        reduction: ``"mean"`` over rows (scalar) or ``"none"`` (``(B,)``).
    """
    check_sampled_logits(logits, keep, reduction)
    keep = torch.ones_like(logits[:, 1:], dtype=torch.bool) if keep is None else keep.to(torch.bool)
    negatives = F.softplus(logits[:, 1:]).masked_fill(~keep, 0.0).sum(dim=1)  # (B,)  -log(1 - σ(s)) = softplus(s)
    rows = (F.softplus(-logits[:, 0]) + negatives) / (1 + keep.sum(dim=1))  # (B,)
    return rows.mean() if reduction == "mean" else rows
