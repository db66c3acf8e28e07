"""The item-embedding options (:class:`ItemEmbeddingConfig`), shared by both methods."""

from __future__ import annotations

import dataclasses
import math

EMBEDDING_METHODS = ("text", "cooccurrence")
_INT_FIELDS = ("dim", "epochs", "batch_size", "max_words", "min_word_count", "pairs_per_epoch", "max_events")


@dataclasses.dataclass(frozen=True)
class ItemEmbeddingConfig:
    """Item-embedding hyper-parameters (paper defaults: d = 128, τ = 0.1, β = 5 days).

    ``cooccurrence`` uses ``window_days``, ``max_events``, ``dim`` and draws about
    ``epochs * pairs_per_epoch`` pairs (every event with a partner is an anchor at least once);
    ``temperature``, ``batch_size``, ``lr``, ``max_words`` and ``min_word_count`` are text-only.
    """

    method: str = "text"  # "text" (eq. 1-3) or "cooccurrence" (for data without good text)
    dim: int = 128  # word/item embedding width (paper: 128)
    temperature: float = 0.1  # τ of eq. 3
    window_days: float = 5.0  # β: two items of one user less than β apart form a positive pair
    epochs: int = 3
    batch_size: int = 1024  # n pairs per batch (2n items)
    lr: float = 1e-3
    max_words: int = 32  # words per item text (truncate; the paper covers 95 %)
    min_word_count: int = 1  # rarer words map to <unk>
    pairs_per_epoch: int = 500_000
    max_events: int = 5_000_000  # events sampled (whole users) to draw pairs from: bounded memory
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in EMBEDDING_METHODS:
            raise ValueError(f"unknown item-embedding method {self.method!r}; choose one of {EMBEDDING_METHODS}")
        for name in (*_INT_FIELDS, "temperature", "window_days", "lr"):
            value = getattr(self, name)
            kind = int if name in _INT_FIELDS else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or not math.isfinite(value):
                what = "integer" if kind is int else "number"
                raise ValueError(f"ItemEmbeddingConfig.{name} must be a positive {what}, got {value!r}")
        if self.batch_size < 2:
            raise ValueError(f"ItemEmbeddingConfig.batch_size must be >= 2 (a lone pair has no negatives), "
                             f"got {self.batch_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ItemEmbeddingConfig.seed must be a non-negative integer, got {self.seed!r}")
