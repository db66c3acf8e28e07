"""Co-occurrence item embeddings: ``ppmi`` against a dense numpy PPMI, ``svd_vectors`` against numpy's SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raylurm.boi.embeddings.cooccurrence import ppmi, svd_vectors


def _sparse(dense: np.ndarray) -> torch.Tensor:
    i, j = np.nonzero(dense)
    return torch.sparse_coo_tensor(torch.from_numpy(np.stack([i, j])), torch.from_numpy(dense[i, j]),
                                   dense.shape, check_invariants=True).coalesce()


def _counts(n: int, seed: int, empty: tuple[int, ...] = (2, 7)) -> np.ndarray:
    """Random symmetric float64 pair counts with a zero diagonal; the ``empty`` items never co-occur."""
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.poisson(rng.gamma(0.5, 2.0, size=(n, n))), k=1).astype(np.float64)
    counts = upper + upper.T
    counts[list(empty)] = 0
    counts[:, list(empty)] = 0
    return counts


def naive_ppmi(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """max(0, log P(i, j) / (P(i) P_α(j))) with P_α(j) = c_j^α / Σ_k c_k^α, on the non-zero counts."""
    total = counts.sum()
    p_i = counts.sum(axis=1) / total
    context = counts.sum(axis=0) ** smoothing
    p_context = context / context.sum()
    out = np.zeros_like(counts)
    for i, j in zip(*np.nonzero(counts)):
        out[i, j] = max(0.0, np.log((counts[i, j] / total) / (p_i[i] * p_context[j])))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_ppmi_matches_a_dense_reference_with_context_smoothing(seed):
    counts = _counts(12, seed)
    got = ppmi(_sparse(counts))
    assert got.is_coalesced() and got.dtype == torch.float32 and tuple(got.shape) == counts.shape
    want = naive_ppmi(counts, smoothing=0.75)
    np.testing.assert_allclose(got.to_dense().numpy(), want, rtol=1e-5, atol=1e-6)
    assert (got.values() > 0).all()  # only positive PMI is stored
    assert got.values().numel() == int((want > 0).sum()) < int((counts > 0).sum())  # some pairs are cut to 0


def test_ppmi_without_smoothing_is_classic_pmi_and_symmetric():
    counts = _counts(10, 4)
    got = ppmi(_sparse(counts), smoothing=1.0).to_dense().numpy()
    rows = counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        classic = np.where(counts > 0, np.log(counts * counts.sum() / np.outer(rows, rows)), 0.0)
    np.testing.assert_allclose(got, np.maximum(classic, 0.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, got.T, rtol=1e-6)  # α = 1 keeps the symmetry; smoothing breaks it (by design)


def test_ppmi_a_single_pair():
    """Two items that only co-occur with each other: PMI = log(c · T / (c · c)) = log 2 with T = 2c."""
    got = ppmi(_sparse(np.array([[0.0, 3.0], [3.0, 0.0]])), smoothing=1.0).to_dense().numpy()
    np.testing.assert_allclose(got, [[0.0, np.log(2)], [np.log(2), 0.0]], rtol=1e-6)


def _low_rank(n: int, rank: int, seed: int, empty: tuple[int, ...], noise: float) -> np.ndarray:
    """A symmetric PSD matrix A Aᵀ of clear rank ``rank`` plus a small PSD full-rank part; ``empty`` rows zero."""
    rng = np.random.default_rng(seed)
    a = rng.gamma(1.0, 1.0, size=(n, rank)) * np.array([4.0, 3.0, 2.0, 1.5, 1.0][:rank])
    b = rng.normal(size=(n, n))
    matrix = a @ a.T + noise * (b @ b.T) / n
    matrix[list(empty)] = 0
    matrix[:, list(empty)] = 0
    return matrix


def _normalised_rank_k(matrix: np.ndarray, k: int) -> np.ndarray:
    """Row-normalised inner products of the rank-k reconstruction U_k S_k U_kᵀ (numpy's dense SVD)."""
    u, s, _ = np.linalg.svd(matrix)
    x = u[:, :k] * np.sqrt(s[:k])
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return x @ x.T


@pytest.mark.parametrize("dim", [2, 3])
def test_svd_vectors_reproduce_the_top_k_structure(dim):
    torch.manual_seed(0)
    empty = (0, 9)
    matrix = _low_rank(30, 3, seed=1, empty=empty, noise=0.05)
    vectors = svd_vectors(_sparse(matrix).float(), dim)
    assert vectors.shape == (30, dim) and vectors.dtype == np.float32
    full = [i for i in range(30) if i not in empty]
    np.testing.assert_allclose(np.linalg.norm(vectors[full], axis=1), 1.0, rtol=1e-5)
    assert not vectors[list(empty)].any()
    np.testing.assert_allclose(vectors @ vectors.T, _normalised_rank_k(matrix, dim), atol=1e-4)


def test_svd_vectors_keep_block_structure():
    """Two groups that co-occur only within themselves: cosine ≈ 1 inside a group, ≈ 0 across (dim = 2 groups;
    with a zero diagonal the block matrix also has eigenvalue -2, which a wider SVD would mix in)."""
    torch.manual_seed(0)
    groups = np.repeat([0, 1], 6)
    matrix = (groups[:, None] == groups[None, :]).astype(np.float64) * 2.0
    np.fill_diagonal(matrix, 0.0)
    vectors = svd_vectors(_sparse(matrix).float(), 2)
    cosine = vectors @ vectors.T
    same = groups[:, None] == groups[None, :]
    assert cosine[same].min() > 0.99 and np.abs(cosine[~same]).max() < 0.05


def test_svd_vectors_pad_the_width_when_there_are_fewer_items_than_dimensions():
    torch.manual_seed(0)
    matrix = _low_rank(5, 2, seed=2, empty=(3,), noise=0.0)
    vectors = svd_vectors(_sparse(matrix).float(), 8)
    assert vectors.shape == (5, 8)
    assert not vectors[:, 5:].any()  # at most N = 5 singular vectors exist
    assert not vectors[3].any()
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 1, 2, 4]], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors @ vectors.T, _normalised_rank_k(matrix, 5), atol=1e-4)


def test_ppmi_then_svd_leaves_items_without_positive_pmi_at_zero():
    """An item whose every PMI is <= 0 has an empty PPMI row, hence the zero vector (like a non-co-occurring item)."""
    torch.manual_seed(0)
    counts = _counts(15, 5, empty=(4,))
    weights = ppmi(_sparse(counts))
    rows_with_values = set(weights.indices()[0].tolist())
    vectors = svd_vectors(weights, 6)
    for i in range(15):
        assert bool(np.abs(vectors[i]).sum() > 0) == (i in rows_with_values), i
    assert 4 not in rows_with_values
