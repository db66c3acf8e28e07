"""The BoI benchmark compares equal work: Ray's build_boi and polars/DuckDB give the same cells."""

from __future__ import annotations

import pytest

from raylurm.bench import boi

pytestmark = pytest.mark.integration


def test_ray_polars_and_duckdb_build_identical_boi(ray_runtime, tmp_path):
    dataset = boi.ensure_dataset(tmp_path, 5000, 200)  # ~5k events, 21 users, 5 years
    vocabulary = boi.ensure_vocabulary(dataset, 100)
    for engine in boi.ENGINES:
        boi.BUILDERS[engine](dataset, vocabulary, tmp_path / engine)
    reference = boi.read_cells(tmp_path / "ray")
    assert reference.num_rows > 1000
    for engine in ("polars", "duckdb"):
        assert boi.compare_cells(reference, boi.read_cells(tmp_path / engine)) is None, engine
