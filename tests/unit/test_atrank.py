"""ATRank (raylurm.methods.atrank) and its losses, against slow hand-written references."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from raylurm.losses.sampled_sigmoid import sampled_sigmoid
from raylurm.losses.sampled_softmax import sampled_softmax
from raylurm.methods import atrank as atrank_module
from raylurm.methods.atrank import ATRank, ATRankConfig, previous_event_buckets, time_buckets
from raylurm.train.batch import DataInfo, collate, synthetic_rows
from tests.helpers import train_steps

NUM_ITEMS, NUM_BEHAVIORS, NUM_CATEGORIES = 30, 3, 6
SMALL = dict(item_dim=8, category_dim=8, hidden_dim=16, num_spaces=4, ffn_dim=32)
CUTS = {"objective": "cuts"}  # the paper's random cuts (the default trains every position)
VARIANTS = [{}, {"recency_bias": True}, {"positions": "none", "latest_state": False}]  # defaults, recency, the paper's read-out


def make_info(num_behaviors: int = NUM_BEHAVIORS) -> DataInfo:
    return DataInfo(num_interests=20, num_items=NUM_ITEMS, num_behaviors=num_behaviors, scales=("month", "year"),
                    max_sequence_length=12, item_category=tuple(1 + i % (NUM_CATEGORIES - 1) for i in range(NUM_ITEMS)),
                    num_categories=NUM_CATEGORIES)


def make_batch(num_users: int = 8, seed: int = 0, num_behaviors: int = NUM_BEHAVIORS) -> dict[str, torch.Tensor]:
    return collate(synthetic_rows(num_users, 20, NUM_ITEMS, num_behaviors=num_behaviors, max_events=10, seed=seed))


def make_model(seed: int = 0, num_behaviors: int = NUM_BEHAVIORS, **overrides) -> ATRank:
    torch.manual_seed(seed)
    return ATRank(ATRankConfig(**{**SMALL, **overrides}), make_info(num_behaviors))


# --- losses ------------------------------------------------------------------------------------
def _softmax_reference(logits: torch.Tensor, keep: torch.Tensor) -> float:
    total = 0.0
    for row, kept in zip(logits.tolist(), keep.tolist()):
        denominator = math.exp(row[0]) + sum(math.exp(s) for s, k in zip(row[1:], kept) if k)
        total += -math.log(math.exp(row[0]) / denominator)
    return total / len(logits)


def _sigmoid_reference(logits: torch.Tensor, keep: torch.Tensor) -> float:
    total = 0.0
    for row, kept in zip(logits.tolist(), keep.tolist()):
        terms = [-math.log(1 / (1 + math.exp(-row[0])))]
        terms += [-math.log(1 - 1 / (1 + math.exp(-s))) for s, k in zip(row[1:], kept) if k]
        total += sum(terms) / len(terms)
    return total / len(logits)


@pytest.mark.parametrize("loss,reference", [(sampled_softmax, _softmax_reference),
                                            (sampled_sigmoid, _sigmoid_reference)])
@pytest.mark.parametrize("b,n", [(1, 1), (3, 1), (4, 5), (6, 9)])
def test_losses_match_naive_reference(loss, reference, b: int, n: int) -> None:
    g = torch.Generator().manual_seed(10 * b + n)
    logits = 2 * torch.randn(b, 1 + n, generator=g, dtype=torch.float64)
    keep = torch.rand(b, n, generator=g) < 0.7
    torch.testing.assert_close(loss(logits, keep), torch.tensor(reference(logits, keep), dtype=torch.float64),
                               atol=1e-5, rtol=1e-5)
    all_kept = torch.ones(b, n, dtype=torch.bool)
    expected_all = torch.tensor(reference(logits, all_kept)).float()
    torch.testing.assert_close(loss(logits.float()), expected_all, atol=1e-5, rtol=1e-5)
    assert loss(logits, keep, reduction="none").shape == (b,)


@pytest.mark.parametrize("loss", [sampled_softmax, sampled_sigmoid])
def test_losses_reject_bad_arguments(loss) -> None:
    with pytest.raises(ValueError):
        loss(torch.zeros(4))
    with pytest.raises(ValueError):
        loss(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError):
        loss(torch.zeros(2, 3), reduction="sum")


# --- encoder pieces -------------------------------------------------------------------------------
def test_time_buckets_match_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    now = torch.tensor([1_600_000_000, 1_500_000_000])
    gaps = torch.cat([torch.tensor([0, 86_399, 86_400, 3 * 86_400, 4095 * 86_400, 5000 * 86_400]),
                      torch.randint(0, 6000 * 86_400, (10,), generator=g)])
    timestamps = now[:, None] - gaps[None, :]  # (2, 16)
    expected = []
    for p, row in zip(now.tolist(), timestamps.tolist()):  # count the thresholds <= day gap + 1, one by one
        gaps_days = [p // 86_400 - t // 86_400 for t in row]
        expected.append([sum(1 for theta in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if gap + 1 >= theta)
                         for gap in gaps_days])
    assert time_buckets(timestamps, now).tolist() == expected
    assert time_buckets(timestamps, now).max() == 12 and time_buckets(timestamps, now).min() == 0


def test_per_group_projection_differs_by_behavior() -> None:
    model = make_model()
    encoding = torch.randn(1, 1, SMALL["item_dim"] + SMALL["category_dim"]).expand(1, NUM_BEHAVIORS, -1)
    projected = model.project(encoding, torch.arange(NUM_BEHAVIORS)[None, :])  # same input, three groups
    for g in range(NUM_BEHAVIORS):
        torch.testing.assert_close(projected[0, g], model.group_projections[g](encoding[0, 0]))
    assert not torch.allclose(projected[0, 0], projected[0, 1]) and not torch.allclose(projected[0, 1], projected[0, 2])


def _pad(batch: dict[str, torch.Tensor], extra: int, garbage: int) -> dict[str, torch.Tensor]:
    """``extra`` more padding columns; every padded cell (old and new) set to ``garbage`` (a valid id if > 0)."""
    width = batch["items"].shape[1] + extra
    beyond = torch.arange(width)[None, :] >= batch["lengths"][:, None]  # (B, width)
    out = dict(batch)
    for key, fill in (("items", garbage), ("behaviors", min(garbage, 1)), ("timestamps", garbage * 1_000)):
        wide = torch.cat([batch[key], torch.zeros(batch[key].shape[0], extra, dtype=batch[key].dtype)], dim=1)
        out[key] = wide.masked_fill(beyond, fill)
    return out


@pytest.mark.parametrize("recency", [False, True])
@pytest.mark.parametrize("garbage", [0, 7])
def test_padding_does_not_change_outputs(garbage: int, recency: bool) -> None:
    model, batch = make_model(recency_bias=recency).eval(), make_batch()
    padded = _pad(batch, extra=5, garbage=garbage)
    torch.testing.assert_close(model.embed(padded), model.embed(batch), atol=1e-5, rtol=1e-5)
    ids = torch.arange(NUM_ITEMS)
    torch.testing.assert_close(model.score_items(padded, ids), model.score_items(batch, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("negatives", ["shared", "sampled"])
def test_training_target_sees_no_future_events(negatives: str) -> None:
    model, batch = make_model(dropout=0.0, cuts_per_user=1, negatives=negatives, **CUTS), make_batch()
    torch.manual_seed(5)
    cut, _ = atrank_module.next_item_cut(batch["lengths"])
    positions = torch.arange(batch["items"].shape[1])[None, :]
    changed = dict(batch, items=batch["items"].clone(), timestamps=batch["timestamps"].clone())
    after = positions > cut[:, None]  # strictly after the target: any content
    changed["items"][after] = 1 + (changed["items"][after] % NUM_ITEMS)
    changed["timestamps"][positions >= cut[:, None]] += 30 * 86_400  # the target's time is not an input either
    torch.manual_seed(5)
    expected = model(batch)["loss"]
    torch.manual_seed(5)
    torch.testing.assert_close(model(changed)["loss"], expected)


def test_next_item_cut_range() -> None:
    torch.manual_seed(0)
    lengths = torch.tensor([1, 2, 3, 10] * 50)
    cut, valid = atrank_module.next_item_cut(lengths)
    assert valid.tolist() == [False, True, True, True] * 50
    assert ((cut[valid] >= 1) & (cut[valid] <= lengths[valid] - 1)).all()
    assert set(cut[lengths == 10].tolist()) == set(range(1, 10))


# --- the model ------------------------------------------------------------------------------------
PUBLIC_CODE = {"objective": "cuts", "negatives": "sampled", "num_sampled": 1, "loss": "sigmoid", "cuts_per_user": 1}  # the ablation row


@pytest.mark.parametrize("overrides", [{}, {"loss": "sigmoid"}, PUBLIC_CODE, CUTS, {"loss": "sigmoid", **CUTS},
                                       {"negatives": "in_batch", **CUTS}, {"negatives": "in_batch", "loss": "sigmoid", **CUTS},
                                       {"negatives": "sampled", "num_sampled": 7, **CUTS}])
def test_default_model_finite_loss_and_all_gradients(overrides) -> None:
    torch.manual_seed(0)
    model = ATRank(ATRankConfig(**overrides), make_info())
    batch = collate(synthetic_rows(16, 20, NUM_ITEMS, max_events=10, seed=1))
    out = model(batch)
    assert set(out) == {"loss", "item_loss", "behavior_loss", "positions"} and all(v.ndim == 0 for v in out.values())
    targets = (batch["lengths"] - 1).sum() if model.config.objective == "all_positions" else 16 * model.config.cuts_per_user
    assert float(out["positions"]) == targets, "one target per position after the first event, or per cut"
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_gradient_reaches_every_embedding_table() -> None:
    model = make_model()
    model(make_batch())["loss"].backward()
    for table in ("item_embedding", "category_embedding", "time_embedding", "behavior_embedding"):
        assert getattr(model, table).weight.grad.abs().sum() > 0, table


def test_single_behavior_type_has_no_auxiliary_head() -> None:
    model = make_model(num_behaviors=1)
    assert model.behavior_head is None and len(model.group_projections) == 1
    out = model(make_batch(num_behaviors=1))
    assert out["behavior_loss"] == 0 and torch.isfinite(out["loss"])


def test_in_batch_negatives_use_gather_with_grad(monkeypatch) -> None:
    calls = []

    def fake_gather(x: torch.Tensor) -> torch.Tensor:  # a second "worker" with the same tensor
        calls.append(x.shape)
        return torch.cat([x, x.detach() if x.is_floating_point() else torch.full_like(x, -1)])

    monkeypatch.setattr(atrank_module, "gather_with_grad", fake_gather)
    model, batch = make_model(negatives="in_batch", cuts_per_user=1, **CUTS), make_batch()
    assert torch.isfinite(model(batch)["loss"])
    assert len(calls) == 2 and calls[0][0] == batch["items"].shape[0]


def test_users_without_a_target_are_ignored() -> None:
    model, batch = make_model(dropout=0.0), make_batch(num_users=4)
    short = dict(batch, lengths=batch["lengths"].clone())
    short["lengths"][0] = 1  # user 0 has no next event any more
    torch.manual_seed(3)
    assert torch.isfinite(model(short)["loss"])
    only_short = {k: v[:1] for k, v in short.items() if k in ("items", "behaviors", "timestamps", "lengths")}
    out = model(only_short)
    assert out["loss"] == 0
    out["loss"].backward()  # still part of the graph


@pytest.mark.parametrize("overrides", [{}, CUTS, {"loss": "softmax", "negatives": "in_batch", **CUTS}])
def test_overfits_one_tiny_batch(overrides) -> None:
    """8 users cut to 3 events: 16 (prefix -> next item, next behaviour) examples to memorise."""
    model, batch = make_model(dropout=0.0, **overrides), make_batch(num_users=8, seed=2)
    batch["lengths"] = batch["lengths"].clamp_max(3)
    losses = train_steps(model, batch, steps=100, lr=1e-2)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.3 * first, (first, last)


def test_embed_shape_deterministic_and_per_user() -> None:
    model, batch = make_model(), make_batch()  # left in train mode: embed must still be deterministic
    z = model.embed(batch)
    assert z.shape == (8, model.representation_dim) and torch.isfinite(z).all()
    torch.testing.assert_close(model.embed(batch), z, atol=0, rtol=0)
    assert model.training
    for i in (0, 3, 7):
        n = int(batch["lengths"][i])
        alone = {k: batch[k][i:i + 1, :n] for k in ("items", "behaviors", "timestamps")}
        alone["lengths"] = batch["lengths"][i:i + 1]
        torch.testing.assert_close(model.embed(alone), z[i:i + 1], atol=1e-5, rtol=1e-5)


def test_score_items_shapes_and_per_user() -> None:
    model, batch = make_model(), make_batch()
    ids = torch.tensor([0, 5, NUM_ITEMS - 1])
    scores = model.score_items(batch, ids)
    assert scores.shape == (8, 3) and torch.isfinite(scores).all()
    torch.testing.assert_close(model.score_items(batch, ids.expand(8, -1)), scores)
    alone = {k: v[2:3] for k, v in batch.items()}
    torch.testing.assert_close(model.score_items(alone, ids), scores[2:3], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        model.score_items(batch, torch.tensor([NUM_ITEMS]))


def test_shared_logits_are_the_target_network_with_gradients() -> None:
    """Training's fused shared-candidate logits = the target network per (user, candidate), values and gradients."""
    model, batch = make_model().double(), make_batch()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    h, mask = model.encode_history(batch)
    ids = torch.tensor([1, 4, 9, NUM_ITEMS])
    fused = model.shared_logits(h, mask, ids)
    reference = model.target_network(h, mask, *model.candidates(ids.expand(8, -1)))[0]
    torch.testing.assert_close(fused, reference, atol=1e-10, rtol=1e-10)
    weights = torch.randn(8, 4, dtype=torch.float64)
    got = torch.autograd.grad((fused * weights).sum(), list(model.target_attention.parameters()), retain_graph=True)
    want = torch.autograd.grad((reference * weights).sum(), list(model.target_attention.parameters()))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_shared_negatives_mask_accidental_hits(monkeypatch) -> None:
    """A shared negative equal to a row's target does not count against that row (and counts for the others)."""
    model, batch = make_model(dropout=0.0, cuts_per_user=1, num_shared=3, **CUTS), make_batch()
    cut = torch.ones(8, dtype=torch.long)
    monkeypatch.setattr(atrank_module, "next_item_cut", lambda lengths: (cut, torch.ones(8, dtype=torch.bool)))
    targets = batch["items"][:, 1]  # shifted ids of every row's target at cut 1
    monkeypatch.setattr(atrank_module, "mixed_negatives", lambda t, n, s, f: (targets[:3] - 1, torch.zeros(n)))
    seen = {}
    real = atrank_module.LOSSES["softmax"]

    def spy(logits, keep, reduction):
        seen.setdefault("logits", []).append(logits)
        seen.setdefault("keep", []).append(keep)
        return real(logits, keep, reduction=reduction)

    monkeypatch.setitem(atrank_module.LOSSES, "softmax", spy)
    model(batch)
    seen = {k: torch.cat(v) for k, v in seen.items()}  # the cuts' groups, in order (equal cuts keep the rows' order)
    assert seen["logits"].shape == (8, 1 + 3)
    torch.testing.assert_close(seen["keep"], targets[None, :3] != targets[:, None])
    assert not seen["keep"][[0, 1, 2], [0, 1, 2]].any()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("group,chunk", [(1, 1), (3, 7), (32, 512)])
