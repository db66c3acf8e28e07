"""How the BoI pipeline sizes its Ray Data stages for the CPUs it sees (no Ray runtime needed)."""

from raylurm.boi.pipeline import _compute_strategies, mapper_cpus


def test_a_one_cpu_cluster_leaves_its_cpu_to_the_shuffle():
    assert mapper_cpus(1) == 0.0  # the one mapper actor must not hold the only CPU for its lifetime
    assert mapper_cpus(2) == mapper_cpus(16) == 1.0


def test_mapper_actors_leave_one_cpu_free():
    mappers, _ = _compute_strategies(None, 4)
    assert mappers.max_size == 3
    mappers, reducers = _compute_strategies(8, 4)
    assert mappers.min_size == mappers.max_size == 3 and reducers.size == 8
