"""DSS (KDD'20 §4.2): losses against naive loops, the disentanglement layer, the model contract."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from raylurm.config import from_dict
from raylurm.losses.dss import catalogue_seq2item_losses, select_smallest, seq2item_losses, seq2seq_losses
from raylurm.methods import dss as dss_module
from raylurm.methods.dss import DSS, DSSConfig, sample_cuts, window
from raylurm.train.batch import DataInfo, collate, synthetic_rows

INFO = DataInfo(num_interests=20, num_items=50, num_behaviors=3, scales=("month", "year"), max_sequence_length=12)
#: the paper's setting (one cut per user, in-batch seq2item candidates, positions from the latest item)
PAPER = dict(DSS.paper_loss)  # the paper's training: one cut, in-batch candidates, positions from the latest, 1/√D, weight 1


def _model(seed: int = 0, **overrides) -> DSS:
    torch.manual_seed(seed)
    return DSS(DSSConfig(**overrides), INFO)


def _batch(num_users: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    return collate(synthetic_rows(num_users, INFO.num_interests, INFO.num_items, max_events=12, seed=seed))


# ---------------------------------------------------------------- losses vs naive loops

def _seq2item_reference(phi, candidates, targets, mask):
    """Eq. 5-6 as explicit loops over (b, n, k)."""
    b_size, k_size, d = phi.shape
    out = []
    for b in range(b_size):
        score = lambda n, k: math.exp(float(candidates[n] @ phi[b, k]) / math.sqrt(d))
        numerator = max(score(int(targets[b]), k) for k in range(k_size))
        denominator = sum(score(n, k) for n in range(len(candidates)) if mask[n] for k in range(k_size))
        out.append(-math.log(numerator / denominator))
    return torch.tensor(out, dtype=torch.float64)


def _seq2seq_reference(phi, future, targets, mask):
    """Eq. 3 as explicit loops over (b, k, n, k')."""
    b_size, k_size, d = phi.shape
    out = torch.zeros(b_size, k_size, dtype=torch.float64)
    for b in range(b_size):
        for k in range(k_size):
            score = lambda n, kk: math.exp(float(future[n, kk] @ phi[b, k]) / math.sqrt(d))
            denominator = sum(score(n, kk) for n in range(len(future)) if mask[n] for kk in range(k_size))
            out[b, k] = -math.log(score(int(targets[b]), k) / denominator)
    return out


@pytest.mark.parametrize("b,n,k,d,offset", [(1, 1, 1, 3, 0), (3, 3, 2, 4, 0), (4, 8, 4, 5, 4), (5, 10, 3, 8, 0)])
def test_seq2item_matches_loops(b, n, k, d, offset) -> None:
    g = torch.Generator().manual_seed(b * 10 + n)
    phi = torch.randn(b, k, d, generator=g, dtype=torch.float64)
    candidates = torch.randn(n, d, generator=g, dtype=torch.float64)
    targets = torch.arange(b) + offset  # as if gathered from ranks: this rank's rows start at offset
    mask = torch.ones(n, dtype=torch.bool)
    if n > b:
        mask[0 if offset else n - 1] = False  # a candidate row that is no sample
    expected = _seq2item_reference(phi, candidates, targets, mask)
    torch.testing.assert_close(seq2item_losses(phi, candidates, targets, mask), expected, atol=1e-5, rtol=1e-5)
    single = seq2item_losses(phi.float(), candidates.float(), targets, mask)
    torch.testing.assert_close(single, expected.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("b,n,k,d,offset", [(1, 1, 1, 3, 0), (3, 3, 2, 4, 0), (4, 8, 4, 5, 4), (5, 10, 3, 8, 0)])
def test_seq2seq_matches_loops(b, n, k, d, offset) -> None:
    g = torch.Generator().manual_seed(b * 10 + n + 1)
    phi = torch.randn(b, k, d, generator=g, dtype=torch.float64)
    future = torch.randn(n, k, d, generator=g, dtype=torch.float64)
    targets = torch.arange(b) + offset
    mask = torch.ones(n, dtype=torch.bool)
    if n > b:
        mask[0 if offset else n - 1] = False
    expected = _seq2seq_reference(phi, future, targets, mask)
    torch.testing.assert_close(seq2seq_losses(phi, future, targets, mask), expected, atol=1e-5, rtol=1e-5)
    single = seq2seq_losses(phi.float(), future.float(), targets, mask)
    torch.testing.assert_close(single, expected.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.3, 0.29, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("b,k", [(5, 4), (25, 4), (100, 1), (7, 3)])
def test_selection_keeps_exactly_floor_lambda_b_k_smallest(fraction, b, k) -> None:
    losses = torch.rand(b, k, generator=torch.Generator().manual_seed(b + k))
    keep = select_smallest(losses, fraction)
    count = math.floor(Fraction(str(fraction)) * b * k)
    assert keep.shape == losses.shape and int(keep.sum()) == count
    assert set(losses[keep].tolist()) == set(sorted(losses.flatten().tolist())[:count])


def test_selection_ignores_invalid_entries() -> None:
    losses = torch.tensor([[0.1, 5.0], [0.2, 0.3], [9.0, 0.4]])
    valid = torch.tensor([[False, True], [True, True], [True, True]])
    keep = select_smallest(losses, 0.4, valid)  # ⌊0.4 · 5⌋ = 2 of the 5 valid
    assert keep.tolist() == [[False, False], [True, True], [False, False]]
    with pytest.raises(ValueError):
        select_smallest(losses, 1.5)


# ---------------------------------------------------------------- sequence split

def test_window_and_reversed_future() -> None:
    items = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]])
    start, length = torch.tensor([1, 0]), torch.tensor([3, 2])
    assert window(items, start, length).tolist() == [[2, 3, 4], [6, 7, 0]]
    # cut t = 2 for user 0 (T = 5): future x_{T:t+1} = x_5, x_4, x_3 -> the last column is x_{t+1}
    assert window(items, torch.tensor([2, 1]), torch.tensor([3, 1]), reverse=True).tolist() == [[5, 4, 3], [7, 0, 0]]


