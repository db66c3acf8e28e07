"""Next-item cross-entropy over a whole catalogue, exact or sampled with the log-Q correction.

Pure torch. ``queries`` (N, D) are sequence states (one per trained position), ``targets`` (N,)
their next items as rows of ``items`` (C, D), the catalogue's output embeddings.

* :func:`catalogue_softmax` — the full softmax ``-log softmax(q·Eᵀ)[target]`` over all C items.
  Up to ``max_elements`` logits it is one ``cross_entropy``; beyond, it runs in chunks of rows,
  each recomputed in the backward pass (``torch.utils.checkpoint``), so at most ``max_elements``
  logits are held (a step of 128 ML-1M users, ~15k positions × 3.9k items, fits in one piece:
  no recomputation on the catalogues this project ships).
* :func:`sampled_softmax_logq` — for catalogues too large for that: the positive against S shared
  sampled negatives, every logit corrected by ``- log Q(item)`` (the sampling probability; Yi et
  al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations", RecSys
  2019), with accidental hits (a negative equal to the row's target) masked out. Many negatives
  matter: Petrov & Macdonald, "gSASRec" (RecSys 2023), and "Turning Dross Into Gold Loss"
  (RecSys 2023) show SASRec trained with one negative is far from its full-softmax accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

FULL_SOFTMAX_ELEMENTS = 1 << 26  # logits held at once (256 MB float32; memory bound only: results are identical)


def _chunk_loss(queries: torch.Tensor, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(queries @ items.T, targets, reduction="none")  # (n,)


def catalogue_softmax(queries: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                      max_elements: int = FULL_SOFTMAX_ELEMENTS) -> torch.Tensor:
    """Per-row full-softmax cross-entropy: queries (N, D), items (C, D), targets (N,) in [0, C) -> (N,)."""
    if queries.ndim != 2 or items.ndim != 2 or queries.shape[1] != items.shape[1]:
        raise ValueError(f"queries (N, D) and items (C, D) must share D, got {tuple(queries.shape)}, {tuple(items.shape)}")
    if targets.shape != queries.shape[:1]:
        raise ValueError(f"targets must be (N,) = ({queries.shape[0]},), got {tuple(targets.shape)}")
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1, got {max_elements}")
    if queries.shape[0] * items.shape[0] <= max_elements:
        return _chunk_loss(queries, items, targets)
    chunk = max(1, max_elements // max(1, items.shape[0]))
    parts = []
    for start in range(0, queries.shape[0], chunk):
        q, t = queries[start:start + chunk], targets[start:start + chunk]
        needs_grad = torch.is_grad_enabled() and (q.requires_grad or items.requires_grad)
        parts.append(checkpoint(_chunk_loss, q, items, t, use_reentrant=False) if needs_grad else _chunk_loss(q, items, t))
    return torch.cat(parts) if parts else queries.new_zeros(0)


def sampled_softmax_logq(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                         positive_log_q: torch.Tensor, negative_log_q: torch.Tensor, hits: torch.Tensor) -> torch.Tensor:
    """Per-row sampled softmax with log-Q correction and accidental-hit masking -> (N,).

    Args:
        queries: ``(N, D)`` states; positives: ``(N, D)`` their targets' output embeddings.
        negatives: ``(S, D)`` shared sampled items; ``negative_log_q`` ``(S,)`` their log sampling
            probabilities, ``positive_log_q`` ``(N,)`` the targets'.
        hits: ``(N, S)`` bool, True where negative s is row n's target (masked out).
    """
    if hits.shape != (queries.shape[0], negatives.shape[0]):
        raise ValueError(f"hits must be (N, S) = {(queries.shape[0], negatives.shape[0])}, got {tuple(hits.shape)}")
    positive = (queries * positives).sum(dim=-1) - positive_log_q  # (N,)
    negative = (queries @ negatives.T - negative_log_q[None, :]).masked_fill(hits, float("-inf"))  # (N, S)
    logits = torch.cat([positive[:, None], negative], dim=1)  # (N, 1 + S)
    return torch.logsumexp(logits, dim=1) - positive
