"""Tests of raylurm.losses against slow hand-written references."""

from __future__ import annotations

import math

import pytest
import torch

from raylurm.losses import info_nce


def _info_nce_reference(a: torch.Tensor, b: torch.Tensor, temperature: float,
                        skip: set[tuple[int, int]] = frozenset()) -> torch.Tensor:
    """LURM eq. 2-3 written as a double loop over the 2n items of the batch.

    ``skip`` holds (anchor, other) pairs, indices into x^1, y^1, x^2, y^2, ..., left out as negatives.
    """
    batch = [v / v.norm() for pair in zip(a, b) for v in pair]  # x^1, y^1, x^2, y^2, ...
    total = 0.0
    for i, anchor in enumerate(batch):
        p = i + 1 if i % 2 == 0 else i - 1
        partner = batch[p]
        denominator = sum(math.exp(float(anchor @ other) / temperature) for j, other in enumerate(batch)
                          if j != i and (j == p or (i, j) not in skip))
        total += -math.log(math.exp(float(anchor @ partner) / temperature) / denominator)
    return torch.tensor(total / len(batch))


@pytest.mark.parametrize("n,d,temperature", [(1, 3, 0.5), (2, 4, 0.1), (5, 3, 1.0), (7, 8, 0.07)])
def test_matches_double_loop_reference(n: int, d: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    a, b = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    expected = _info_nce_reference(a, b, temperature)
    torch.testing.assert_close(info_nce(a, b, temperature), expected.to(torch.float64), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(info_nce(a.float(), b.float(), temperature), expected.float(), atol=1e-5, rtol=1e-5)


def test_excluded_negatives_match_reference() -> None:
    g = torch.Generator().manual_seed(3)
    n = 4
    a, b = torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64)
    exclude = torch.rand(2 * n, 2 * n, generator=g) < 0.4
    exclude[0, n] = exclude[n, 0] = exclude[1, 1] = True  # a positive and a diagonal: ignored
    interleaved = [2 * k for k in range(n)] + [2 * k + 1 for k in range(n)]  # row of cat([a, b]) -> x^1, y^1, ...
    skip = {(interleaved[i], interleaved[j]) for i, j in exclude.nonzero().tolist()}
    expected = _info_nce_reference(a, b, 0.2, skip).double()
    torch.testing.assert_close(info_nce(a, b, 0.2, exclude), expected, atol=1e-5, rtol=1e-5)
    assert not torch.isclose(info_nce(a, b, 0.2), expected)
    with pytest.raises(ValueError):
        info_nce(a, b, 0.2, exclude[:-1])


def test_temperature_scales_the_logits() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    low, high = info_nce(a, b, 0.05), info_nce(a, b, 5.0)
    assert not torch.isclose(low, high)
    torch.testing.assert_close(high, _info_nce_reference(a, b, 5.0).float(), atol=1e-5, rtol=1e-5)
    # A very high temperature makes every logit equal: log(2n - 1).
    torch.testing.assert_close(info_nce(a, b, 1e6), torch.tensor(math.log(11.0)), atol=1e-4, rtol=0)


def test_symmetric_in_the_two_views() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    torch.testing.assert_close(info_nce(a, b, 0.2), info_nce(b, a, 0.2))


def test_perfect_alignment_with_orthogonal_negatives_is_small() -> None:
    a = torch.eye(4) * 3.0  # scale does not matter: cosine similarity
    loss = info_nce(a, a.clone(), 0.1)
    # positives at cos 1, the 6 negatives at cos 0: log(1 + 6 e^{-10})
    torch.testing.assert_close(loss, torch.tensor(math.log1p(6 * math.exp(-10.0))), atol=1e-6, rtol=1e-4)
    assert loss < 1e-3


def test_gradient_flows_to_both_views() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(4, 3, generator=g, requires_grad=True)
    b = torch.randn(4, 3, generator=g, requires_grad=True)
    info_nce(a, b, 0.1).backward()
    for grad in (a.grad, b.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("a,b,temperature", [
    (torch.zeros(3, 2), torch.zeros(3, 4), 0.1),
    (torch.zeros(3), torch.zeros(3), 0.1),
    (torch.zeros(0, 2), torch.zeros(0, 2), 0.1),
    (torch.ones(3, 2), torch.ones(3, 2), 0.0),
])
def test_bad_arguments_raise(a: torch.Tensor, b: torch.Tensor, temperature: float) -> None:
    with pytest.raises(ValueError):
        info_nce(a, b, temperature)