def test_cuts_are_inside_each_sequence() -> None:
    torch.manual_seed(0)
    lengths = torch.tensor([2, 3, 7, 1] * 500)
    cuts = sample_cuts(lengths)
    ok = (cuts >= 1) & ((cuts <= lengths - 1) | (lengths < 2))
    assert bool(ok.all()) and set(cuts[lengths == 7].tolist()) == set(range(1, 7))


# ---------------------------------------------------------------- the disentanglement layer

def _encoded(model: DSS, items: torch.Tensor):
    valid = items > 0
    length = valid.sum(1, keepdim=True)
    positions = (length - 1 - torch.arange(items.shape[1])).clamp(min=0)
    return model.encoder(items, positions, valid), positions, valid


def test_intention_weights_are_distributions_and_zero_on_padding() -> None:
    model = _model(**PAPER).eval()
    items = window(_batch()["items"], torch.zeros(8, dtype=torch.long), torch.tensor([1, 2, 3, 4, 5, 6, 7, 8]))
    z, positions, valid = _encoded(model, items)
    p_k = model.disentangle.category_weights(z)  # (B, L, K)
    p_i = model.disentangle.position_weights(z, positions, valid)  # (B, L)
    torch.testing.assert_close(p_k.sum(-1), torch.ones_like(p_k[..., 0]))
    torch.testing.assert_close(p_i.sum(-1), torch.ones(8))
    assert bool((p_i[~valid] == 0).all()) and bool((p_i[valid] > 0).all())


