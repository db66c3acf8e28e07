"""The item-embedding options (:class:`ItemEmbeddingConfig`), shared by both methods."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field

from raylurm.config import typed_config

EmbeddingMethod = Literal["text", "cooccurrence"]
EMBEDDING_METHODS = get_args(EmbeddingMethod)


@typed_config
class ItemEmbeddingConfig:
    """Item-embedding hyper-parameters (paper defaults: d = 128, τ = 0.1, β = 5 days).

    ``cooccurrence`` uses ``window_days``, ``max_events``, ``dim`` and draws about
    ``epochs * pairs_per_epoch`` pairs (every event with a partner is an anchor at least once);
    ``temperature``, ``batch_size``, ``lr``, ``max_words`` and ``min_word_count`` are text-only.
    """

    method: Annotated[EmbeddingMethod, Field(
        description='"text" (eq. 1-3) or "cooccurrence" (for data without good text)')] = "text"
    dim: Annotated[int, Field(ge=1, description="word/item embedding width")] = 128  # paper: 128
    temperature: Annotated[float, Field(gt=0.0, description="τ of eq. 3")] = 0.1
    window_days: Annotated[float, Field(
        gt=0.0, description="β: two items of one user less than β days apart form a positive pair")] = 5.0
    epochs: Annotated[int, Field(ge=1, description="passes over pairs_per_epoch pairs")] = 3
    batch_size: Annotated[int, Field(
        ge=2, description="n pairs per batch (2n items; >= 2: a lone pair has no negatives)")] = 1024
    lr: Annotated[float, Field(gt=0.0, description="Adam learning rate")] = 1e-3
    # truncate; the paper covers 95 %
    max_words: Annotated[int, Field(ge=1, description="words per item text")] = 32
    min_word_count: Annotated[int, Field(ge=1, description="rarer words map to <unk>")] = 1
    pairs_per_epoch: Annotated[int, Field(ge=1, description="positive pairs drawn per epoch")] = 500_000
    max_events: Annotated[int, Field(
        ge=1, description="events sampled (whole users) to draw pairs from: bounded memory")] = 5_000_000
    seed: Annotated[int, Field(ge=0)] = 0
