"""``python -m raylurm.bench train``'s measurements on tiny inputs: what they report, not how fast."""

from __future__ import annotations

import pytest

from raylurm.bench.train import _report, method_throughput, profile_step


@pytest.mark.parametrize("method", ["sasrec", "dss"])
def test_profile_step_ranks_the_operators_of_one_training_step(method: str) -> None:
    result = profile_step(method, num_interests=50, num_items=40, top=4)
    shares = [share for _, share, _ in result["top"]]
    assert result["method"] == method and result["self_cpu_ms"] > 0
    assert len(shares) == 4 and shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    assert any(name in ("aten::mm", "aten::addmm", "aten::bmm") for name, _, _ in result["top"])  # the step multiplies
    assert all(calls >= 1 for _, _, calls in result["top"])


def test_throughput_counts_every_trained_position_of_the_one_pass_methods() -> None:
    row = method_throughput("sasrec", num_interests=50, num_items=40, steps=1)
    # every position with a next item trains: more targets than users per step
    assert row["targets_per_s"] > row["users_per_s"] > 0


def test_report_has_the_profile_table() -> None:
    class Args:
        items, steps = 40, 1
        command = "python -m raylurm.bench train"

    profile = {"method": "sasrec", "self_cpu_ms": 12.0, "top": [("aten::mm", 0.5, 3)]}
    row = {"method": "sasrec", "batch": 2, "step_s": 0.1, "users_per_s": 20.0, "targets_per_s": 200.0}
    ratio = {"bags": 1, "nonzeros": 2, "sparse_s": 0.01, "dense_s": 0.1, "speedup": 10.0}
    text = _report(Args(), 50, [row], ratio, [], [profile])
    assert "Where a step's time goes" in text and "`aten::mm` 50% (3)" in text