@torch.no_grad()
def test_disentanglement_matches_loops() -> None:
    """φ^(k) = LN5(β_k + Σ_i p_{k|i} p_i z_i) for one sequence, every equation written out."""
    model = _model(seed=3, **PAPER).eval()
    layer, d = model.disentangle, model.config.hidden_dim
    items = torch.tensor([[3, 9, 4, 0, 0]])
    z, positions, valid = _encoded(model, items)
    t = 3
    alpha = [layer.position_embedding.weight[t - 1 - i] for i in range(t)]  # α of each item, 0 = latest
    query = layer.ln_4(alpha[t - 1] + z[0, t - 1] + layer.query_bias)
    keys = []
    for i in range(t):
        k_tilde = layer.ln_3(alpha[i] + z[0, i])
        keys.append(k_tilde + torch.relu(layer.key_transform.weight @ k_tilde + layer.key_transform.bias))
    logits = [float(key @ query) / math.sqrt(d) for key in keys]
    p_i = [math.exp(x) / sum(math.exp(y) for y in logits) for x in logits]
    for k in range(model.config.num_intentions):
        sims = [[float(layer.ln_1(z[0, i]) @ layer.ln_2(layer.prototypes[kk])) / math.sqrt(d)
                 for kk in range(model.config.num_intentions)] for i in range(t)]
        p_k = [math.exp(s[k]) / sum(math.exp(x) for x in s) for s in sims]
        expected = layer.ln_5(layer.input_bias[k] + sum(p_k[i] * p_i[i] * z[0, i] for i in range(t)))
        torch.testing.assert_close(layer(z, positions, valid)[0, k], expected, atol=1e-5, rtol=1e-5)


def test_future_uses_its_own_bias() -> None:
    model = _model().eval()
    items = _batch()["items"]
    before_future, before_input = model.intentions(items, future=True), model.intentions(items)
    with torch.no_grad():
        model.disentangle.input_bias.add_(1.0)
    torch.testing.assert_close(model.intentions(items, future=True), before_future, rtol=0, atol=0)
    assert not torch.allclose(model.intentions(items), before_input)
    with torch.no_grad():
        model.disentangle.future_bias.add_(1.0)
    assert not torch.allclose(model.intentions(items, future=True), before_future)


