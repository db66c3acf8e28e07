"""``SynthConfig`` and its validation; the constants, stream tags and output schemas the generator shares."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from raylurm.config import typed_config
from raylurm.data.schema import MAX_TIMESTAMP, MIN_TIMESTAMP, canonical_events_schema

#: Users per generation block (fixed: changing it changes the output).
BLOCK_USERS = 1024
BEHAVIORS = ("click", "cart", "buy")
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS = ("F", "M")

# Stream tags for np.random.default_rng([seed, tag, ...]); distinct and non-zero.
_TAG_ITEMS = 0x17E45
_TAG_LABELS = 0x1ABE1
_TAG_BLOCK = 0xB10C

_EVENTS_SCHEMA = canonical_events_schema(pa.int64(), pa.int64())
USERS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("age_bucket", pa.string(), nullable=False),
        pa.field("gender", pa.string(), nullable=False),
    ]
)
TRUTH_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("year", pa.int32(), nullable=False),
        pa.field("mixture", pa.list_(pa.float32()), nullable=False),
    ]
)


@typed_config
class SynthConfig:
    """Parameters of the synthetic generator (see :mod:`raylurm.data.synth` for the process).

    Each field's one-line help is its ``Field`` description (``python -m raylurm.data synth --help``).
    """

    users: Annotated[int, Field(
        ge=1, description="number of users (ids 0..users-1); each gets at least one event")] = 1000
    years: Annotated[int, Field(
        ge=1, description="length of the simulated period in years (12 calendar months each)")] = 3
    seed: Annotated[int, Field(ge=0, description="random seed (>= 0); the same config gives byte-identical output")] = 0
    items: Annotated[int, Field(description="number of items (ids 0..items-1); must be >= num_topics")] = 5000
    num_topics: Annotated[int, Field(ge=1, le=1 << 20, description="number of latent interest topics")] = 50
    num_categories: Annotated[int, Field(
        ge=1, description="coarse item categories cat_0.. (topics grouped into them)")] = 10
    events_per_user_month: Annotated[float, Field(gt=0, description="mean number of events per user per month")] = 4.0
    drift: Annotated[float, Field(
        ge=0, le=1, description="yearly interest drift: (1-drift)*previous + drift*fresh mixture")] = 0.3
    start: Annotated[str, Field(description="first month of the log (ISO date, truncated to its month)")] = "2015-01-01"
    shard_events: Annotated[int, Field(ge=1, description="rows per events/part-NNNNN.parquet shard")] = 5_000_000
    concentration: Annotated[float, Field(
        gt=0, description="Dirichlet concentration of user mixtures (small = peaky)")] = 0.1
    activity_sigma: Annotated[float, Field(
        ge=0, description="sigma of the lognormal per-user activity rate (tail)")] = 1.0
    zipf_exponent: Annotated[float, Field(
        ge=0, description="item popularity within a topic ~ (rank+1)**-zipf_exponent")] = 1.0
    vocab_per_topic: Annotated[int, Field(ge=1, description="topic-specific words w{topic}_{k} per topic")] = 30
    common_words: Annotated[int, Field(ge=1, description="shared words common_{k} used by all topics")] = 50
    words_per_item: Annotated[int, Field(ge=1, description="number of words in each item's text")] = 6
    common_word_prob: Annotated[float, Field(
        ge=0, le=1, description="probability that a text word is a shared common word")] = 0.3
    second_category_prob: Annotated[float, Field(
        ge=0, le=1, description="probability that an item has a second category")] = 0.2
    cart_prob: Annotated[float, Field(ge=0, description="share of 'cart' events")] = 0.15
    buy_prob: Annotated[float, Field(ge=0, description="share of 'buy' events (the rest are 'click')")] = 0.05
    label_strength: Annotated[float, Field(
        ge=0, description="gender logit = label_strength * w . first-year mixture")] = 6.0
    age_temperature: Annotated[float, Field(
        ge=0, description="Gumbel noise scale in age_bucket = argmax(A.m + noise)")] = 0.2

    @model_validator(mode="after")
    def _rules(self) -> SynthConfig:
        if self.items < self.num_topics:
            raise ValueError(f"items must be >= num_topics ({self.num_topics}), got {self.items}")
        if self.num_categories > self.num_topics:
            raise ValueError(f"num_categories must be in [1, num_topics ({self.num_topics})], "
                             f"got {self.num_categories}")
        if self.cart_prob + self.buy_prob > 1:
            raise ValueError(f"cart_prob + buy_prob must be <= 1, got {self.cart_prob} + {self.buy_prob}")
        _check_start(self.start, self.years)
        return self


# ----------------------------------------------------------------------------- validation


def _month_starts(start: str, months: int) -> np.ndarray:
    """UTC seconds of the starts of ``months + 1`` consecutive months from ``start``'s month."""
    first = np.datetime64(start, "D").astype("datetime64[M]")
    return (first + np.arange(months + 1)).astype("datetime64[s]").astype(np.int64)


def validate_config(config: SynthConfig) -> None:
    """Raise ``ValueError`` naming the invalid fields of ``config`` (a ``SynthConfig`` checks itself when built;
    this checks again one that was changed in place or built another way)."""
    dataclasses.replace(config)


def _check_start(start: str, years: int) -> None:
    """``start`` parses as a date and the whole period lies in the accepted timestamp range."""
    try:
        bounds = _month_starts(start, 12 * years)[[0, -1]]
    except ValueError as exc:
        raise ValueError(f"start must be an ISO date like 2015-01-01, got {start!r}") from exc
    if bounds[0] < MIN_TIMESTAMP or bounds[1] > MAX_TIMESTAMP:
        raise ValueError(f"start={start!r} + years={years} leaves [1970, 2100)")
