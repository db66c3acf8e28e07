"""AdaptSSR: the MPR loss and adaptive λ against naive loops, the augmentations, the user model."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from raylurm.config import from_dict
from raylurm.losses.mpr import adaptive_lambda, mpr_loss, pairwise_ranking, resolve_lambda
from raylurm.methods.adaptssr import (
    AdaptSSR,
    AdaptSSRConfig,
    augment,
    crop_index,
    mask_positions,
    most_recent,
    reorder_index,
)
from raylurm.train.batch import DataInfo, collate, synthetic_rows
from tests.helpers import train_steps

INFO = DataInfo(num_interests=40, num_items=30, num_behaviors=3, scales=("month", "year"), max_sequence_length=200)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def _batch(num_users: int = 6, seed: int = 0, max_events: int = 12) -> dict[str, torch.Tensor]:
    return collate(synthetic_rows(num_users, INFO.num_interests, INFO.num_items, max_events=max_events, seed=seed))


# ---------------------------------------------------------------- loss and λ against naive references

def _cos(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.detach(), y.detach()
    return float(x @ y / (x.norm() * y.norm()))


def _lambda_reference(hat, hat_pos, tilde, tilde_pos) -> list[float]:
    return [1 - sum(max(_cos(s, t), 0.0) for s in (hat[i], hat_pos[i]) for t in (tilde[i], tilde_pos[i])) / 4
            for i in range(len(hat))]


def _anchor_loss(views: list[list[torch.Tensor]], i: int, side: int, lam: float) -> float:
    """L̂_i (side 0) or L̃_i (side 1) by explicit loops; views[j] = [û_j, û_j⁺, ũ_j, ũ_j⁺]."""
    anchor, positive = views[i][2 * side], views[i][2 * side + 1]
    semi = [views[i][2 - 2 * side], views[i][3 - 2 * side]]
    hardest = max(_cos(anchor, w) for j in range(len(views)) if j != i for w in views[j])  # U_i⁻: 4 views each
    first = _cos(anchor, positive) - max(_cos(anchor, v) for v in semi)
    second = min(_cos(anchor, v) for v in semi) - hardest
    return -math.log(1 / (1 + math.exp(-(lam * first + (1 - lam) * second))))


def _mpr_reference(hat, hat_pos, tilde, tilde_pos, lam, extra: list[list[torch.Tensor]] = (), at: int = 0) -> float:
    """L = Σ_i (L̂_i + L̃_i) / 2B; ``extra`` users (other workers) are inserted before position ``at``."""
    local = [[hat[i], hat_pos[i], tilde[i], tilde_pos[i]] for i in range(len(hat))]
    views = list(extra[:at]) + local + list(extra[at:])
    total = sum(_anchor_loss(views, at + i, side, float(lam[i])) for i in range(len(hat)) for side in (0, 1))
    return total / (2 * len(hat))


def _random_views(b: int, d: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g, dtype=dtype) for _ in range(4)], torch.rand(b, generator=g, dtype=dtype)


@pytest.mark.parametrize("b,d", [(2, 3), (3, 4), (5, 8), (7, 2)])
def test_mpr_loss_matches_per_sample_loop(b: int, d: int) -> None:
    views, lam = _random_views(b, d, seed=b * 10 + d)
    expected = _mpr_reference(*views, lam)
    torch.testing.assert_close(mpr_loss(*views, lam), torch.tensor(expected, dtype=torch.float64), atol=1e-5, rtol=0)
    got32 = mpr_loss(*[v.float() for v in views], lam.float())
    torch.testing.assert_close(got32, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)


def test_mpr_loss_with_gathered_negatives_matches_loop() -> None:
    """As under DDP: negatives hold other workers' users too; ``own`` locates this worker's rows."""
    views, lam = _random_views(3, 5, seed=1)
    others, _ = _random_views(4, 5, seed=2)
    extra = [[v[j] for v in others] for j in range(4)]
    local = torch.stack(views, dim=1)  # (3, 4, D)
    negatives = torch.cat([torch.stack(others, 1)[:2], local, torch.stack(others, 1)[2:]])  # (7, 4, D)
    got = mpr_loss(*views, lam, negatives=negatives, own=torch.arange(3) + 2)
    torch.testing.assert_close(got, torch.tensor(_mpr_reference(*views, lam, extra, at=2), dtype=torch.float64),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("slot", range(4))
def test_hardest_negative_is_searched_over_all_four_views(slot: int) -> None:
    """Put one view of user 1 exactly on user 0's anchor: the second term becomes min_v sim - 1."""
    views, _ = _random_views(3, 4, seed=7)
    views[slot][1] = views[0][0] * 3.0  # user 1's view ``slot`` parallel to û_0
    lam = torch.zeros(3, dtype=torch.float64)  # only the second term
    loss = mpr_loss(*views, lam)
    torch.testing.assert_close(loss, torch.tensor(_mpr_reference(*views, lam), dtype=torch.float64), atol=1e-5, rtol=0)
    hat, hat_pos, tilde, tilde_pos = views
    per_anchor = pairwise_ranking(hat, hat_pos, torch.stack([tilde, tilde_pos], 1), torch.stack(views, 1),
                                  torch.arange(3), lam)  # (3,) L̂_i
    second = min(_cos(hat[0], tilde[0]), _cos(hat[0], tilde_pos[0])) - 1.0  # hardest negative: cos = 1
    torch.testing.assert_close(per_anchor[0], torch.tensor(-math.log(1 / (1 + math.exp(-second))),
                                                           dtype=torch.float64), atol=1e-6, rtol=0)


