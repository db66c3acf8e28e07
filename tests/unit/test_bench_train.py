"""``python -m raylurm.bench train``'s measurements on tiny inputs: what they report, not how fast."""

from __future__ import annotations

import pytest
import torch

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


def test_the_before_row_is_lurm_with_the_packed_gru_and_the_same_states() -> None:
    """The "before" LURM step runs the old PackedSequence GRU; it computes the same representation."""
    from raylurm.bench.train import LURM_BEFORE, _setup

    old, _, _ = _setup("lurm", 50, 40, LURM_BEFORE)
    new, _, _ = _setup("lurm", 50, 40, {"sparse_gradients": False, "views": "calendar"})
    assert "packed_time_aggregation" in repr(old.time.forward) and "packed" not in repr(new.time.forward)
    new.load_state_dict(old.state_dict())
    from raylurm.train.batch import collate, synthetic_rows

    batch = collate(synthetic_rows(6, 50, 40, max_periods=24, seed=5))
    torch.testing.assert_close(old.embed(batch), new.embed(batch))
