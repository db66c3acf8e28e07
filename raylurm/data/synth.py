"""Synthetic lifelong behaviour logs with known latent structure.

Generative process (everything is drawn from ``config.seed``):

1. **Topics and items.** There are ``num_topics`` latent topics, grouped contiguously into
   ``num_categories`` coarse categories ``cat_{c}``. Every item has one main topic (every
   topic has at least one item). Its ``text`` is ``words_per_item`` words, each a shared
   word ``common_{k}`` with probability ``common_word_prob`` and otherwise a word
   ``w{topic}_{k}`` of its topic's own vocabulary. Its ``category`` is the topic's category,
   plus, with probability ``second_category_prob``, one other random category. Within a
   topic, the item of popularity rank ``r`` (random order) has weight ``(r + 1) ** -zipf``.
2. **Interests.** User ``u`` has one topic mixture per year: year 0 is
   ``Dirichlet(concentration)`` (small concentration, so users are peaky); year ``y`` is
   ``(1 - drift) * mixture[y - 1] + drift * fresh Dirichlet draw`` (still on the simplex).
3. **Activity.** Each user has a rate ``events_per_user_month * LogNormal(-s**2/2, s)``
   (``s = activity_sigma``, mean preserved, heavy tail); each calendar month gets
   ``Poisson(rate)`` events; a user with no event at all gets one in a random month.
4. **Events.** Each event draws a topic from the user's mixture of that year, an item from
   the topic's Zipf popularity, a time uniform within its calendar month (UTC seconds) and
   a behaviour ``click``/``cart``/``buy`` with probabilities ``1 - cart - buy``/``cart``/``buy``.
5. **Labels.** With fixed standard-normal ``w`` (``num_topics``) and ``A`` (5 x ``num_topics``),
   each centred to mean 0 over topics (balanced labels), and the user's first-year mixture
   ``m``: ``gender = "F"`` with probability ``sigmoid(label_strength * w . m)`` (else ``"M"``)
   and ``age_bucket = AGE_BUCKETS[argmax(A m + age_temperature * Gumbel)]``.

Users are generated in fixed blocks of :data:`BLOCK_USERS`, each from its own
``np.random.default_rng([seed, tag, block])``, so the output is byte-identical for a given
config (whatever ``shard_events``) and memory depends on one block (about ``BLOCK_USERS *
12 * years * events_per_user_month`` events) and the item count, not on ``users``. Parquet
encoding runs on a background thread. Output layout (a prepared dataset, see
:mod:`raylurm.data.schema`)::

    events/part-NNNNN.parquet   user_id, item_id, timestamp, behavior; sorted by user, time
    items.parquet               item_id, text, category (list<string>), topic (int32)
    users.parquet               user_id, age_bucket, gender (all users; each has >= 1 event)
    truth.parquet               user_id, year (int32), mixture (list<float32>)
    manifest.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from raylurm.config import typed_config
from raylurm.data.io import atomic_dir
from raylurm.data.schema import MAX_TIMESTAMP, MIN_TIMESTAMP, SCHEMA_VERSION, canonical_events_schema

logger = logging.getLogger(__name__)

#: Users per generation block (fixed: changing it changes the output).
BLOCK_USERS = 1024
BEHAVIORS = ("click", "cart", "buy")
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS = ("F", "M")

# Stream tags for np.random.default_rng([seed, tag, ...]); distinct and non-zero.
_TAG_ITEMS = 0x17E45
_TAG_LABELS = 0x1ABE1
_TAG_BLOCK = 0xB10C
_UNIFORM_BITS = 32  # resolution of the uniforms fed to the cumulative searches
_MAX_MONTH_SECONDS_BITS = 22  # 31 days = 2_678_400 s < 2**22
_BUFFER_BYTES = 32 << 20  # bytes buffered per output file before a write (= one row group)
_GUIDE_CELLS_PER_ITEM = 4  # item guide-table cells per item of the largest topic
_MAX_GUIDE_CELLS = 1 << 23  # cap on the guide table (int64 entries: 64 MiB)

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
    """Parameters of the synthetic generator (see the module docstring for the process).

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


# ----------------------------------------------------------------------------- items


@dataclasses.dataclass(frozen=True)
class _World:
    """Everything shared by all user blocks: item sampler, label parameters, calendar."""

    item_sampler: _GuidedSampler  # per-topic popularity, flat index into item_by_rank
    item_by_rank: np.ndarray  # item ids sorted by (topic, popularity rank)
    gender_w: np.ndarray  # (num_topics,)
    age_a: np.ndarray  # (len(AGE_BUCKETS), num_topics)
    month_start: np.ndarray  # (months + 1,) UTC seconds


