"""One block of users: interest mixtures, activity, labels, timestamps, events and the truth table."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raylurm.data.synth.config import (
    _EVENTS_SCHEMA,
    _TAG_BLOCK,
    AGE_BUCKETS,
    BEHAVIORS,
    BLOCK_USERS,
    GENDERS,
    TRUTH_SCHEMA,
    USERS_SCHEMA,
    SynthConfig,
)
from raylurm.data.synth.sampling import _row_cdf, _sample_segments
from raylurm.data.synth.world import _World

_MAX_MONTH_SECONDS_BITS = 22  # 31 days = 2_678_400 s < 2**22


# ----------------------------------------------------------------------------- user blocks


def _mixtures(rng: np.random.Generator, n: int, config: SynthConfig) -> np.ndarray:
    """(n, years, num_topics) drifting interest mixtures."""
    alpha = np.full(config.num_topics, config.concentration)
    fresh = rng.dirichlet(alpha, size=(n, config.years))
    mix = np.empty_like(fresh)
    mix[:, 0] = fresh[:, 0]
    for y in range(1, config.years):
        mix[:, y] = (1 - config.drift) * mix[:, y - 1] + config.drift * fresh[:, y]
    return mix / mix.sum(axis=2, keepdims=True)


def _activity(rng: np.random.Generator, n: int, config: SynthConfig) -> np.ndarray:
    """(n, months) Poisson event counts with lognormal per-user rates; every row sum >= 1."""
    months, s = 12 * config.years, config.activity_sigma
    rate = config.events_per_user_month * np.exp(s * rng.standard_normal(n) - s * s / 2)
    counts = rng.poisson(rate[:, None], size=(n, months))
    fallback = rng.integers(0, months, n)
    idle = np.flatnonzero(counts.sum(axis=1) == 0)
    counts[idle, fallback[idle]] = 1
    return counts


def _labels(rng: np.random.Generator, first: np.ndarray, world: _World, config: SynthConfig) -> dict:
    """Gender and age bucket columns from the first-year mixtures ``first`` (n, topics)."""
    n = len(first)
    p_female = 0.5 + 0.5 * np.tanh(0.5 * config.label_strength * (first @ world.gender_w))  # sigmoid
    gender = (rng.random(n) >= p_female).astype(np.int64)
    noise = rng.gumbel(size=(n, len(AGE_BUCKETS)))
    age = np.argmax(first @ world.age_a.T + config.age_temperature * noise, axis=1)
    return {
        "age_bucket": pc.take(pa.array(AGE_BUCKETS), pa.array(age)),
        "gender": pc.take(pa.array(GENDERS), pa.array(gender)),
    }


def _timestamps(rng: np.random.Generator, cells: np.ndarray, months: int, world: _World) -> np.ndarray:
    """Uniform times within each event's month, sorted within each (user, month) cell.

    Events of one cell are exchangeable, so sorting only their times keeps the distribution.
    """
    month = cells % months
    length = np.diff(world.month_start)[month]
    offset = (rng.random(cells.size) * length).astype(np.int64)
    key = np.sort((cells << _MAX_MONTH_SECONDS_BITS) | offset, kind="stable")  # fast on sorted runs
    return world.month_start[month] + (key & ((1 << _MAX_MONTH_SECONDS_BITS) - 1))


def _events(
    rng: np.random.Generator,
    mix: np.ndarray,
    counts: np.ndarray,
    world: _World,
    config: SynthConfig,
    user0: int,
) -> pa.Table:
    """Events of one block, sorted by user then time."""
    months = counts.shape[1]
    cells = np.repeat(np.arange(counts.size, dtype=np.int64), counts.ravel())
    user = cells // months
    row = user * config.years + (cells % months) // 12
    stacked = _row_cdf(mix.reshape(-1, config.num_topics))
    topic = _sample_segments(rng, stacked, row.astype(np.float64)) - row * config.num_topics
    pos = world.item_sampler.sample(rng, topic)
    u = rng.random(cells.size)
    behavior = (u >= 1 - config.cart_prob - config.buy_prob).astype(np.int8) + (u >= 1 - config.buy_prob)
    columns = [
        pa.array(user + user0),
        pa.array(world.item_by_rank[pos]),
        pa.array(_timestamps(rng, cells, months, world)),
        pc.take(pa.array(BEHAVIORS), pa.array(behavior)),
    ]
    return pa.Table.from_arrays(columns, schema=_EVENTS_SCHEMA)


def _truth(mix: np.ndarray, user0: int) -> pa.Table:
    """One row per (user, year) with the latent mixture as list<float32>."""
    n, years, topics = mix.shape
    offsets = np.arange(0, n * years * topics + 1, topics, dtype=np.int32)
    mixture = pa.ListArray.from_arrays(pa.array(offsets), pa.array(mix.reshape(-1).astype(np.float32)))
    columns = [
        pa.array(np.repeat(np.arange(user0, user0 + n, dtype=np.int64), years)),
        pa.array(np.tile(np.arange(years, dtype=np.int32), n)),
        mixture,
    ]
    return pa.Table.from_arrays(columns, schema=TRUTH_SCHEMA)


def _block(config: SynthConfig, world: _World, block: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(events, users, truth) tables of user block ``block``, from its own random stream."""
    rng = np.random.default_rng([config.seed, _TAG_BLOCK, block])
    user0 = block * BLOCK_USERS
    n = min(BLOCK_USERS, config.users - user0)
    mix = _mixtures(rng, n, config)
    counts = _activity(rng, n, config)
    labels = _labels(rng, mix[:, 0], world, config)
    users = pa.Table.from_arrays(
        [pa.array(np.arange(user0, user0 + n, dtype=np.int64)), labels["age_bucket"], labels["gender"]],
        schema=USERS_SCHEMA,
    )
    return _events(rng, mix, counts, world, config, user0), users, _truth(mix, user0)
