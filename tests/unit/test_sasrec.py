"""The SASRec baseline (raylurm.methods.sasrec) and the next-item losses, against naive references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raylurm.losses import next_item as next_item_losses
from raylurm.losses.next_item import catalogue_cross_entropy, catalogue_softmax, mixed_negatives, sampled_softmax_logq
from raylurm.methods.sasrec import SASRec, SASRecConfig, window
from raylurm.train.batch import DataInfo, collate, synthetic_rows
from tests.helpers import train_steps

NUM_ITEMS = 20


def make_model(seed: int = 0, max_length: int = 12, **overrides) -> SASRec:
    torch.manual_seed(seed)
    info = DataInfo(num_interests=10, num_items=NUM_ITEMS, num_behaviors=1, scales=("month", "year"), max_sequence_length=max_length)
    return SASRec(SASRecConfig(**{"hidden_dim": 16, **overrides}), info)


def make_batch(num_users: int = 6, seed: int = 0, max_events: int = 10) -> dict[str, torch.Tensor]:
    return collate(synthetic_rows(num_users, 10, NUM_ITEMS, num_behaviors=1, max_events=max_events, seed=seed))


# --- losses ------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_elements", [1, 33, 1 << 26])  # chunks of 1 row, of 3 rows, one piece
def test_catalogue_softmax_equals_cross_entropy_with_gradients(max_elements: int) -> None:
    g = torch.Generator().manual_seed(max_elements)
    queries = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    items = torch.randn(11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (7,), generator=g)
    got = catalogue_softmax(queries, items, targets, max_elements=max_elements)
    q, e = queries.detach(), items.detach()
    want = torch.tensor([-math.log(math.exp(float(q[n] @ e[targets[n]])) / sum(math.exp(float(q[n] @ e[c])) for c in range(11)))
                         for n in range(7)], dtype=torch.float64)
    torch.testing.assert_close(got.detach(), want)
    got.sum().backward()
    grads = queries.grad.clone(), items.grad.clone()
    queries.grad, items.grad = None, None
    F.cross_entropy(queries @ items.T, targets, reduction="sum").backward()
    torch.testing.assert_close(grads[0], queries.grad)
    torch.testing.assert_close(grads[1], items.grad)


@pytest.mark.parametrize("over", ["pairs", "items"])
@pytest.mark.parametrize("keep_elements", [0, 1 << 28])  # the backward pass recomputes the logits / keeps the softmax
@pytest.mark.parametrize("max_elements", [1, 40, 1 << 26])
def test_fused_catalogue_cross_entropy_passes_gradcheck(max_elements: int, keep_elements: int, over: str) -> None:
    """Several queries per row (DSS's intentions), a scale, per-row upstream weights: the fused backward is the exact
    gradient, and the value is the naive reference — over every (query, item) pair (eq. 6), or over items of each
    item's best query (the score a max_r ranking uses)."""
    g = torch.Generator().manual_seed(3)
    queries = torch.randn(5, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    items = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 6, (5,), generator=g)
    weights = torch.rand(5, generator=g, dtype=torch.float64)
    torch.autograd.gradcheck(lambda q, e: catalogue_cross_entropy(q, e, targets, 0.5, max_elements, keep_elements, over=over)
                             * weights, (queries, items), nondet_tol=1e-12)  # a 2nd backward recomputes: rounding differs
    scores = 0.5 * torch.einsum("nrd,cd->nrc", queries, items)
    if over == "pairs":
        want = torch.logsumexp(scores.flatten(1), 1) - scores[torch.arange(5), :, targets].amax(1)
    else:
        want = F.cross_entropy(scores.amax(dim=1), targets, reduction="none")
    got = catalogue_cross_entropy(queries, items, targets, 0.5, max_elements, keep_elements, over=over)
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad((got * weights).sum(), (queries, items))
    torch.testing.assert_close(grads, torch.autograd.grad((want * weights).sum(), (queries, items)))
    empty = catalogue_cross_entropy(queries[:0], items, targets[:0], 0.5, max_elements, over=over)
    assert empty.shape == (0,) and empty.requires_grad


def test_both_normalisers_are_the_plain_cross_entropy_for_one_query_and_others_are_refused() -> None:
    g = torch.Generator().manual_seed(4)
    one, items, targets = torch.randn(5, 1, 4, generator=g), torch.randn(6, 4, generator=g), torch.randint(0, 6, (5,), generator=g)
    torch.testing.assert_close(catalogue_cross_entropy(one, items, targets, over="items"), catalogue_cross_entropy(one, items, targets))
    with pytest.raises(ValueError, match="over"):
        catalogue_cross_entropy(one, items, targets, over="rows")


def test_catalogue_softmax_checks_shapes() -> None:
    with pytest.raises(ValueError, match="share D"):
        catalogue_softmax(torch.zeros(2, 3), torch.zeros(4, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        catalogue_softmax(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))


def test_sampled_softmax_logq_equals_naive_reference_and_masks_hits() -> None:
    g = torch.Generator().manual_seed(3)
    n, s, d = 4, 6, 3
    queries, positives, negatives = (torch.randn(k, d, generator=g, dtype=torch.float64) for k in (n, n, s))
    positive_log_q, negative_log_q = -torch.rand(n, generator=g, dtype=torch.float64), -torch.rand(s, generator=g, dtype=torch.float64)
    hits = torch.zeros(n, s, dtype=torch.bool)
    hits[0, 2] = hits[3, 0] = hits[3, 5] = True
    got = sampled_softmax_logq(queries, positives, negatives, positive_log_q, negative_log_q, hits)
    for row in range(n):
        positive = math.exp(float(queries[row] @ positives[row] - positive_log_q[row]))
        negative = sum(math.exp(float(queries[row] @ negatives[j] - negative_log_q[j])) for j in range(s) if not hits[row, j])
        assert float(got[row]) == pytest.approx(-math.log(positive / (positive + negative)), rel=1e-9)
    # a hit contributes nothing: changing the masked negative's vector leaves the loss unchanged
    moved = negatives.clone()
    moved[2] += 100.0
    assert float(sampled_softmax_logq(queries, positives, moved, positive_log_q, negative_log_q, hits)[0]) == pytest.approx(float(got[0]))


def test_mixed_negatives_draw_by_the_steps_targets_with_their_mixture_log_q() -> None:
    """A share f of the negatives come from the step's targets (frequency ∝ count), the rest uniform; log Q is the mixture's."""
    torch.manual_seed(0)
    targets = torch.tensor([3] * 6 + [7] * 2)  # item 3 is 3x as frequent as item 7
    negatives, log_q = mixed_negatives(targets, 10, 8, 0.5)
    assert negatives.shape == (8,) and bool((negatives[4:] == 3).sum() + (negatives[4:] == 7).sum() == 4)
    want = torch.full((10,), 0.5 / 10)
    want[3] += 0.5 * 6 / 8
    want[7] += 0.5 * 2 / 8
    torch.testing.assert_close(log_q.exp(), want)
    draws = torch.cat([mixed_negatives(targets, 10, 1000, 0.5)[0][500:] for _ in range(20)])  # the popular half only
    assert float((draws == 3).float().mean()) == pytest.approx(0.75, abs=0.02)
    uniform_ids, uniform_log_q = mixed_negatives(targets, 10, 8, 0.0)  # f = 0: uniform, a constant log Q that cancels
    torch.testing.assert_close(uniform_log_q, torch.full((10,), -math.log(10)))
    assert mixed_negatives(targets[:0], 10, 4, 0.5)[0].shape == (4,)  # no target in the step: all uniform
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            mixed_negatives(targets, 10, 8, bad)


# --- the model ---------------------------------------------------------------------------------
def test_one_pass_states_equal_each_prefix_encoded_alone() -> None:
    """Every position in one causal pass = the prefix x_1..x_t encoded alone (window-absolute positions)."""
    model = make_model().eval()
    items = make_batch()["items"]  # (B, L) left-aligned, 0-padded
    with torch.no_grad():
        z = model.states(items)
        for t in range(1, items.shape[1] + 1):
            prefix = items[:, :t]
            torch.testing.assert_close(model.states(prefix)[:, t - 1], z[:, t - 1], atol=1e-5, rtol=1e-5)


def test_a_prediction_never_sees_its_target() -> None:
    """z_t (which predicts x_{t+1}) has zero gradient w.r.t. the embeddings of x_{t+1} and later items."""
    model = make_model(dropout=0.0).eval()
    items = torch.tensor([[3, 7, 9, 11, 5]])
    x = model.item_embedding(items).detach().requires_grad_(True)  # feed embeddings by hand through the encoder
    scale = math.sqrt(model.config.hidden_dim)
    h = x * scale + model.encoder.position_embedding(torch.arange(5))[None]
    for block in model.encoder.blocks:
        h = block(h)
    z = model.encoder.ln_f(h)
    probe = torch.randn(model.config.hidden_dim)  # not .sum(): a LayerNorm's outputs sum to a constant
    for t in range(5):
        (grad,) = torch.autograd.grad((z[0, t] * probe).sum(), x, retain_graph=True)
        assert torch.all(grad[0, t + 1:] == 0) and grad[0, :t + 1].abs().sum() > 0


def test_embed_and_scores_are_the_last_state() -> None:
    model, batch = make_model(), make_batch()
    z = model.embed(batch)
    assert z.shape == (6, 16) and model.training, "embed leaves the training mode as it was"
    model.eval()
    states = model.states(batch["items"])
    torch.testing.assert_close(z, states[torch.arange(6), batch["lengths"] - 1], atol=1e-6, rtol=1e-6)
    ids = torch.arange(NUM_ITEMS)
    scores = model.score_items(batch, ids)
    torch.testing.assert_close(scores, z @ model.item_embedding.weight[1:].T, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(model.score_items(batch, ids[[4, 2]].expand(6, -1)), scores[:, [4, 2]])
    with pytest.raises(ValueError):
        model.score_items(batch, torch.tensor([NUM_ITEMS]))


def test_long_histories_use_their_last_max_length_items() -> None:
    model = make_model(max_length=4).eval()
    batch = make_batch(max_events=10)
    last = window(batch["items"], (batch["lengths"] - 4).clamp(min=0), batch["lengths"].clamp(max=4))
    torch.testing.assert_close(model.embed(batch), model.embed({"items": last, "lengths": batch["lengths"].clamp(max=4)}))


def test_training_windows_cover_long_histories() -> None:
    """With max_length 3 and 10 items, random windows of 4 start anywhere in [0, 6] over many steps."""
    model = make_model(max_length=3)
    items = torch.arange(1, 11)[None].expand(200, -1)  # 200 users with 10 items each
    seen = set()
    original = next_item_losses.catalogue_softmax
    try:
        def spy(queries, catalogue, target):
            seen.update(target.tolist())
            return original(queries, catalogue, target)
        import raylurm.methods.sasrec as sasrec_module
        sasrec_module.catalogue_softmax = spy
        out = model({"items": items, "lengths": torch.full((200,), 10)})
    finally:
        sasrec_module.catalogue_softmax = original
    assert float(out["positions"]) == 200 * 3, "every window trains its 3 positions"
    assert seen == set(range(1, 10)), "every item but the first is some window's target (0-based ids 1..9)"


@pytest.mark.parametrize("loss,popular", [("full", 0.0), ("sampled", 0.0), ("sampled", 0.5), ("bce", 0.0), ("auto", 0.0)])
def test_every_loss_learns_a_deterministic_successor(loss: str, popular: float) -> None:
    """next item = (item + 1) mod 20: each loss drives the true successor to the top of score_items."""
    torch.manual_seed(0)
    model = make_model(loss=loss, dropout=0.0, num_negatives=8, popular_fraction=popular)
    starts = torch.randint(0, NUM_ITEMS, (32, 1))
    items = (starts + torch.arange(8)[None]) % NUM_ITEMS + 1  # (32, 8) shifted ids
    batch = {"items": items, "lengths": torch.full((32,), 8)}
    losses = train_steps(model, batch, steps=150, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]
    scores = model.score_items(batch, torch.arange(NUM_ITEMS))
    successor = (items[:, -1] - 1 + 1) % NUM_ITEMS
    assert (scores.argmax(dim=1) == successor).float().mean() > 0.9


def test_auto_switches_to_sampled_above_the_threshold() -> None:
    assert make_model().loss == "full"
    assert make_model(full_softmax_max_items=NUM_ITEMS - 1).loss == "sampled"
    assert make_model(loss="bce").loss == "bce"


def test_users_with_one_item_train_nothing_and_stay_finite() -> None:
    model = make_model()
    out = model({"items": torch.tensor([[4], [9]]), "lengths": torch.tensor([1, 1])})
    assert float(out["loss"].detach()) == 0.0
    out["loss"].backward()


@pytest.mark.parametrize("bad", [{"hidden_dim": 10, "num_heads": 3}, {"dropout": 1.0}, {"loss": "bpr"},
                                 {"num_negatives": 0}, {"lr": 0.0}, {"max_length": 0}])
def test_config_validation(bad) -> None:
    with pytest.raises((ValueError, TypeError)):
        SASRecConfig(**bad)