def test_mpr_loss_needs_another_user() -> None:
    views, lam = _random_views(1, 3, seed=0)
    with pytest.raises(ValueError, match="other user"):
        mpr_loss(*views, lam)


def test_lambda_on_hand_set_similarities() -> None:
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    c60 = torch.tensor([0.5, math.sqrt(3) / 2])  # cos(e1, c60) = 0.5, cos(e2, c60) = √3/2
    hat, hat_pos = torch.stack([e1, e1, e1]), torch.stack([e2, e1, e2])
    tilde, tilde_pos = torch.stack([e1, -e1, c60]), torch.stack([-e1, -e2, 2 * c60])
    # user 0: cos = 1, -1 (-> 0), 0, 0 -> λ = 1 - 1/4; user 1: all negative -> clipped -> λ = 1;
    # user 2: 0.5 + 0.5 + √3/2 + √3/2 -> λ = 1 - (1 + √3)/4
    expected = torch.tensor([0.75, 1.0, 1 - (1 + math.sqrt(3)) / 4])
    torch.testing.assert_close(adaptive_lambda(hat, hat_pos, tilde, tilde_pos), expected, atol=1e-6, rtol=0)


def test_lambda_matches_formula_loop_and_is_detached() -> None:
    views, _ = _random_views(6, 5, seed=3)
    views = [v.requires_grad_() for v in views]
    lam = adaptive_lambda(*views)
    assert not lam.requires_grad and lam.shape == (6,)
    torch.testing.assert_close(lam, torch.tensor(_lambda_reference(*views), dtype=torch.float64), atol=1e-6, rtol=0)
    assert bool(((lam >= 0) & (lam <= 1)).all())


def test_lambda_modes() -> None:
    lam = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(resolve_lambda(lam, "per_sample"), lam)
    torch.testing.assert_close(resolve_lambda(lam, "batch_mean"), torch.full((3,), 0.5))
    torch.testing.assert_close(resolve_lambda(lam, "fixed", 0.3), torch.full((3,), 0.3))
    with pytest.raises(ValueError, match="lambda mode"):
        resolve_lambda(lam, "median")


@pytest.mark.parametrize("mode", ["per_sample", "batch_mean", "fixed"])
def test_model_loss_uses_the_configured_lambda(mode: str) -> None:
    """The step's loss is mpr_loss of the four encodings with λ resolved as configured."""
    model = AdaptSSR(AdaptSSRConfig(lambda_mode=mode, fixed_lambda=0.3), INFO)
    captured = []
    model.encoder.register_forward_hook(lambda module, args, out: captured.append(out.detach()))
    torch.manual_seed(0)
    out = model(_batch())
    hat, hat_pos, tilde, tilde_pos = captured[0].chunk(4)
    lam = resolve_lambda(adaptive_lambda(hat, hat_pos, tilde, tilde_pos), mode, 0.3)
    torch.testing.assert_close(out["loss"].detach(), mpr_loss(hat, hat_pos, tilde, tilde_pos, lam), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["lambda"], lam.mean())
    if mode != "per_sample":
        assert torch.unique(lam).numel() == 1


# ---------------------------------------------------------------- augmentations

LENGTHS = torch.tensor([1, 2, 3, 5, 7, 10, 13, 20])
WIDTH = 22


def _sequences() -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct item ids per position (100·row + position + 1), behaviours tied to items, 0 = padding."""
    position = torch.arange(WIDTH)
    valid = position < LENGTHS[:, None]
    items = (100 * torch.arange(len(LENGTHS))[:, None] + position + 1) * valid
    return items, (items % 3 + 1) * valid


def _view(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One view of :func:`_sequences` with only augmentation ``name`` enabled ([MASK] = 999 / 9)."""
    items, behaviors = _sequences()
    return augment(items, behaviors, LENGTHS, AdaptSSRConfig(augmentations=(name,)), mask_item=999, mask_behavior=9)


