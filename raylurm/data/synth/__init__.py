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

from raylurm.data.synth.config import (
    AGE_BUCKETS,
    BEHAVIORS,
    BLOCK_USERS,
    GENDERS,
    TRUTH_SCHEMA,
    USERS_SCHEMA,
    SynthConfig,
    validate_config,
)
from raylurm.data.synth.writer import generate

__all__ = ["SynthConfig", "generate", "validate_config", "AGE_BUCKETS", "BEHAVIORS", "GENDERS", "BLOCK_USERS",
           "USERS_SCHEMA", "TRUTH_SCHEMA"]