def test_shared_candidate_scoring_equals_the_target_network(monkeypatch, group: int, chunk: int, variant: dict) -> None:
    """The folded one-pass scorer (shared candidates) is the target network itself, in any chunking."""
    model, batch = make_model(**variant).double(), make_batch()
    for p in model.parameters():  # non-zero biases everywhere, so the folded output bias is exercised
        torch.nn.init.normal_(p, std=0.3)
    monkeypatch.setattr(atrank_module, "SCORE_GROUP", group)
    monkeypatch.setattr(atrank_module, "SCORE_CHUNK", chunk)
    ids = torch.arange(NUM_ITEMS)
    model.eval()
    h, mask = model.encode_history(batch)
    expected = model.target_network(h, mask, *model.candidates((ids + 1).expand(8, -1)))[0]
    torch.testing.assert_close(model.score_items(batch, ids), expected, atol=1e-10, rtol=1e-10)
    assert model.score_items(batch, ids[:0]).shape == (8, 0)


@pytest.mark.parametrize("bad", [{"hidden_dim": 100, "num_spaces": 8}, {"num_spaces": 0}, {"dropout": 1.0},
                                 {"loss": "bpr"}, {"negatives": "popular"}, {"num_sampled": 0}, {"lr": 0.0},
                                 {"behavior_weight": -1.0}, {"batch_size": 0}, {"num_blocks": 0},
                                 {"time_reference": "prediction"}, {"negatives": "sampled"}, {"objective": "every"},
                                 {"readout_softmax_weight": 1.0, "latest_state": False},
                                 {"readout_softmax_weight": 1.0, "objective": "cuts"}, {"popular_fraction": 1.0}])
