"""Item embeddings from co-occurrence, for data without useful text (LURM §3.1.1: "other methods ... are feasible").

The β-window pairs of :mod:`raylurm.boi.embeddings.pairs` counted into a sparse item x item
matrix, weighted by PPMI, factorised by randomized SVD (``U sqrt(S)``). Items that never
co-occur with another item get the zero vector.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from raylurm.boi.embeddings.config import ItemEmbeddingConfig
from raylurm.boi.embeddings.pairs import Bounds, EventLog, sample_partners
from raylurm.data.errors import DataError

logger = logging.getLogger(__name__)

_SVD_OVERSAMPLING = 10  # extra columns for torch.svd_lowrank (Halko et al.: q = k + 5..10)
_SVD_ITERATIONS = 4
_CONTEXT_SMOOTHING = 0.75  # PPMI context-distribution smoothing (Levy, Goldberg & Dagan, 2015)


def cooccurrence_counts(log: EventLog, bounds: Bounds, budget: int, num_items: int,
                        rng: np.random.Generator) -> torch.Tensor:
    """Symmetric sparse (N, N) counts of sampled β-window pairs. Every event with a window partner
    anchors ``ceil(budget / #such events)`` draws (rather than random anchors), so rare items are
    covered; pairs on one item are dropped."""
    eligible = np.flatnonzero(bounds[1] - bounds[0] > 1)
    if eligible.size == 0:
        raise DataError("no positive pairs: no user has two events closer than the window β")
    anchors, partners = sample_partners(log, bounds, np.repeat(eligible, -(-budget // eligible.size)), rng)
    x, y = log.item[anchors], log.item[partners]
    indices = torch.from_numpy(np.stack([np.concatenate([x, y]), np.concatenate([y, x])]))  # (2, 2P)
    values = torch.ones(indices.shape[1], dtype=torch.float64)
    return torch.sparse_coo_tensor(indices, values, (num_items, num_items), check_invariants=True).coalesce()


def ppmi(counts: torch.Tensor, smoothing: float = _CONTEXT_SMOOTHING) -> torch.Tensor:
    """``max(0, log c_ij - log c_i - log P_α(j))`` on the non-zeros of symmetric sparse counts,
    ``P_α(j) = c_j^α / Σ_k c_k^α`` (context smoothing); float32 sparse (N, N)."""
    (i, j), c = counts.indices(), counts.values()
    row = torch.zeros(counts.shape[0], dtype=c.dtype).index_add_(0, i, c)  # (N,) = column sums
    context = row.pow(smoothing)
    pmi = c.log() - row[i].log() - (context[j] / context.sum()).log()  # (nnz,)
    keep = pmi > 0
    indices, values = counts.indices()[:, keep], pmi[keep].float()
    return torch.sparse_coo_tensor(indices, values, counts.shape, check_invariants=True).coalesce()


def svd_vectors(matrix: torch.Tensor, dim: int) -> np.ndarray:
    """Unit rows of ``U sqrt(S)`` from a rank-``dim`` randomized SVD of a sparse (N, N) matrix;
    empty rows stay zero. Width ``dim`` (zero-padded when N < dim)."""
    n = matrix.shape[0]
    u, s, _ = torch.svd_lowrank(matrix, q=min(dim + _SVD_OVERSAMPLING, n), niter=_SVD_ITERATIONS)
    vectors = torch.zeros(n, dim)
    k = min(dim, s.numel())
    vectors[:, :k] = u[:, :k] * s[:k].sqrt()  # (N, k)
    empty = torch.zeros(n, dtype=torch.bool).index_fill_(0, matrix.indices()[0], True).logical_not()
    vectors[empty] = 0.0
    return F.normalize(vectors, dim=1).numpy()


def fit_cooccurrence(items: pa.Table, log: EventLog, bounds: Bounds, config: ItemEmbeddingConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Windowed co-occurrence -> PPMI -> randomized SVD; items without co-occurrence get zeros."""
    counts = cooccurrence_counts(log, bounds, config.epochs * config.pairs_per_epoch, items.num_rows, rng)
    weights = ppmi(counts)
    vectors = svd_vectors(weights, config.dim)
    missing = int((np.abs(vectors).sum(axis=1) == 0).sum())
    if missing:
        logger.warning("%d of %d item(s) have no co-occurrence within %g days: their vectors are zero",
                       missing, items.num_rows, config.window_days)
    metrics = {"pairs": int(counts.values().sum().item()) // 2, "nonzeros": int(weights.values().numel()),
               "items_without_cooccurrence": missing}
    return vectors, metrics  # (N, dim) unit or zero rows, metrics