def test_mask_keeps_length_and_masks_the_right_fraction_of_valid_positions() -> None:
    torch.manual_seed(0)
    items, behaviors = _sequences()
    for _ in range(20):
        view, view_behaviors, lengths = _view("mask")
        masked = view == 999
        assert torch.equal(lengths, LENGTHS)
        expected = torch.tensor([min(math.ceil(0.6 * n), n - 1) for n in LENGTHS.tolist()])
        assert torch.equal(masked.sum(1), expected)
        assert not masked[items == 0].any()  # valid positions only, padding untouched
        assert torch.equal(view[~masked], items[~masked]) and bool((view_behaviors[masked] == 9).all())
        assert torch.equal(view_behaviors[~masked], behaviors[~masked])


def test_mask_positions_are_uniform_over_valid_positions() -> None:
    torch.manual_seed(1)
    hits = sum(mask_positions(torch.tensor([10]), 12, 0.6).float() for _ in range(2000))[0] / 2000
    assert hits[10:].sum() == 0 and torch.allclose(hits[:10], torch.full((10,), 0.6), atol=0.05)


def test_crop_keeps_a_contiguous_subsequence_of_the_right_length() -> None:
    torch.manual_seed(0)
    items, behaviors = _sequences()
    starts = set()
    for _ in range(20):
        view, view_behaviors, lengths = _view("crop")
        expected = torch.tensor([max(1, math.ceil(0.4 * n)) for n in LENGTHS.tolist()])
        assert torch.equal(lengths, expected)
        for row, (n, c) in enumerate(zip(LENGTHS.tolist(), expected.tolist())):
            start = int(view[row, 0]) - 100 * row - 1
            assert 0 <= start <= n - c
            assert torch.equal(view[row, :c], items[row, start:start + c])  # contiguous, in order
            assert torch.equal(view_behaviors[row, :c], behaviors[row, start:start + c])
            assert not view[row, c:].any() and not view_behaviors[row, c:].any()  # padding
            starts.add((row, start))
    assert len({s for r, s in starts if r == 7}) > 3  # the start is random


def test_reorder_permutes_exactly_one_contiguous_span() -> None:
    torch.manual_seed(0)
    items, behaviors = _sequences()
    moved_any = False
    for _ in range(20):
        view, view_behaviors, lengths = _view("reorder")
        assert torch.equal(lengths, LENGTHS)
        assert torch.equal(view.sort(1).values, items.sort(1).values)  # same multiset, padding stays
        assert torch.equal(view_behaviors, (view % 3 + 1) * (view > 0))  # behaviours move with items
        for row, n in enumerate(LENGTHS.tolist()):
            span = math.ceil(0.6 * n)
            changed = (view[row] != items[row]).nonzero().flatten()
            if len(changed):
                moved_any = True
                first, last = int(changed.min()), int(changed.max())
                assert last - first + 1 <= span and last < n
                assert torch.equal(view[row, first:last + 1].sort().values, items[row, first:last + 1])  # a span
    assert moved_any


def test_reorder_index_shuffles_the_whole_span_uniformly() -> None:
    """With ratio 1 every permutation of 3 events is equally likely."""
    torch.manual_seed(0)
    index = reorder_index(torch.tensor([3] * 3000), 4, 1.0)  # (3000, 4)
    assert bool((index[:, 3] == 3).all())
    counts = torch.unique(index[:, :3], dim=0, return_counts=True)[1]
    assert len(counts) == 6 and bool(((counts - 500).abs() < 100).all())


def test_crop_index_range() -> None:
    index, lengths = crop_index(torch.tensor([5, 1, 0]), 6, 0.4)
    assert lengths.tolist() == [2, 1, 0] and index.max() <= 5


def test_views_mix_augmentations_and_follow_the_global_seed() -> None:
    items, behaviors = _sequences()
    torch.manual_seed(3)
    first = augment(items, behaviors, LENGTHS, AdaptSSRConfig(), 999, 9)
    torch.manual_seed(3)
    second = augment(items, behaviors, LENGTHS, AdaptSSRConfig(), 999, 9)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    kinds = set()
    for _ in range(10):
        view, _, lengths = augment(items, behaviors, LENGTHS, AdaptSSRConfig(), 999, 9)
        kinds |= {"mask" if (view == 999).any(1)[r] else "crop" if lengths[r] < LENGTHS[r] else "other"
                  for r in range(len(LENGTHS)) if LENGTHS[r] >= 5}
    assert kinds == {"mask", "crop", "other"}


