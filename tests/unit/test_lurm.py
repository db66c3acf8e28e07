"""Tests of LURM / SMEN (raylurm.methods.lurm) and its multi-anchor module (raylurm.encoders)."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from raylurm.config import from_dict
from raylurm.encoders import MultiAnchorBoI, bag_outer_sums
from raylurm.losses import info_nce
from raylurm.methods.lurm import LURM, LURMConfig, _random_window, sample_windows
from raylurm.train.batch import DataInfo, collate, synthetic_rows
from raylurm.train.distributed import gather_with_grad
from raylurm.train.views import EventViews, ItemInterests
from tests.helpers import train_steps

NUM_INTERESTS = 40
INFO = DataInfo(num_interests=NUM_INTERESTS, num_items=30, num_behaviors=3, scales=("month", "year"),
                max_sequence_length=12)
SMALL = dict(num_anchors=3, hidden_dim=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


# item i -> interest i % NUM_INTERESTS (the event-level views count the events of synthetic_rows' sequences)
INTERESTS = ItemInterests(pa.array([[i % NUM_INTERESTS] for i in range(30)], pa.list_(pa.int32())),
                          pa.array([[1.0]] * 30, pa.list_(pa.float32())))


def _with_views(table: pa.Table, seed: int = 0) -> dict[str, torch.Tensor]:
    """Collated rows plus the two event-level views the training loop adds (LURM.training_inputs)."""
    return {**collate(table), **EventViews(INTERESTS, ("month", "year"), 0.5, seed=seed)(table)}


def _batch(num_users: int = 6, seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
    return _with_views(synthetic_rows(num_users, NUM_INTERESTS, 30, seed=seed, **kwargs), seed)


def _model(seed: int = 0, **config) -> LURM:
    torch.manual_seed(seed)
    return LURM(LURMConfig(**{**SMALL, **config}), INFO)


# ---------------------------------------------------------------------------------------------
# Multi-anchor module (eq. 5-6)


def _bags(batch: dict[str, torch.Tensor], scale: str = "month") -> tuple[torch.Tensor, ...]:
    return batch[f"{scale}_ids"], batch[f"{scale}_values"], batch[f"{scale}_offsets"]


def literal_multi_anchor(module: MultiAnchorBoI, ids, values, offsets, num_interests: int) -> torch.Tensor:
    """Eq. 5-6 written out: a dense b ∈ R^D per bag, loops over anchors i and interests j."""
    we, wa, wp = module.interest.weight, module.anchor.weight, module.key.weight  # (D, H), (M, H), (H, H)
    ends = offsets.tolist()[1:] + [ids.numel()]
    out = []
    for start, end in zip(offsets.tolist(), ends):
        b = torch.zeros(num_interests, dtype=we.dtype)
        for j, value in zip(ids[start:end].tolist(), values[start:end].tolist()):
            b[j] += value
        anchors = []
        for i in range(wa.shape[0]):
            total = torch.zeros(we.shape[1], dtype=we.dtype)
            for j in range(num_interests):
                scores = [wa[l] @ (wp @ torch.relu(we[j])) for l in range(wa.shape[0])]
                alpha = torch.exp(scores[i]) / sum(torch.exp(s) for s in scores)  # eq. 6: over anchors l
                total = total + alpha * b[j] * we[j]
            anchors.append(torch.relu(total))  # eq. 5
        out.append(torch.stack(anchors))
    return torch.stack(out)  # (bags, M, H)


def dense_multi_anchor(module: MultiAnchorBoI, ids, values, offsets) -> torch.Tensor:
    """Vectorised DENSE eq. 5-6: materialises b (bags, D) and α for all D interests (timing baseline)."""
    we = module.interest.weight  # (D, H)
    sizes = torch.diff(offsets, append=torch.tensor([ids.numel()], device=ids.device))
    bag = torch.repeat_interleave(torch.arange(offsets.numel(), device=ids.device), sizes)  # (N,)
    b = we.new_zeros(offsets.numel(), we.shape[0])  # (bags, D)
    b = b.index_put_((bag, ids), values.to(we.dtype), accumulate=True)
    alpha = torch.softmax(module.anchor(module.key(F.relu(we))), dim=1)  # (D, M)
    weighted = (alpha[:, :, None] * we[:, None, :]).flatten(1)  # (D, M·H): α_ij W^e_j
    return F.relu(b @ weighted).view(-1, module.num_anchors, module.hidden_dim)  # (bags, M, H)


def test_multi_anchor_equals_literal_dense_reference() -> None:
    torch.manual_seed(0)
    module = MultiAnchorBoI(num_interests=7, num_anchors=3, hidden_dim=4).double()
    ids = torch.tensor([0, 3, 6, 2, 2, 5, 1])  # bag 1 holds interest 2 twice: the values add up
    values = torch.rand(7, dtype=torch.float64) + 0.1
    offsets = torch.tensor([0, 3, 5])
    expected = literal_multi_anchor(module, ids, values, offsets, num_interests=7)
    torch.testing.assert_close(module(ids, values, offsets), expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(dense_multi_anchor(module, ids, values, offsets), expected, atol=1e-10, rtol=1e-10)


def test_multi_anchor_gradients_equal_dense() -> None:
    torch.manual_seed(1)
    module = MultiAnchorBoI(NUM_INTERESTS, num_anchors=4, hidden_dim=6).double()
    ids, values, offsets = _bags(_batch())
    target = torch.randn(offsets.numel(), 4, 6, dtype=torch.float64)
    grads = []
    for encode in (module, lambda *x: dense_multi_anchor(module, *x)):
        module.zero_grad()
        (encode(ids, values, offsets) * target).sum().backward()
        grads.append([p.grad.clone() for p in module.parameters()])
    for sparse_grad, dense_grad in zip(*grads):
        torch.testing.assert_close(sparse_grad, dense_grad, atol=1e-10, rtol=1e-10)


def test_bag_outer_sums_matches_loops() -> None:
    g = torch.Generator().manual_seed(5)
    sizes = [0, 1, 2, 3, 0, 5, 8, 9]  # empty bags at the start and inside; an empty last bag below
    n = sum(sizes)
    weights = torch.randn(n, 3, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 6, (n,), generator=g)  # repeats: several non-zeros read the same row
    offsets = torch.tensor([sum(sizes[:k]) for k in range(len(sizes))])
    expected = torch.zeros(len(sizes), 3, 4, dtype=torch.float64)
    for bag, start in enumerate(offsets.tolist()):
        for j in range(start, start + sizes[bag]):
            expected[bag] += torch.outer(weights[j], table[index[j]]).detach()
    torch.testing.assert_close(bag_outer_sums(weights, table, index, offsets), expected)
    torch.autograd.gradcheck(bag_outer_sums, (weights, table, index, offsets))
    last_empty = bag_outer_sums(weights, table, index, torch.cat([offsets, torch.tensor([n])]))
    assert last_empty.shape == (9, 3, 4) and (last_empty[-1] == 0).all()


def test_alpha_is_a_softmax_over_anchors() -> None:
    torch.manual_seed(2)
    module = MultiAnchorBoI(NUM_INTERESTS, num_anchors=5, hidden_dim=6)
    ids = torch.tensor([0, 7, 7, 39])
    alpha = module.attention(module.interest(ids))  # (N, M) for rows e = W^e[ids]
    assert alpha.shape == (4, 5)
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(4))  # each interest splits its mass over anchors
    assert not torch.allclose(alpha.sum(dim=0), torch.ones(5))
    k = torch.relu(module.interest.weight[ids]) @ module.key.weight.T  # (N, H)
    torch.testing.assert_close(alpha, torch.softmax(k @ module.anchor.weight.T, dim=1))


def test_sparse_gradient_matches_dense() -> None:
    ids, values, offsets = _bags(_batch())
    grads = []
    for sparse in (False, True):
        torch.manual_seed(3)
        module = MultiAnchorBoI(NUM_INTERESTS, num_anchors=3, hidden_dim=5, sparse=sparse)
        module(ids, values, offsets).square().sum().backward()
        grads.append(module.interest.weight.grad)
    assert grads[1].is_sparse and not grads[0].is_sparse
    torch.testing.assert_close(grads[1].to_dense(), grads[0])


def test_multi_anchor_empty_inputs() -> None:
    module = MultiAnchorBoI(NUM_INTERESTS, num_anchors=3, hidden_dim=5)
    empty = torch.zeros(0, dtype=torch.int64)
    assert module(empty, torch.zeros(0), empty).shape == (0, 3, 5)
    out = module(torch.tensor([4]), torch.tensor([1.0]), torch.tensor([0, 1]))  # second bag is empty
    assert out.shape == (2, 3, 5) and (out[1] == 0).all()


# ---------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("bad", [dict(num_anchors=0), dict(hidden_dim=0), dict(scales="week"), dict(temperature=0.0),
                                 dict(min_window_fraction=0.0), dict(min_window_fraction=1.5), dict(lr=0.0),
                                 dict(batch_size=1)])
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        LURMConfig(**bad)


def test_config_defaults_and_unknown_keys() -> None:
    config = LURMConfig()
    assert (config.num_anchors, config.hidden_dim, config.scales, config.temperature, config.lr, config.batch_size) == \
        (10, 128, "both", 0.1, 1e-3, 256)
    with pytest.raises(ValueError):
        from_dict(LURMConfig, {"num_anchor": 4})
    with pytest.raises(ValueError):  # the data lacks the year scale
        LURM(LURMConfig(scales="both"), DataInfo(10, 5, 1, ("month",), 12))


# ---------------------------------------------------------------------------------------------
# The model


def test_default_model_loss_and_gradients() -> None:
    torch.manual_seed(0)
    model = LURM(LURMConfig(), INFO)
    assert model.representation_dim == 1280
    out = model(_batch(8))
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0 and 0 <= out["identical_views"] < 1
    assert float(out["loss_chance"]) == pytest.approx(math.log(15))  # 2n - 1 candidates besides the anchor
    out["loss"].backward()
    for name, p in model.named_parameters():
        grad = p.grad.to_dense() if p.grad is not None and p.grad.is_sparse else p.grad  # W^e: sparse_gradients
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_calendar_windows_remain_an_option() -> None:
    torch.manual_seed(0)
    model = LURM(LURMConfig(views="calendar"), INFO)
    out = model(collate(synthetic_rows(8, NUM_INTERESTS, 30)))  # the whole-history bags only
    assert torch.isfinite(out["loss"]) and 0 < out["window_kept_fraction"] <= 1 and "identical_views" not in out
    assert LURM.training_inputs(model.config, INFO, "/nonexistent") is None  # nothing to add to the batch


def test_overfits_one_tiny_batch() -> None:
    model = _model(num_anchors=4, hidden_dim=16)
    batch = _batch(8, seed=1)
    losses = train_steps(model, batch, steps=200, lr=model.config.lr)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.2 * first, (first, last)


def test_embed_shape_deterministic_and_per_user() -> None:
    model = _model()
    table = synthetic_rows(5, NUM_INTERESTS, 30, seed=4)
    batch = collate(table)
    model.train()
    first = model.embed(batch)
    model.eval()
    assert first.shape == (5, model.representation_dim)
    assert torch.equal(first, model.embed(batch))
    for user in range(5):
        alone = model.embed(collate(table.slice(user, 1)))
        torch.testing.assert_close(alone[0], first[user], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scales", ["month", "year", "both"])
def test_each_scale_setting(scales: str) -> None:
    model = _model(scales=scales)
    batch = _batch()
    assert torch.isfinite(model(batch)["loss"])
    assert (model.switch is not None) == (scales == "both")
    month, year = (model.time(model.anchors(*_bags(batch, s)), batch[f"{s}_lengths"]) for s in ("month", "year"))
    if scales == "both":
        both = torch.cat([month, year], dim=-1)  # eq. 7 written out
        s = torch.sigmoid(torch.stack([both[:, i] @ model.switch.weight[i].T + model.switch.bias[i]
                                       for i in range(3)], dim=1))
        expected = s * month + (1 - s) * year
    else:
        expected = month if scales == "month" else year
    torch.testing.assert_close(model.embed(batch), expected.flatten(1))


def test_many_anchors_and_one_wide_anchor_both_build() -> None:
    batch = _batch()
    for config in (dict(num_anchors=4, hidden_dim=6), dict(num_anchors=1, hidden_dim=24)):
        model = _model(**config)
        assert model.representation_dim == 24 and model.embed(batch).shape == (6, 24)
        assert torch.isfinite(model(batch)["loss"])


def _without_bags(table: pa.Table, user: int, scale: str) -> pa.Table:
    rows = table.to_pylist()
    rows[user].update({f"{scale}_periods": [], f"{scale}_ids": [], f"{scale}_values": []})
    return pa.Table.from_pylist(rows, schema=table.schema)


def test_users_without_bags_at_a_scale() -> None:
    table = _without_bags(_without_bags(synthetic_rows(4, NUM_INTERESTS, 30, seed=5), 1, "month"), 2, "year")
    table = _without_bags(_without_bags(table, 3, "month"), 3, "year")  # user 3: no history at all
    batch = collate(table)
    empty = {**batch, **EventViews(INTERESTS, ("month", "year"), 0.5)(table.set_column(
        table.schema.get_field_index("items"), "items", pa.array([[1, 2], [3], [4, 5, 6], []], pa.list_(pa.int32()))
    ).set_column(table.schema.get_field_index("timestamps"), "timestamps",
                 pa.array([[1_500_000_000, 1_600_000_000], [1_500_000_000], [1_500_000_000] * 3, []], pa.list_(pa.int64()))))}
    model = _model()
    out = model(empty)  # user 3 has no event: both views are empty
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(torch.isfinite(p.grad.to_dense() if p.grad.is_sparse else p.grad).all() for p in model.parameters() if p.grad is not None)
    month = model.aggregate(model.anchor_bags(batch)["month"], batch["month_lengths"])[0]  # r̃ (B, M, H)
    assert (month[1] == 0).all() and (month[3] == 0).all()  # zero state
    assert torch.isfinite(model.embed(batch)).all()


# ---------------------------------------------------------------------------------------------
# Views: random continuous time windows (§3.2.4)


def test_windows_keep_exactly_the_bags_inside() -> None:
    batch = _batch(20, seed=6, max_periods=40)
    for seed in range(5):
        torch.manual_seed(seed)
        keep = sample_windows(batch, ("month", "year"), 0.5)
        torch.manual_seed(seed)
        start, end = _random_window(batch["month_periods"], batch["month_lengths"], 0.5)
        for scale in ("month", "year"):
            periods, lengths = batch[f"{scale}_periods"].tolist(), batch[f"{scale}_lengths"].tolist()
            users = [u for u, n in enumerate(lengths) for _ in range(n)]
            for p, u, kept in zip(periods, users, keep[scale].tolist()):
                inside = start[u] <= p <= end[u] if scale == "month" else 12 * p <= end[u] and 12 * p + 11 >= start[u]
                assert kept == bool(inside)


def test_window_bounds_and_non_empty_views() -> None:
    batch = _batch(30, seed=7, max_periods=60)
    periods, lengths = batch["month_periods"], batch["month_lengths"]
    firsts = torch.cumsum(lengths, 0) - lengths
    users = torch.repeat_interleave(torch.arange(30), lengths)
    for seed in range(10):
        torch.manual_seed(seed)
        start, end = _random_window(periods, lengths, 0.5)
        first, last = periods[firsts], periods[firsts + lengths - 1]
        assert (start >= first).all() and (end <= last).all()
        assert (end - start + 1 >= torch.ceil(0.5 * (last - first + 1))).all()
        keep = sample_windows(batch, ("month", "year"), 0.5)
        assert (torch.bincount(users[keep["month"]], minlength=30) >= 1).all()
        year_users = torch.repeat_interleave(torch.arange(30), batch["year_lengths"])
        assert set(year_users[keep["year"]].tolist()) <= set(range(30))
    torch.manual_seed(0)
    assert sample_windows(batch, ("month",), 1.0)["month"].all()  # the full span keeps everything


def test_year_only_windows_and_users_without_reference_bags() -> None:
    table = _without_bags(synthetic_rows(4, NUM_INTERESTS, 30, seed=8, max_periods=40), 0, "month")
    batch = collate(table)
    torch.manual_seed(0)
    keep = sample_windows(batch, ("month", "year"), 0.5)
    assert keep["year"][: batch["year_lengths"][0]].all()  # no month bags: the window is unbounded
    keep = sample_windows(batch, ("year",), 0.5)
    users = torch.repeat_interleave(torch.arange(4), batch["year_lengths"])
    assert (torch.bincount(users[keep["year"]], minlength=4) >= 1).all()


def test_loss_is_info_nce_of_the_two_views_via_gather() -> None:
    model = _model()
    batch = _batch(7)
    x = torch.randn(3, 4)
    assert gather_with_grad(x) is x  # one process: the identity
    torch.manual_seed(11)
    loss = model(batch)["loss"]
    torch.manual_seed(11)
    h_a, h_b, _ = model.project_views(batch)
    assert h_a.shape == h_b.shape == (7, model.representation_dim)
    torch.testing.assert_close(loss, info_nce(h_a, h_b, temperature=0.1))
    assert not math.isclose(loss.item(), info_nce(h_a, h_b.roll(1, 0), temperature=0.1).item())


def test_bucketed_gru_equals_the_packed_sequence_reference_with_gradients() -> None:
    """TimeAggregation runs padded length buckets; a PackedSequence over all rows is the reference."""
    from torch.nn.utils.rnn import pack_padded_sequence

    from raylurm.methods.lurm import TimeAggregation, _pad_by_user

    torch.manual_seed(3)
    module = TimeAggregation(6)
    lengths = torch.tensor([0, 1, 2, 3, 5, 8, 9, 17, 1, 0])  # empty users, every bucket up to 32
    r = torch.randn(int(lengths.sum()), 3, 6, requires_grad=True)  # (bags, M, H)
    initial = torch.randn(10, 3, 6)
    got = module(r, lengths, initial)
    x = _pad_by_user(r, lengths).transpose(1, 2).reshape(30, -1, 6)
    steps = lengths.repeat_interleave(3)
    rows = torch.nonzero(steps > 0).squeeze(1)
    packed = pack_padded_sequence(x[rows], steps[rows], batch_first=True, enforce_sorted=False)
    _, last = module.gru(packed, initial.reshape(30, 6)[rows][None].contiguous())
    want = initial.reshape(30, 6).index_copy(0, rows, last[0]).view(10, 3, 6)
    torch.testing.assert_close(got, want)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum(), [r, *module.parameters()])
    wants = torch.autograd.grad((want * weights).sum(), [r, *module.parameters()])
    for g, w in zip(grads, wants):
        torch.testing.assert_close(g, w)
