"""Encoder pieces that more than one method may reuse. Pure torch: no Ray, no process groups.

* :class:`MultiAnchorBoI` — LURM's multi-anchor module (LURM, Yang et al., §3.2.1, eq. 5-6) over sparse
  BoI bags in the batch contract's ``(ids, values, offsets)`` form (``raylurm.train.batch``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiAnchorBoI(nn.Module):
    """Sparse BoI bags -> M anchor representations per bag (LURM eq. 5-6).

    For one BoI vector ``b ∈ R^D`` (one period of one user) and anchors ``i = 1..M``::

        r^i  = ReLU(Σ_j α_ij b_j W^e_j)                              (eq. 5)
        α_ij = exp(W^a_i·k_j) / Σ_l exp(W^a_l·k_j),  k_j = W^p ReLU(W^e_j)   (eq. 6)

    The softmax of eq. 6 runs over the anchors ``i`` for each interest ``j``: every interest splits
    its whole mass between the anchors. Parameters: ``W^e ∈ R^{D×H}`` = ``interest.weight``,
    ``W^a ∈ R^{M×H}`` = ``anchor.weight``, ``W^p ∈ R^{H×H}`` = ``key.weight`` (no biases, as in
    the paper).

    Only the non-zeros of ``b`` are touched: the rows ``W^e_j`` of the batch's distinct ids are
    gathered once (U, H) (so ``W^e`` gets one gradient scatter of U rows per call), α is computed
    for those U interests only (it depends on j alone), and the per-bag sums
    ``Σ_j (α_j b_j) ⊗ W^e_j`` are segment sums over the bags' offsets (:func:`bag_outer_sums`).
    Nothing of width D and no ``(N, M, H)`` tensor is built: memory is O(N·M + U·H + bags·M·H)
    for N non-zeros.

    ``sparse=True`` gives ``W^e`` a sparse gradient (rows touched by the batch only). It then needs
    ``torch.optim.SparseAdam`` (or SGD) for ``W^e``: ``torch.optim.Adam`` rejects sparse gradients.
    """

    def __init__(self, num_interests: int, num_anchors: int, hidden_dim: int, sparse: bool = False):
        super().__init__()
        if min(num_interests, num_anchors, hidden_dim) < 1:
            raise ValueError(f"num_interests, num_anchors and hidden_dim must be >= 1, "
                             f"got {num_interests}, {num_anchors}, {hidden_dim}")
        self.num_anchors, self.hidden_dim = num_anchors, hidden_dim
        self.interest = nn.Embedding(num_interests, hidden_dim, sparse=sparse)  # W^e (D, H)
        self.key = nn.Linear(hidden_dim, hidden_dim, bias=False)  # W^p (H, H)
        self.anchor = nn.Linear(hidden_dim, num_anchors, bias=False)  # W^a (M, H)

    def attention(self, e: torch.Tensor) -> torch.Tensor:
        """Eq. 6 for gathered rows ``e = W^e[ids]`` (N, H): α (N, M), each row a softmax over the M anchors."""
        k = self.key(F.relu(e))  # (N, H) k_j = W^p ReLU(W^e_j)
        return torch.softmax(self.anchor(k), dim=1)  # (N, M) α_ij, normalised over anchors i

    def forward(self, ids: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Eq. 5 for every bag.

        Args:
            ids: ``(N,)`` int64 interest ids of all non-zeros, bag after bag.
            values: ``(N,)`` float ``b_j`` of those non-zeros.
            offsets: ``(bags,)`` int64 start of each bag in ``ids`` (``offsets[0] == 0``).

        Returns:
            ``(bags, M, H)``: ``out[t, i] = r^i`` of bag ``t``.
        """
        unique, inverse = torch.unique(ids, return_inverse=True)  # (U,), (N,): α_ij depends on j only
        e = self.interest(unique)  # (U, H) rows W^e_j of the distinct interests
        weights = self.attention(e)[inverse] * values[:, None].to(e.dtype)  # (N, M) α_ij b_j
        return F.relu(bag_outer_sums(weights, e, inverse, offsets))  # (bags, M, H) eq. 5


def bag_outer_sums(weights: torch.Tensor, table: torch.Tensor, index: torch.Tensor,
                   offsets: torch.Tensor) -> torch.Tensor:
    """Per bag, ``Σ_{n ∈ bag} weights_n ⊗ table[index_n]``.

    Args:
        weights: ``(N, M)`` one weight per non-zero and anchor.
        table: ``(U, H)`` rows, read through ``index`` ``(N,)``.
        offsets: ``(bags,)`` start of each bag among the N non-zeros.

    Returns:
        ``(bags, M, H)``; empty bags give 0. A segment sum of outer products without the (N, M, H)
        tensor: ONE ``embedding_bag`` over ``index`` repeated once per anchor (M·bags bags,
        anchor-major), ``per_sample_weights`` = column i of ``weights`` for copy i. (Tried: a
        zero-padded bmm per power-of-two bag-size bucket, which reads each row once; on an H100 it
        was 3x slower for small bags and 20x slower for large ones, its gather-backward the bottleneck.)
    """
    n, m, bags = index.numel(), weights.shape[1], offsets.numel()
    if n == 0 or bags == 0:
        return table.new_zeros(bags, m, table.shape[1])
    copy_offsets = (offsets[None, :] + n * torch.arange(m, device=offsets.device)[:, None]).reshape(-1)  # (M·bags,)
    sums = F.embedding_bag(index.repeat(m), table, copy_offsets, mode="sum", per_sample_weights=weights.T.reshape(-1))
    return sums.view(m, bags, -1).transpose(0, 1)  # (bags, M, H)