def test_config_validation(bad) -> None:
    with pytest.raises(ValueError):
        ATRankConfig(**bad)


def test_defaults_and_info_validation() -> None:
    config = ATRankConfig()
    assert (config.num_spaces, config.item_dim, config.category_dim, config.hidden_dim, config.num_blocks,
            config.dropout, config.lr, config.batch_size) == (8, 64, 64, 128, 1, 0.1, 1e-3, 64)
    assert (config.objective, config.time_from, config.causal) == ("all_positions", "previous", True)
    assert ATRankConfig(objective="cuts").time_from == "prediction"
    assert ATRank(config, make_info()).representation_dim == 128
    with pytest.raises(ValueError):
        ATRank(config, dataclasses.replace(make_info(), item_category=(1, 2)))
    with pytest.raises(ValueError):
        ATRank(config, dataclasses.replace(make_info(), num_categories=2))
    assert ATRank.name == "atrank" and ATRank.Config is ATRankConfig


@pytest.mark.parametrize("overrides", [CUTS, {}])
@pytest.mark.parametrize("groups", [2, 3, 8])
def test_cuts_encoded_in_length_groups_give_the_ungrouped_loss_and_gradients(monkeypatch, groups: int, overrides) -> None:
    """Sorting a step's cuts (or rows: every position) by length and trimming each group's padding changes nothing but the cost."""
    model, batch = make_model(cuts_per_user=3, **overrides).double(), make_batch()
    model.eval()  # no dropout: both passes see the same function

    def run(n):
        monkeypatch.setattr(atrank_module, "TRAIN_GROUPS", n)
        torch.manual_seed(11)  # the same cuts and shared negatives
        model.zero_grad()
        out = model(batch)
        out["loss"].backward()
        return out["loss"].detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    (loss_1, grads_1), (loss_n, grads_n) = run(1), run(groups)
    torch.testing.assert_close(loss_n, loss_1)
    for a, b in zip(grads_n, grads_1):
        torch.testing.assert_close(a, b)