def test_encoder_is_causal() -> None:
    model = _model().eval()
    items = torch.tensor([[5, 6, 7, 8, 9, 10]])
    z, _, _ = _encoded(model, items)
    for i in range(5):
        changed = items.clone()
        changed[0, i + 1:] = torch.randint(1, INFO.num_items + 1, (5 - i,))
        z_changed, _, _ = _encoded(model, changed)
        torch.testing.assert_close(z_changed[0, : i + 1], z[0, : i + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(z_changed[0, i + 1:], z[0, i + 1:])


# ---------------------------------------------------------------- the method contract

def test_paper_model_finite_loss_and_all_gradients() -> None:
    model = _model(**PAPER)
    out = model(_batch())
    assert set(out) >= {"loss", "seq2item", "seq2seq"} and all(v.ndim == 0 for v in out.values())
    assert torch.isfinite(out["loss"])
    assert int(out["seq2seq_kept"]) == math.floor(0.5 * 8 * 4)
    torch.testing.assert_close(out["loss"].detach(), out["seq2item"] + out["seq2seq"])
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing


def test_lambda_zero_is_pure_seq2item() -> None:
    model = _model(selection_fraction=0.0)
    out = model(_batch())
    assert float(out["seq2seq"]) == 0.0
    torch.testing.assert_close(out["loss"].detach(), out["seq2item"])
    out["loss"].backward()
    assert model.disentangle.future_bias.grad is None


def test_users_without_a_cut_are_left_out() -> None:
    model = _model(**PAPER).eval()
    batch = _batch(4)
    short = {k: v.clone() for k, v in batch.items()}
    short["items"][0, 1:] = 0
    short["lengths"][0] = 1
    out = model(short)
    assert torch.isfinite(out["loss"]) and int(out["seq2seq_kept"]) == math.floor(0.5 * 3 * 4)
    alone = {k: v[:1] for k, v in short.items()}
    assert float(model(alone)["loss"].detach()) == 0.0


@pytest.mark.parametrize("options,steps", [({}, 200), (PAPER, 100)])  # every position of 8 users takes longer to memorise
def test_overfits_one_tiny_batch(one_thread, options, steps) -> None:
    model = _model(dropout=0.0, **options)
    batch = _batch(8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        torch.manual_seed(1)  # the same cuts t every step: one fixed batch of (u, t) samples
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert last < 0.35 * first, (first, last)


def test_embed_shape_deterministic_and_per_user() -> None:
    model = _model()
    batch = _batch(6, seed=1)
    emb = model.embed(batch)
    assert emb.shape == (6, model.representation_dim) == (6, 4 * 64)
    assert model.training  # embed restores the mode it found
    torch.testing.assert_close(model.embed(batch), emb, rtol=0, atol=0)
    model.eval()
    for u in range(6):
        alone = {k: v[u: u + 1] for k, v in batch.items()}
        alone["items"] = alone["items"][:, : int(alone["lengths"][0])]  # no padding at all
        torch.testing.assert_close(model.embed(alone)[0], emb[u], atol=1e-5, rtol=1e-5)


def test_embed_uses_the_most_recent_max_length_items() -> None:
    model = _model(max_length=4).eval()
    batch = _batch(8)
    long = batch["lengths"] > 4
    batch = {"items": batch["items"][long], "lengths": batch["lengths"][long]}
    n = int(long.sum())
    assert n >= 2
    four = torch.full((n,), 4)
    recent = {"items": window(batch["items"], batch["lengths"] - 4, four), "lengths": four}
    torch.testing.assert_close(model.embed(batch), model.embed(recent))


def test_score_items_is_max_over_intentions() -> None:
    model = _model().eval()
    batch = _batch(5)
    phi = model.embed(batch).view(5, 4, 64)
    ids = torch.tensor([0, 7, 49])
    h = model.item_embedding.weight[ids + 1].detach()
    expected = torch.tensor([[max(float(h[c] @ phi[b, k]) for k in range(4)) for c in range(3)] for b in range(5)])
    torch.testing.assert_close(model.score_items(batch, ids), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.score_items(batch, ids.expand(5, 3)), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad", [dict(hidden_dim=0), dict(num_heads=3), dict(dropout=1.0), dict(num_intentions=0),
                                 dict(selection_fraction=1.5), dict(selection_fraction=-0.1), dict(seq2seq_weight=-1.0),
                                 dict(max_length=0), dict(lr=0.0), dict(batch_size=0), dict(num_layers=0)])
def test_config_validation(bad) -> None:
    with pytest.raises(ValueError):
        DSSConfig(**bad)


@pytest.mark.parametrize("bad", [dict(seq2item_candidates="in_batch"), dict(positions="from_latest"), dict(cuts_per_user=0)])
def test_all_positions_refuses_the_one_cut_options(bad) -> None:
    with pytest.raises(ValueError):
        DSSConfig(**bad)
    if "cuts_per_user" not in bad:
        DSSConfig(objective="one_cut", **bad)  # fine with the paper's sampling


# ---------------------------------------------------------------- every position in one pass

def test_catalogue_seq2item_is_eq_6_over_every_item() -> None:
    g = torch.Generator().manual_seed(5)
    phi = torch.randn(7, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    items = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (7,), generator=g)
    expected = seq2item_losses(phi, items, targets, torch.ones(9, dtype=torch.bool))  # the in-batch form, every item a candidate
    for max_elements in (1, 3 * 9 * 3, 1 << 26):  # chunks of one row, of three rows, one piece
        got = catalogue_seq2item_losses(phi, items, targets, max_elements=max_elements)
        torch.testing.assert_close(got, expected)
        grads = torch.autograd.grad(got.sum(), (phi, items))
        want = torch.autograd.grad(expected.sum(), (phi, items), retain_graph=True)
        torch.testing.assert_close(grads[0], want[0])
        torch.testing.assert_close(grads[1], want[1])


def test_seq2item_over_items_normalises_by_each_items_best_intention() -> None:
    g = torch.Generator().manual_seed(6)
    phi = torch.randn(7, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    items = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (7,), generator=g)
    want = F.cross_entropy(torch.einsum("bkd,cd->bck", phi, items).amax(dim=-1), targets, reduction="none")
    in_batch = seq2item_losses(phi, items, targets, torch.ones(9, dtype=torch.bool), scale=1.0, over="items")
    catalogue = catalogue_seq2item_losses(phi, items, targets, scale=1.0, over="items")
    torch.testing.assert_close(in_batch, want)
    torch.testing.assert_close(catalogue, want)
    pairs = catalogue_seq2item_losses(phi, items, targets, scale=1.0)
    assert (pairs > catalogue).all()  # eq. 6's normaliser adds the K-1 other intentions of every item


@pytest.mark.parametrize("latest_state", [False, True])
@torch.no_grad()
def test_every_prefix_equals_each_prefix_encoded_alone(latest_state: bool) -> None:
    model = _model(seed=2, latest_state=latest_state).eval()
    items = _batch(6)["items"]
    lengths = (items > 0).sum(1)
    every = model.every_prefix(items)  # (B, L, K, D)
    for t in range(1, items.shape[1] + 1):
        rows = lengths >= t
        torch.testing.assert_close(every[rows, t - 1], model.intentions(items[rows, :t]), atol=1e-5, rtol=1e-5)
    future = model.every_prefix(items, future=True)
    torch.testing.assert_close(future[:, 0], model.intentions(items[:, :1], future=True), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("latest_state", [False, True])
def test_prefixes_at_chosen_rows_equal_those_rows_of_every_prefix(latest_state: bool) -> None:
    torch.manual_seed(0)
    model = _model(seed=3, latest_state=latest_state).eval()
    items = _batch(6)["items"]
    rows = torch.randint(0, items.shape[1], (items.shape[0], 3))
    for future in (False, True):
        every = model.every_prefix(items, future=future)  # (B, L, K, D)
        chosen = model.every_prefix(items, future=future, rows=rows)  # (B, 3, K, D)
        torch.testing.assert_close(chosen, every[torch.arange(items.shape[0])[:, None], rows])
    model.train()
    model.zero_grad()
    torch.manual_seed(1)
    every = model.every_prefix(items, future=True)[torch.arange(items.shape[0])[:, None], rows].sum()
    want = torch.autograd.grad(every, list(model.parameters()), allow_unused=True)
    torch.manual_seed(1)
    got = torch.autograd.grad(model.every_prefix(items, future=True, rows=rows).sum(), list(model.parameters()), allow_unused=True)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_all_positions_seq2seq_pairs_each_cut_with_its_reversed_future(monkeypatch) -> None:
    """The one-pass inputs and futures of the seq2seq term equal φ(x_{1:t}) and φ(x_{T:t+1}) encoded per cut."""
    model = _model(seed=4, cuts_per_user=2).eval()
    batch = _batch(5)
    cuts = [torch.tensor([1, 2, 3, 1, 2]), torch.tensor([4, 1, 1, 2, 3])]
    cuts = [torch.minimum(c, (batch["lengths"] - 1).clamp(min=1)) for c in cuts]
    supplied = iter(cuts)
    monkeypatch.setattr(dss_module, "sample_cuts", lambda span: next(supplied))
    seen = {}
    real = dss_module.seq2seq_losses

    def spy(intentions, candidates, targets, mask):
        seen.update(intentions=intentions, candidates=candidates, targets=targets)
        return real(intentions, candidates, targets, mask)

    monkeypatch.setattr(dss_module, "seq2seq_losses", spy)
    with torch.no_grad():
        model(batch)
    items, lengths = batch["items"], batch["lengths"]
    for b in range(5):
        for c in range(2):
            t, n = int(cuts[c][b]), int(lengths[b])
            row = b * 2 + c
            expected_input = model.intentions(items[b:b + 1, :t])[0]
            expected_future = model.intentions(window(items[b:b + 1], torch.tensor([t]), torch.tensor([n - t]), reverse=True),
                                               future=True)[0]
            torch.testing.assert_close(seen["intentions"][row], expected_input, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(seen["candidates"][int(seen["targets"][row])], expected_future, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("normaliser", ["pairs", "items"])
def test_all_positions_trains_every_position_with_finite_loss_and_all_gradients(normaliser: str) -> None:
    model = _model(seq2item_normaliser=normaliser)
    batch = _batch()
    out = model(batch)
    assert float(out["positions"]) == float((batch["lengths"].clamp(max=INFO.max_sequence_length + 1) - 1).sum())
    assert int(out["seq2seq_kept"]) == math.floor(0.5 * 8 * model.config.cuts_per_user * 4)
    torch.testing.assert_close(out["loss"].detach(), out["seq2item"] + model.config.seq2seq_weight * out["seq2seq"])
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing


def test_checkpoints_written_before_the_options_rebuild_the_paper_model() -> None:
    from raylurm.train.checkpoint import build_model

    old = {"method": "dss", "method_config": {"hidden_dim": 8, "num_intentions": 2}, "info": dataclasses.asdict(INFO)}
    model = build_model(old)
    assert (model.config.objective, model.config.seq2item_candidates, model.config.positions) == \
        ("one_cut", "in_batch", "from_latest")
    assert model.config.seq2item_normaliser == "pairs" and DSSConfig().seq2item_normaliser == "items"
    new = {**old, "method_config": {**old["method_config"], "objective": "all_positions", "seq2item_candidates": "catalogue",
                                    "positions": "window"}}
    assert build_model(new).config.objective == "all_positions"


def test_config_from_dict_and_defaults() -> None:
    config = from_dict(DSSConfig, {"num_intentions": 2, "selection_fraction": 0.25})
    assert (config.num_intentions, config.selection_fraction, config.lr, config.batch_size) == (2, 0.25, 1e-3, 64)
    with pytest.raises(ValueError):
        from_dict(DSSConfig, {"lambda": 0.5})
    assert DSS.name == "dss" and DSS.Config is DSSConfig
    assert DSS(dataclasses.replace(config), INFO).max_length == INFO.max_sequence_length


def test_the_default_loss_learns_a_deterministic_successor() -> None:
    """Each item has one successor: DSS's default (unit temperature, seq2seq at weight 0.1) learns to rank it first."""
    torch.manual_seed(0)
    num_items, length = 60, 12
    info = dataclasses.replace(INFO, num_items=num_items, max_sequence_length=length)
    successor = torch.randperm(num_items) + 1

    def batch(n: int = 32) -> dict:
        x = torch.zeros(n, length + 1, dtype=torch.long)
        x[:, 0] = torch.randint(1, num_items + 1, (n,))
        for t in range(1, length + 1):
            x[:, t] = successor[x[:, t - 1] - 1]
        return {"items": x, "lengths": torch.full((n,), length + 1)}

    model = DSS(DSSConfig(hidden_dim=32, dropout=0.0), info)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        loss = model(batch())["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = batch(64)
    history = {"items": test["items"][:, :length], "lengths": torch.full((64,), length)}
    top = model.score_items(history, torch.arange(num_items)).argmax(dim=1) + 1
    assert (top == test["items"][:, length]).float().mean() > 0.9


@torch.no_grad()
def test_latest_state_adds_the_latest_items_state_to_every_intention() -> None:
    """latest_state: φ^(k) + z_t (t = the latest item), every intention; the layer's other weights unchanged."""
    plain, residual = _model(seed=5, latest_state=False).eval(), _model(seed=5, latest_state=True).eval()
    residual.load_state_dict(plain.state_dict())
    items = _batch(6)["items"]
    z, _, valid = residual._encode(items)
    latest = z[torch.arange(len(items)), valid.sum(1) - 1]  # (B, D)
    torch.testing.assert_close(residual.intentions(items), plain.intentions(items) + latest[:, None, :])
    assert DSSConfig().latest_state and not DSS.paper_loss["latest_state"] and not DSS.legacy_options["latest_state"]
