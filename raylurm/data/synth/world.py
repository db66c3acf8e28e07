"""The fixed world shared by all user blocks: the items table, item topics and popularity, label weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raylurm.data.synth.config import _TAG_ITEMS, _TAG_LABELS, AGE_BUCKETS, SynthConfig, _month_starts
from raylurm.data.synth.sampling import _GuidedSampler, _stacked_cdf

_GUIDE_CELLS_PER_ITEM = 4  # item guide-table cells per item of the largest topic


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