def _item_topics(rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """Main topic of every item: each topic once, the rest uniform, in random order."""
    extra = rng.integers(0, config.num_topics, config.items - config.num_topics)
    topics = np.concatenate([np.arange(config.num_topics), extra]).astype(np.int32)
    rng.shuffle(topics)
    return topics


def _item_sampler(
    rng: np.random.Generator, topics: np.ndarray, config: SynthConfig
) -> tuple[_GuidedSampler, np.ndarray]:
    """Stacked Zipf popularity cdf per topic, over items ordered by (topic, random rank)."""
    shuffled = rng.permutation(config.items)
    order = shuffled[np.argsort(topics[shuffled], kind="stable")]
    sizes = np.bincount(topics, minlength=config.num_topics)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    rank = np.arange(config.items) - first
    harmonic = np.cumsum((np.arange(sizes.max()) + 1.0) ** -config.zipf_exponent)
    cum = harmonic[rank] / harmonic[sizes[topics[order]] - 1]
    stacked = _stacked_cdf(cum, topics[order].astype(np.float64))
    bits = int(np.ceil(np.log2(_GUIDE_CELLS_PER_ITEM * sizes.max())))
    return _GuidedSampler.build(stacked, config.num_topics, bits), order.astype(np.int64)


def _item_text(rng: np.random.Generator, topics: np.ndarray, config: SynthConfig) -> pa.Array:
    """Space-joined words: common_{k} with prob. common_word_prob, else w{topic}_{k}."""
    n, t, v, c = config.items, config.num_topics, config.vocab_per_topic, config.common_words
    vocab = pa.array([f"w{i}_{k}" for i in range(t) for k in range(v)] + [f"common_{k}" for k in range(c)])
    shape = (config.words_per_item, n)
    common = rng.random(shape) < config.common_word_prob
    own = topics[None, :].astype(np.int64) * v + rng.integers(0, v, shape)
    words = np.where(common, t * v + rng.integers(0, c, shape), own)
    columns = [pc.take(vocab, pa.array(row)) for row in words]
    return pc.binary_join_element_wise(*columns, " ") if len(columns) > 1 else columns[0]


def _item_categories(rng: np.random.Generator, topics: np.ndarray, config: SynthConfig) -> pa.Array:
    """The topic's category, plus another random one with prob. second_category_prob."""
    k = config.num_categories
    main = topics.astype(np.int64) * k // config.num_topics
    second = (main + rng.integers(1, max(k, 2), config.items)) % k
    has_second = (rng.random(config.items) < config.second_category_prob) & (k > 1)
    lengths = 1 + has_second
    flat = np.empty(lengths.sum(), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat[offsets[:-1]] = main
    flat[offsets[:-1][has_second] + 1] = second[has_second]
    names = pc.take(pa.array([f"cat_{i}" for i in range(k)]), pa.array(flat))
    return pa.ListArray.from_arrays(pa.array(offsets), names)


def _items_table(config: SynthConfig) -> tuple[pa.Table, np.ndarray]:
    """The items table and the main topic of each item."""
    rng = np.random.default_rng([config.seed, _TAG_ITEMS])
    topics = _item_topics(rng, config)
    table = pa.table(
        {
            "item_id": pa.array(np.arange(config.items, dtype=np.int64)),
            "text": _item_text(rng, topics, config),
            "category": _item_categories(rng, topics, config),
            "topic": pa.array(topics, pa.int32()),
        }
    )
    return table, topics


def _centered(weights: np.ndarray) -> np.ndarray:
    """Rows minus their mean: a symmetric Dirichlet has E[m] uniform, so labels are balanced."""
    return weights - weights.mean(axis=-1, keepdims=True)


def _world(config: SynthConfig, topics: np.ndarray) -> _World:
    """Item sampler, label weights and calendar, from their own random stream."""
    rng = np.random.default_rng([config.seed, _TAG_LABELS])
    item_sampler, item_by_rank = _item_sampler(rng, topics, config)
    return _World(
        item_sampler=item_sampler,
        item_by_rank=item_by_rank,
        gender_w=_centered(rng.standard_normal(config.num_topics)),
        age_a=_centered(rng.standard_normal((len(AGE_BUCKETS), config.num_topics))),
        month_start=_month_starts(config.start, 12 * config.years),
    )


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


# ----------------------------------------------------------------------------- writing


class _ParquetSink:
    """Buffered Parquet writer; rolls over to a new file every ``max_rows`` rows if given.

    Writes run on ``executor`` (one background thread, so generation and encoding overlap);
    at most one write per sink is in flight, which bounds memory.
    """

    def __init__(
        self,
        path_of: Callable[[int], Path],
        schema: pa.Schema,
        executor: ThreadPoolExecutor,
        max_rows: int | None = None,
    ):
        self._path_of, self._schema, self._max_rows = path_of, schema, max_rows
        self._executor = executor
        self._pending: Future | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._files = 0
        self._in_file = 0

    def write(self, table: pa.Table) -> None:
        self._buffer.append(table)
        self._buffered += table.nbytes
        if self._buffered >= _BUFFER_BYTES:
            self._submit()

    def _submit(self) -> None:
        self._wait()
        table = pa.concat_tables(self._buffer)
        self._buffer, self._buffered = [], 0
        self._pending = self._executor.submit(self._write_now, table)

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def _write_now(self, table: pa.Table) -> None:
        done = 0
        while done < table.num_rows:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._path_of(self._files), self._schema)
                self._files, self._in_file = self._files + 1, 0
            room = table.num_rows - done if self._max_rows is None else self._max_rows - self._in_file
            chunk = table.slice(done, room)
            self._writer.write_table(chunk, row_group_size=chunk.num_rows)
            done, self._in_file = done + chunk.num_rows, self._in_file + chunk.num_rows
            if self._in_file == self._max_rows:
                self._writer.close()
                self._writer = None

    def close(self) -> None:
        """Flush the buffer and close; writes an empty file if nothing was ever written."""
        if self._buffer:
            self._submit()
        self._wait()
        if self._files == 0:
            pq.write_table(self._schema.empty_table(), self._path_of(0))
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _write_blocks(config: SynthConfig, world: _World, tmp: Path, progress: bool) -> dict:
    """Generate and write all user blocks; returns event count and time span."""
    (tmp / "events").mkdir()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-writer") as executor:
        shard = lambda i: tmp / "events" / f"part-{i:05d}.parquet"  # noqa: E731
        sinks = [
            _ParquetSink(shard, _EVENTS_SCHEMA, executor, config.shard_events),
            _ParquetSink(lambda i: tmp / "users.parquet", USERS_SCHEMA, executor),
            _ParquetSink(lambda i: tmp / "truth.parquet", TRUTH_SCHEMA, executor),
        ]
        return _fill_sinks(config, world, sinks, progress)


def _fill_sinks(config: SynthConfig, world: _World, sinks: list[_ParquetSink], progress: bool) -> dict:
    n_events, lo, hi = 0, MAX_TIMESTAMP, MIN_TIMESTAMP
    blocks = -(-config.users // BLOCK_USERS)
    for block in tqdm(range(blocks), desc="synth users", unit="block", disable=not progress):
        tables = _block(config, world, block)
        for sink, table in zip(sinks, tables):
            sink.write(table)
        ts = tables[0].column("timestamp")
        n_events, lo, hi = n_events + len(ts), min(lo, pc.min(ts).as_py()), max(hi, pc.max(ts).as_py())
    for sink in sinks:
        sink.close()
    return {"events": n_events, "time_span": [lo, hi]}


def _manifest(config: SynthConfig, stats: dict) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": "synth",
        "config": dataclasses.asdict(config),
        "counts": {"events": stats["events"], "users": config.users, "items": config.items},
        "id_types": {"user_id": "int64", "item_id": "int64"},
        "time_span": stats["time_span"],
        "quarantined": {},
    }


def generate(config: SynthConfig, out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Write a synthetic prepared dataset to ``out_dir`` (atomically) and return its manifest.

    ``users.parquet`` lists all ``config.users`` users: every generated user has >= 1 event.
    """
    validate_config(config)
    started = time.perf_counter()
    logger.info("generating synthetic dataset in %s: %s", out_dir, config)
    items, topics = _items_table(config)
    world = _world(config, topics)
    with atomic_dir(out_dir) as tmp:
        pq.write_table(items, tmp / "items.parquet")
        stats = _write_blocks(config, world, tmp, progress)
        manifest = _manifest(config, stats)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    elapsed = time.perf_counter() - started
    rate = stats["events"] / max(elapsed, 1e-9)
    logger.info("wrote %d events in %.1f s (%.0f events/s)", stats["events"], elapsed, rate)
    return manifest