# --- every position in one pass (the default objective) ------------------------------------------
def test_previous_event_buckets_match_naive_loop() -> None:
    g = torch.Generator().manual_seed(4)
    timestamps = torch.sort(torch.randint(0, 5_000 * 86_400, (5, 9), generator=g), dim=1).values
    got = previous_event_buckets(timestamps)
    for row, times in zip(got.tolist(), timestamps.tolist()):
        assert row[0] == atrank_module.NO_PREVIOUS
        for j in range(1, len(times)):
            gap = times[j] // 86_400 - times[j - 1] // 86_400
            assert row[j] == sum(gap + 1 >= t for t in atrank_module.TIME_THRESHOLDS_DAYS)


def _prefixes_alone(model: ATRank, batch: dict[str, torch.Tensor], ids: torch.Tensor):
    """(row, t, logits of ids given events 0..t encoded on their own, u of the candidates)."""
    width = int(batch["lengths"].max())
    for r in range(len(batch["lengths"])):
        for t in range(int(batch["lengths"][r])):
            mask = torch.arange(width)[None, :] < t + 1
            h = model.encode(batch["items"][r:r + 1, :width], batch["behaviors"][r:r + 1, :width],
                             batch["timestamps"][r:r + 1, :width], mask)
            yield r, t, model.target_network(h, mask, *(x[None] for x in model.candidates(ids)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_pass_prefix_logits_equal_each_prefix_encoded_alone(variant: dict) -> None:
    """φ after events 0..t from one causal pass = the prefix 0..t encoded alone, for every t: values and gradients."""
    model, batch = make_model(**variant).double().eval(), make_batch()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    width = int(batch["lengths"].max())
    mask = torch.arange(width)[None, :] < batch["lengths"][:, None]
    h = model.encode(batch["items"][:, :width], batch["behaviors"][:, :width], batch["timestamps"][:, :width], mask)
    ids = torch.arange(1, NUM_ITEMS + 1)
    one_pass = model.prefix_shared_logits(h, ids)  # (B, L, N)
    weights = torch.randn(one_pass.shape, dtype=torch.float64)
    reference = torch.zeros_like(one_pass)
    for r, t, (logits, _) in _prefixes_alone(model, batch, ids):
        reference[r, t] = logits[0]
    valid = mask[..., None].expand_as(one_pass)
    torch.testing.assert_close(one_pass[valid], reference[valid], atol=1e-10, rtol=1e-10)
    params = list(model.parameters())
    got = torch.autograd.grad((one_pass * weights * valid).sum(), params, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad((reference * weights * valid).sum(), params, allow_unused=True)
    for a, b in zip(got, want):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_pass_loss_equals_the_per_position_reference(monkeypatch, variant: dict) -> None:
    """The all-positions loss is the mean over every (row, t) of the sampled softmax of the next event
    against the shared negatives (accidental hits masked), each prefix encoded on its own."""
    model, batch = make_model(num_shared=5, **variant).double().eval(), make_batch()
    shared = torch.tensor([1, 3, 3, 7, NUM_ITEMS])
    monkeypatch.setattr(atrank_module, "mixed_negatives", lambda t, n, s, f: (shared - 1, torch.zeros(n, dtype=torch.float64)))
    got = model(batch)
    losses, behavior = [], []
    for r, t, (logits, users) in _prefixes_alone(model, batch, torch.cat([torch.zeros(1, dtype=torch.long), shared])):
        if t + 1 >= int(batch["lengths"][r]):
            continue  # the last event has no next one
        target = batch["items"][r, t + 1]
        positive, positive_users = model.target_network(
            model.encode(batch["items"][r:r + 1, :t + 1], batch["behaviors"][r:r + 1, :t + 1],
                         batch["timestamps"][r:r + 1, :t + 1], torch.ones(1, t + 1, dtype=torch.bool)),
            torch.ones(1, t + 1, dtype=torch.bool), *(x[None, None] for x in model.candidates(target)))
        row = torch.cat([positive[0], logits[0, 1:]])
        keep = torch.cat([torch.ones(1, dtype=torch.bool), shared != target])
        losses.append(-torch.log_softmax(row[keep], dim=0)[0])
        behavior.append(torch.nn.functional.cross_entropy(model.behavior_head(positive_users[0]),
                                                          (batch["behaviors"][r, t + 1] - 1)[None]))
    assert float(got["positions"]) == len(losses)
    torch.testing.assert_close(got["item_loss"], torch.stack(losses).mean())
    torch.testing.assert_close(got["behavior_loss"], torch.stack(behavior).mean())


def test_one_pass_position_never_sees_its_target_or_later_events() -> None:
    model, batch = make_model(dropout=0.0).eval(), make_batch()
    width = int(batch["lengths"].max())
    mask = torch.arange(width)[None, :] < batch["lengths"][:, None]
    ids = torch.arange(1, NUM_ITEMS + 1)

    def logits(b):
        h = model.encode(b["items"][:, :width], b["behaviors"][:, :width], b["timestamps"][:, :width], mask)
        return model.prefix_shared_logits(h, ids)

    before = logits(batch)
    t = 3
    changed = dict(batch, items=batch["items"].clone(), timestamps=batch["timestamps"].clone())
    changed["items"][:, t + 1:] = 1 + (changed["items"][:, t + 1:] % NUM_ITEMS)  # the target of t and everything after
    changed["timestamps"][:, t + 1:] += 30 * 86_400
    after = logits(changed)
    torch.testing.assert_close(after[:, :t + 1], before[:, :t + 1])
    assert not torch.allclose(after[:, t + 1:][mask[:, t + 1:]], before[:, t + 1:][mask[:, t + 1:]])


def test_checkpoints_written_before_the_one_pass_objective_rebuild_the_cut_model() -> None:
    """A checkpoint's config without ``objective`` was trained with cuts and prediction-time buckets: it loads as such."""
    from raylurm.train.checkpoint import build_model

    old = {"method": "atrank", "method_config": dict(SMALL), "info": dataclasses.asdict(make_info())}
    model = build_model(old)
    assert (model.config.objective, model.config.time_from, model.time_embedding.num_embeddings) == \
        ("cuts", "prediction", len(atrank_module.TIME_THRESHOLDS_DAYS) + 1)
    assert model.position_embedding is None and not model.config.latest_state  # nor had positions or the state read-out
    new = build_model({**old, "method_config": {**SMALL, "objective": "all_positions", "time_reference": "auto"}})
    assert (new.config.objective, new.time_embedding.num_embeddings) == ("all_positions", len(atrank_module.TIME_THRESHOLDS_DAYS) + 2)


def test_recency_bias_weighs_recent_events_more_and_is_trained() -> None:
    """γ gets a gradient; with a large γ every space's attention holds (almost) only the prediction point's event."""
    model, batch = make_model(recency_bias=True, dropout=0.0).double().eval(), make_batch()
    model(batch)["loss"].backward()
    assert model.target_attention.recency.grad is not None and model.target_attention.recency.grad.abs().sum() > 0
    with torch.no_grad():
        model.target_attention.recency.fill_(60.0)  # γ ≈ 60 per event: weight e^-60 one event back
    _, mask = model.encode_history(batch)
    last = batch["lengths"] - 1
    weights = torch.softmax(model.target_attention.logit_bias(mask[:, None, None, :], last[:, None]), dim=-1)  # (B, K, 1, L)
    torch.testing.assert_close(weights[torch.arange(len(last)), :, 0, last], torch.ones(len(last), 4, dtype=weights.dtype))
    assert make_model().target_attention.slopes() is None


def test_window_positions_give_the_encoding_the_order_of_events() -> None:
    """With positions, swapping two earlier events changes the latest state; without (the paper, time from the previous
    event, equal times) the causal encoding of the last event is order-blind."""
    batch = make_batch()
    batch["timestamps"] = torch.zeros_like(batch["timestamps"])  # every gap in the same time bucket
    swapped = dict(batch, items=batch["items"].clone(), behaviors=batch["behaviors"].clone())
    for key in ("items", "behaviors"):  # events 1 and 2 (event 0 alone has no previous event, its own time bucket)
        swapped[key][:, [1, 2]] = batch[key][:, [2, 1]]
    width = int(batch["lengths"].max())
    mask = torch.arange(width)[None, :] < batch["lengths"][:, None]
    last = batch["lengths"] - 1
    for positions, changes in (("window", True), ("none", False)):
        model = make_model(positions=positions, dropout=0.0).eval()
        states = [atrank_module.latest(model.encode(b["items"][:, :width], b["behaviors"][:, :width],
                                                    b["timestamps"][:, :width], mask), mask) for b in (batch, swapped)]
        assert bool((last > 2).any())
        assert torch.allclose(states[0][last > 2], states[1][last > 2], atol=1e-5) != changes, positions


def test_latest_state_adds_the_state_at_the_prediction_point() -> None:
    """latest_state=True adds exactly <h_t, c_i> to the paper's logit b_i + <u(i), c_i> (t = each row's last event)."""
    batch, ids = make_batch(), torch.arange(NUM_ITEMS)
    with_state = make_model(seed=3, latest_state=True).double().eval()
    without = make_model(seed=3, latest_state=False).double().eval()
    without.load_state_dict(with_state.state_dict())
    h, mask = with_state.encode_history(batch)
    vectors, _ = with_state.candidates(ids + 1)
    expected = without.score_items(batch, ids) + atrank_module.latest(h, mask) @ vectors.T
    torch.testing.assert_close(with_state.score_items(batch, ids), expected)


def test_popular_negatives_are_log_q_corrected_for_their_mixture(monkeypatch) -> None:
    """popular_fraction > 0: every logit of the one-pass loss is corrected by the log Q of the step's mixture, the
    positive's too, so the loss is the sampled softmax over (s_j - log Q(j))."""
    model, batch = make_model(num_shared=6, popular_fraction=0.5).double().eval(), make_batch()
    targets = batch["items"][:, 1:][batch["items"][:, 1:] > 0]
    seen = {}
    real = atrank_module.mixed_negatives

    def spy(t, n, s, f):
        seen["args"] = (t, n, s, f)
        seen["out"] = real(t, n, s, f)
        return seen["out"]

    monkeypatch.setattr(atrank_module, "mixed_negatives", spy)
    got = model(batch)["item_loss"]
    t, n, s, f = seen["args"]
    assert (n, s, f) == (NUM_ITEMS, 6, 0.5) and torch.equal(torch.sort(t).values, torch.sort(targets - 1).values)
    ids, log_q = seen["out"]
    monkeypatch.setattr(atrank_module, "mixed_negatives", lambda *a: (ids, torch.zeros_like(log_q)))
    uncorrected = model(batch)["item_loss"]
    assert not torch.isclose(got, uncorrected)  # popular negatives: the correction is not a constant
    monkeypatch.setattr(atrank_module, "mixed_negatives", lambda *a: (ids, torch.full_like(log_q, -3.0)))
    torch.testing.assert_close(model(batch)["item_loss"], uncorrected)  # a constant log Q cancels


def test_readout_softmax_is_the_full_catalogue_cross_entropy_of_the_read_out() -> None:
    """readout_softmax_weight: + w · mean over every (row, t) of -log softmax_i(b_i + <h_t, c_i>) over the whole catalogue."""
    batch = make_batch()
    model = make_model(readout_softmax_weight=0.5).double().eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    torch.manual_seed(2)
    out = model(batch)
    width = int(batch["lengths"].max())
    mask = torch.arange(width - 1)[None, :] < batch["lengths"][:, None]
    h = model.encode(batch["items"][:, :width - 1], batch["behaviors"][:, :width - 1], batch["timestamps"][:, :width - 1], mask)
    target = batch["items"][:, 1:width]
    trained = target > 0
    vectors, bias = model.candidates(torch.arange(1, NUM_ITEMS + 1))
    logits = h[trained] @ vectors.T + bias  # (n, C)
    want = torch.nn.functional.cross_entropy(logits, target[trained] - 1)
    torch.testing.assert_close(out["readout_loss"], want.detach())
    torch.testing.assert_close(out["loss"].detach(), out["item_loss"] + out["behavior_loss"] + 0.5 * want.detach())
    out["loss"].backward()
    assert model.item_bias.weight.grad[1:].abs().sum() > 0