def test_most_recent_keeps_the_last_events() -> None:
    items = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]])
    (cut,), lengths = most_recent([items], torch.tensor([5, 2]), 3)
    assert cut.tolist() == [[3, 4, 5], [6, 7, 0]] and lengths.tolist() == [3, 2]


# ---------------------------------------------------------------- the model

def test_builds_with_a_finite_loss_and_gradients_everywhere() -> None:
    torch.manual_seed(0)
    model = AdaptSSR(AdaptSSRConfig(), INFO)
    assert model.name == "adaptssr" and model.representation_dim == 64 and model.max_length == 150
    assert model.encoder.behaviors is not None  # 3 behaviour types
    out = model(_batch())
    assert set(out) == {"loss", "lambda", "lambda_adaptive"} and all(v.ndim == 0 for v in out.values())
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert model.encoder.items.weight.grad[INFO.num_items + 1].abs().sum() > 0  # the [MASK] row is trained


def test_max_length_and_behaviour_embedding_follow_data_info() -> None:
    small = dataclasses.replace(INFO, max_sequence_length=20, num_behaviors=1)
    model = AdaptSSR(AdaptSSRConfig(), small)
    assert model.max_length == 20 and model.encoder.positions.num_embeddings == 20
    assert model.encoder.behaviors is None
    assert AdaptSSR(AdaptSSRConfig(behavior_embedding=False), INFO).encoder.behaviors is None
    assert torch.isfinite(model(_batch(max_events=30))["loss"])  # longer than max_length: cut


def test_overfits_one_tiny_batch() -> None:
    torch.manual_seed(0)
    model = AdaptSSR(AdaptSSRConfig(), INFO)
    batch = _batch(num_users=6, max_events=8)
    losses = train_steps(model, batch, steps=150, lr=1e-3)
    assert sum(losses[-20:]) / 20 < 0.7 * losses[0], (losses[0], losses[-20:])


def test_two_encodings_differ_in_train_mode_and_coincide_in_eval_mode() -> None:
    model = AdaptSSR(AdaptSSRConfig(), INFO)
    items, behaviors, lengths = model._inputs(_batch())
    model.train()
    assert not torch.allclose(model.encoder(items, behaviors, lengths), model.encoder(items, behaviors, lengths))
    model.eval()
    assert torch.equal(model.encoder(items, behaviors, lengths), model.encoder(items, behaviors, lengths))


def test_embed_shape_determinism_and_independence_from_the_batch() -> None:
    model = AdaptSSR(AdaptSSRConfig(), INFO)
    model.train()
    batch = _batch(num_users=5, max_events=12)
    first = model.embed(batch)
    assert model.training  # mode restored
    assert first.shape == (5, 64) and torch.equal(first, model.embed(batch))
    for user in range(5):
        alone = collate(synthetic_rows(5, INFO.num_interests, INFO.num_items, max_events=12, seed=0).slice(user, 1))
        torch.testing.assert_close(model.embed(alone)[0], first[user], atol=1e-5, rtol=0)


def test_embed_uses_the_most_recent_events() -> None:
    model = AdaptSSR(AdaptSSRConfig(max_length=4), INFO)
    batch = {"items": torch.tensor([[5, 6, 7, 8, 9, 10]]), "behaviors": torch.tensor([[1, 2, 3, 1, 2, 3]]),
             "lengths": torch.tensor([6])}
    recent = {"items": torch.tensor([[7, 8, 9, 10]]), "behaviors": torch.tensor([[3, 1, 2, 3]]),
              "lengths": torch.tensor([4])}
    torch.testing.assert_close(model.embed(batch), model.embed(recent), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", [
    {"dim": 63}, {"num_heads": 0}, {"dropout": 1.0}, {"max_length": 0}, {"augmentations": ()},
    {"augmentations": ("mask", "mask")}, {"augmentations": ("flip",)}, {"mask_ratio": 0.0}, {"crop_ratio": 1.5},
    {"reorder_ratio": -0.1}, {"lambda_mode": "median"}, {"fixed_lambda": 1.5}, {"lr": 0.0}, {"batch_size": 1},
])
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        AdaptSSRConfig(**bad)


def test_config_from_dict() -> None:
    config = from_dict(AdaptSSRConfig, {"augmentations": ["crop", "reorder"], "lambda_mode": "batch_mean"})
    assert config.augmentations == ("crop", "reorder") and config.lr == 2e-4 and config.batch_size == 128
    with pytest.raises(ValueError, match="unknown"):
        from_dict(AdaptSSRConfig, {"lamda_mode": "fixed"})
