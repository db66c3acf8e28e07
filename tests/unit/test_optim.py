"""The training loop's optimiser: Adam on dense parameters, lazy (sparse) Adam on sparse-gradient tables."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from raylurm.methods.lurm import LURM, LURMConfig
from raylurm.train.batch import DataInfo, synthetic_rows
from raylurm.train.optim import Adam, sparse_parameters
from tests.helpers import training_batch

INFO = DataInfo(num_interests=50, num_items=30, num_behaviors=3, scales=("month", "year"), max_sequence_length=12)


def _model(sparse: bool, seed: int = 0) -> LURM:
    torch.manual_seed(seed)
    return LURM(LURMConfig(num_anchors=2, hidden_dim=8, sparse_gradients=sparse), INFO)


def test_sparse_tables_get_lazy_adam_and_the_rest_plain_adam() -> None:
    model = _model(sparse=True)
    assert sparse_parameters(model) == [model.anchors.interest.weight]
    optimizer = Adam(model, lr=1e-2)
    assert len(optimizer.optimizers) == 2 and isinstance(optimizer.sparse, torch.optim.SparseAdam)
    assert sparse_parameters(_model(sparse=False)) == [] and Adam(_model(sparse=False), 1e-2).sparse is None


def test_a_step_moves_only_the_touched_rows_and_matches_dense_adam_on_them() -> None:
    """First step: lazy Adam and Adam agree on the rows the batch touched (moments start at 0 in both); lazy
    Adam leaves the other rows where they were, and every dense parameter moves identically."""
    table = synthetic_rows(6, INFO.num_interests, INFO.num_items, seed=3)
    sparse, dense = _model(True), _model(False)
    batch = training_batch(sparse, table)
    for model in (sparse, dense):
        optimizer = Adam(model, lr=1e-2)
        optimizer.zero_grad()
        model(batch)["loss"].backward()
        optimizer.step()
    start = _model(False).anchors.interest.weight
    touched = torch.unique(torch.cat([batch[k] for k in batch if k.startswith("view") and k.endswith("_ids")]))
    moved = (sparse.anchors.interest.weight != start).any(dim=1)
    assert moved[touched].all() and not moved[~torch.isin(torch.arange(INFO.num_interests), touched)].any()
    # a first step is lr·g/(|g| + eps) for Adam but lr·g/(|g| + eps/sqrt(1 - β2)) for torch's SparseAdam (its eps
    # is added before the bias correction): the two agree where |g| is far above 32·eps, not near 0
    clear = dense.anchors.interest.weight.grad[touched].abs() > 1e-3
    assert clear.sum() >= 20
    torch.testing.assert_close(sparse.anchors.interest.weight[touched][clear], dense.anchors.interest.weight[touched][clear],
                               atol=1e-5, rtol=0)
    for (name, a), (_, b) in zip(sparse.named_parameters(), dense.named_parameters()):
        if name != "anchors.interest.weight":
            torch.testing.assert_close(a, b, msg=name)


def test_state_dict_round_trip_and_a_clear_error_for_a_dense_state() -> None:
    model = _model(True)
    optimizer = Adam(model, lr=1e-2)
    batch = training_batch(model, synthetic_rows(6, INFO.num_interests, INFO.num_items, seed=4))
    model(batch)["loss"].backward()
    optimizer.step()
    state = optimizer.state_dict()
    assert set(state) == {"dense", "sparse"}
    fresh = Adam(model, lr=1e-2)
    fresh.load_state_dict(state)
    assert fresh.sparse.state_dict()["state"].keys() == optimizer.sparse.state_dict()["state"].keys()
    plain = Adam(nn.Linear(2, 2), lr=1e-2).state_dict()  # what every checkpoint before sparse tables held
    assert set(plain) == {"state", "param_groups"}
    with pytest.raises(ValueError, match="sparse_gradients=false"):
        fresh.load_state_dict(Adam(_model(False), lr=1e-2).state_dict())
