"""Vectorised sampling primitives: uniform bits, stacked-cdf search, a guided sampler, row cdfs."""

from __future__ import annotations

import dataclasses

import numpy as np

_UNIFORM_BITS = 32  # resolution of the uniforms fed to the cumulative searches
_MAX_GUIDE_CELLS = 1 << 23  # cap on the guide table (int64 entries: 64 MiB)


# ----------------------------------------------------------------------------- samplers


def _uniform_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniform 32-bit integers ``k``; ``u = k / 2**32`` is a uniform on a 2**-32 grid."""
    return rng.integers(0, 1 << _UNIFORM_BITS, size=n, dtype=np.uint32)


def _stacked_cdf(cum: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Per-segment normalised cumulative sums (each ending at exactly 1.0) offset by segment index.

    Sampling from segment ``s`` is then ``searchsorted(stacked, s + u, "right")``: entries of
    earlier segments are <= s, the segment's last entry is s + 1 > s + u (``s + u`` is exact in
    float64 for s < 2**21 and u on the 2**-32 grid), and zero-weight entries repeat their
    predecessor so they are never the first entry above ``s + u``.
    """
    return cum + segment


def _search(stacked: np.ndarray, segment: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Flat index in ``stacked`` drawn for each ``segment[i]`` given uniform ``bits[i]``."""
    return np.searchsorted(stacked, segment + bits * (0.5**_UNIFORM_BITS), side="right")


def _sample_segments(rng: np.random.Generator, stacked: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """For each ``segment[i]``, the flat index of one entry drawn from that segment's weights."""
    return _search(stacked, segment, _uniform_bits(rng, segment.size))


@dataclasses.dataclass(frozen=True)
class _GuidedSampler:
    """:func:`_sample_segments` for a fixed ``stacked`` cdf, O(1) per draw on average.

    Each segment's [0, 1) is cut into ``2**cell_bits`` cells; a cell whose whole range of
    uniforms maps to one entry stores it in ``guide`` (else -1, and draws there fall back to
    a binary search). Draws are exactly those of :func:`_search` with the same uniforms.
    """

    stacked: np.ndarray
    guide: np.ndarray  # (segments << cell_bits,) int64 flat index, or -1
    cell_bits: int

    @classmethod
    def build(cls, stacked: np.ndarray, segments: int, cell_bits: int) -> "_GuidedSampler":
        cap = max(_MAX_GUIDE_CELLS // segments, 1).bit_length() - 1
        bits = max(0, min(cell_bits, cap, _UNIFORM_BITS))
        cell = np.arange(segments << bits, dtype=np.int64)
        seg, first = cell >> bits, (cell & ((1 << bits) - 1)) << (_UNIFORM_BITS - bits)
        lo = _search(stacked, seg, first)
        hi = _search(stacked, seg, first + ((1 << (_UNIFORM_BITS - bits)) - 1))
        return cls(stacked, np.where(lo == hi, lo, -1), bits)

    def sample(self, rng: np.random.Generator, segment: np.ndarray) -> np.ndarray:
        bits = _uniform_bits(rng, segment.size)
        cell = bits.astype(np.int64) >> (_UNIFORM_BITS - self.cell_bits)
        out = self.guide[(segment << self.cell_bits) | cell]
        miss = np.flatnonzero(out < 0)
        out[miss] = _search(self.stacked, segment[miss], bits[miss])
        return out


def _row_cdf(weights: np.ndarray) -> np.ndarray:
    """Stacked cdf (flat) of the rows of a non-negative 2-D weight matrix."""
    cum = np.cumsum(weights, axis=1)
    cum /= cum[:, -1:]
    return _stacked_cdf(cum, np.arange(len(weights), dtype=np.float64)[:, None]).ravel()
