"""Fixtures shared by integration modules (the session's Ray runtime is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def boi_dir(ray_runtime, tmp_path_factory) -> Path:
    """A small synthetic log (64 users, 2 years, 3 behaviours) built into BoI by the Ray Data pipeline, once."""
    from raylurm.boi.build import BuildConfig, build
    from raylurm.boi.embeddings import ItemEmbeddingConfig
    from raylurm.boi.pipeline import BoiConfig
    from raylurm.boi.vocabulary import VocabularyConfig
    from raylurm.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("small-boi")
    generate(SynthConfig(users=64, years=2, items=300, num_topics=8, num_categories=4, seed=5), root / "data", progress=False)
    config = BuildConfig(embedding=ItemEmbeddingConfig(method="cooccurrence", dim=16),
                         vocabulary=VocabularyConfig(num_interests=24), boi=BoiConfig(on_unknown_items="skip"))
    build(root / "data", root / "boi", config, progress=False)
    return root / "boi"
