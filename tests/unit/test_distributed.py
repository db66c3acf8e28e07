"""``gather_with_grad`` under a real 2-process gloo group: DDP-averaged gradients equal one process's.

Each rank holds half of a global batch, gathers it with :func:`gather_with_grad`, computes a loss
in which every row interacts with every other row, runs backward and averages the parameter
gradients like DDP (``all_reduce / world_size``). That must give the gradients of one process
computing the same loss on the whole batch (float64, tight tolerance) — a gather whose backward
dropped the other ranks' gradients, or did not sum them, gives something else.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from raylurm.losses import info_nce
from raylurm.train.distributed import gather_with_grad, is_distributed, rank, world_size

WORLD = 2
LOCAL_BATCH, IN_DIM, OUT_DIM = 3, 5, 4
TEMPERATURE = 0.2


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN_DIM, 6), torch.nn.Tanh(), torch.nn.Linear(6, OUT_DIM)).double()


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two views (2 × LOCAL_BATCH users, IN_DIM) of the global batch; rank r holds rows r·B … (r+1)·B - 1."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(WORLD * LOCAL_BATCH, IN_DIM, generator=g, dtype=torch.float64)
    return x, x + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64)


def _moco_loss(q: torch.Tensor, keys: torch.Tensor, offset: int) -> torch.Tensor:
    """Local queries against every rank's keys; the positive of local row i is global row offset + i."""
    logits = F.normalize(q, dim=1) @ F.normalize(keys, dim=1).T / TEMPERATURE  # (b, N)
    return F.cross_entropy(logits, torch.arange(q.shape[0]) + offset)


def _losses(model, xa, xb, gather, offset: int) -> dict[str, torch.Tensor]:
    """Both ways a method uses the gather: the symmetric InfoNCE over the whole gathered batch
    (LURM), and MoCo-style local anchors against gathered negatives (averaged over ranks by DDP)."""
    za, zb = model(xa), model(xb)
    return {"global": info_nce(gather(za), gather(zb), TEMPERATURE),
            "moco": _moco_loss(za, gather(zb), offset),
            "gathered": gather(za)}


def _grads(model, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward(retain_graph=True)
    return [p.grad.detach().clone() for p in model.parameters()]


def _rank_main(local_rank: int, store: str, out: str) -> None:
    """One rank: join the group, compute both losses on its half, DDP-average the gradients, save."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=store, rank=local_rank, world_size=WORLD,
                            timeout=dt.timedelta(seconds=60))
    try:
        helpers = {"world_size": world_size(), "rank": rank(), "is_distributed": is_distributed()}
        model = _model()
        rows = slice(local_rank * LOCAL_BATCH, (local_rank + 1) * LOCAL_BATCH)
        xa, xb = (x[rows] for x in _global_batch())
        losses = _losses(model, xa, xb, gather_with_grad, offset=local_rank * LOCAL_BATCH)
        result = {"helpers": helpers, "gathered": losses["gathered"].detach()}
        for name in ("global", "moco"):
            grads = _grads(model, losses[name])
            for g in grads:  # what DDP does to the parameter gradients
                dist.all_reduce(g)
                g /= WORLD
            result[name] = {"loss": losses[name].detach(), "grads": grads}
        torch.save(result, Path(out) / f"rank{local_rank}.pt")
    finally:
        dist.destroy_process_group()
    torch.save({"world_size": world_size(), "rank": rank(), "is_distributed": is_distributed()},
               Path(out) / f"after{local_rank}.pt")


def _single_process() -> dict:
    model = _model()
    xa, xb = _global_batch()
    losses = _losses(model, xa, xb, lambda t: t, offset=0)
    return {"gathered": losses["gathered"].detach(),
            **{name: {"loss": losses[name].detach(), "grads": _grads(model, losses[name])} for name in ("global", "moco")}}


def test_gather_with_grad_under_two_gloo_ranks_matches_one_process(tmp_path):
    assert not dist.is_initialized()
    mp.spawn(_rank_main, args=(f"file://{tmp_path / 'store'}", str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    reference = _single_process()

    for r, result in enumerate(ranks):
        assert result["helpers"] == {"world_size": WORLD, "rank": r, "is_distributed": True}
        torch.testing.assert_close(result["gathered"], reference["gathered"], rtol=0, atol=1e-12)  # rank-major order
        torch.testing.assert_close(result["global"]["loss"], reference["global"]["loss"], rtol=1e-12, atol=1e-12)
        for name in ("global", "moco"):
            for got, want in zip(result[name]["grads"], reference[name]["grads"], strict=True):
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"{name} loss, rank {r}")
    # the MoCo-style loss is local: the ranks' losses differ, their mean is the one-process loss
    moco = torch.stack([result["moco"]["loss"] for result in ranks])
    assert not torch.allclose(moco[0], moco[1])
    torch.testing.assert_close(moco.mean(), reference["moco"]["loss"], rtol=1e-12, atol=1e-12)
    # the gradients are not trivially equal: without the cross-rank terms they would differ
    assert all(g.abs().max() > 1e-3 for g in reference["global"]["grads"])
    for r in range(WORLD):
        assert torch.load(tmp_path / f"after{r}.pt") == {"world_size": 1, "rank": 0, "is_distributed": False}


def test_a_gather_without_the_cross_rank_gradient_would_be_caught():
    """The reference above discriminates: the loss on one rank's half alone (no gather) has other gradients."""
    model = _model()
    xa, xb = _global_batch()
    full = _grads(model, _losses(model, xa, xb, lambda t: t, offset=0)["global"])
    halves = [_grads(model, _losses(model, xa[s], xb[s], lambda t: t, offset=0)["global"])
              for s in (slice(0, LOCAL_BATCH), slice(LOCAL_BATCH, None))]
    averaged = [(a + b) / 2 for a, b in zip(*halves)]
    assert max((f - a).abs().max() for f, a in zip(full, averaged)) > 1e-3


def test_outside_a_process_group_the_helpers_are_one_process():
    assert (world_size(), rank(), is_distributed()) == (1, 0, False)
    x = torch.randn(4, 3, requires_grad=True)
    y = gather_with_grad(x)
    assert y is x  # identity: no copy, gradients untouched
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(4, 3))
