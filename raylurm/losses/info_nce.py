"""Loss functions as pure torch functions: no Ray, no process groups, testable in milliseconds."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over the 2n embeddings of n positive pairs (LURM eq. 2-3, reused by eq. 9).

    The batch is ``Δ = {a_1, b_1, ..., a_n, b_n}``. With ``g`` the cosine similarity, eq. 2 is
    ``l(a_i, b_i) = -log exp(g(a_i, b_i)/τ) / Σ_{ν ∈ Δ, ν ≠ a_i} exp(g(a_i, ν)/τ)``: the positive
    is the partner, the negatives are the other 2n - 2 embeddings, the anchor itself is excluded.
    Eq. 3 averages ``l(a_i, b_i) + l(b_i, a_i)`` over the 2n embeddings.

    Args:
        a: ``(n, d)`` first view of each pair (need not be normalised).
        b: ``(n, d)`` second view; row ``i`` is the positive of ``a[i]``.
        temperature: τ > 0.
        exclude: optional ``(2n, 2n)`` bool, True where a logit must not count as a negative,
            e.g. a second copy of the same item in the batch (an "accidental hit": it cannot be
            told apart from the positive). Rows follow ``cat([a, b])``; the positive and the
            diagonal are handled here whatever ``exclude`` holds.

    Returns:
        The scalar mean loss. (Negatives gathered from other workers, MoCo-style, would add
        columns to ``logits`` and keep ``targets``; that belongs to a later distributed variant.)
    """
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(f"a and b must both be (n, d) with the same shape and n >= 1, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = a.shape[0]
    if exclude is not None and exclude.shape != (2 * n, 2 * n):
        raise ValueError(f"exclude must be (2n, 2n) = {(2 * n, 2 * n)}, got {tuple(exclude.shape)}")
    z = F.normalize(torch.cat([a, b]), dim=1)  # (2n, d)
    logits = z @ z.T / temperature  # (2n, 2n)
    targets = (torch.arange(2 * n, device=z.device) + n) % (2 * n)  # a_i <-> b_i
    mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)  # ν ≠ anchor
    if exclude is not None:
        mask = mask | exclude.to(device=z.device, dtype=torch.bool)
        mask[torch.arange(2 * n, device=z.device), targets] = False  # the positive always counts
        mask.fill_diagonal_(True)
    logits = logits.masked_fill(mask, float("-inf"))  # (2n, 2n)
    return F.cross_entropy(logits, targets)
