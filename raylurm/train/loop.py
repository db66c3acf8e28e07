"""The one training loop for all four methods, on Ray Train (``TorchTrainer``, Train V2).

Each method computes its own loss in ``forward``; the loop never branches on the method. Data
arrives as Ray Data shards of BoI rows (``get_dataset_shard("train")``) and is collated on the
worker (:func:`raylurm.train.batch.collate`). Models are wrapped in DDP by ``prepare_model`` (gloo on
CPU, NCCL on GPU); in-batch negatives are gathered across workers inside the methods.

Every epoch each rank calls ``ray.train.report`` once (rank 0 attaches the checkpoint: weights,
optimizer, epoch, step, method config, data sizes and vocabulary hash). A restarted worker group
(``FailureConfig``) or a rerun with the same ``name`` and ``storage_path`` resumes from the
latest checkpoint: the epoch and step counters continue where they stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylurm.config import from_dict, to_dict
from raylurm.methods import METHODS
from raylurm.ray_internals import PLACEMENT_GROUP_KEY, current_placement_group_id
from raylurm.train import checkpoint as ckpt
from raylurm.train.batch import DataInfo, collate
from raylurm.train.config import TrainConfig

log = logging.getLogger(__name__)


def init_seed(seed: int, rank: int = 0) -> int:
    """The torch seed of a rank; DDP broadcasts rank 0's initial weights, so ``init_seed(seed)``
    rebuilds a run's exact starting point (the evaluator's random-init baseline)."""
    return seed * 1009 + rank


def _method(name: str):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def build(config: dict[str, Any]) -> tuple[torch.nn.Module, Any, DataInfo]:
    """The model of ``config["method"]`` from the loop config (method options + data sizes)."""
    cls = _method(config["method"])
    info = from_dict(DataInfo, config["info"])
    model_config = from_dict(cls.Config, config["method_config"])
    return cls(model_config, info), model_config, info


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train  # lazy: runs on Ray Train workers; importing the loop stays cheap
    import ray.train.torch

    train = TrainConfig(**config["train"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.manual_seed(init_seed(train.seed, rank))
    model, model_config, info = build(config)
    state = _restore(model)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr or model_config.lr)
    if state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    batch_size = train.batch_size or model_config.batch_size
    shard = ray.train.get_dataset_shard("train")
    step = state.get("step", 0)
    for epoch in range(state.get("epoch", 0), train.epochs):
        started, losses = time.perf_counter(), []
        for table in shard.iter_batches(batch_size=batch_size, batch_format="pyarrow", drop_last=True,
                                        local_shuffle_buffer_size=4 * batch_size, local_shuffle_seed=train.seed + epoch):
            losses.append(_step(model, optimizer, collate(table, info.scales)))
            step += 1
            _maybe_inject_fault(train, rank, step, config)
            if train.max_steps_per_epoch and len(losses) >= train.max_steps_per_epoch:
                break
        if not losses:
            raise ValueError(f"epoch {epoch + 1} had no full batch of {batch_size} users on rank {rank}: "
                             f"lower --batch-size (the data has too few users for {context.get_world_size()} worker(s))")
        metrics = _epoch_metrics(epoch, step, losses, started, batch_size, context.get_world_size())
        if rank == 0 and (group := current_placement_group_id()) is not None:
            metrics[PLACEMENT_GROUP_KEY] = group  # lets a Tune driver free the workers of a stopped trial
        _report(model, optimizer, metrics, rank, ckpt.meta_for(train.method, model_config, info, epoch=epoch + 1, step=step,
                                                               train=to_dict(train), split=config.get("split")))


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    device = next(model.parameters()).device
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out = model(batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return float(out["loss"].detach())


def _epoch_metrics(epoch: int, step: int, losses: list[float], started: float, batch_size: int, world: int) -> dict:
    seconds = time.perf_counter() - started
    return {"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)) if losses else float("nan"),
            "batches": len(losses), "epoch_seconds": seconds,
            "users_per_second": len(losses) * batch_size * world / seconds if seconds > 0 else 0.0}


def _restore(model: torch.nn.Module) -> dict:
    """Weights and counters from the checkpoint Ray Train hands back after a restart (or none)."""
    import ray.train  # lazy: Ray's import costs seconds; only runs that use it pay

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as directory:
        model.load_state_dict(torch.load(Path(directory) / "model.pt", weights_only=True))
        meta = ckpt.read_meta(directory)
        optimizer = torch.load(Path(directory) / "optimizer.pt", weights_only=True)
    log.info("resuming from epoch %d, step %d", meta["epoch"], meta["step"])
    return {"epoch": meta["epoch"], "step": meta["step"], "optimizer": optimizer}


def _report(model, optimizer, metrics: dict, rank: int, meta: dict) -> None:
    """Every rank reports once per epoch; rank 0 attaches the checkpoint."""
    import ray.train  # lazy: Ray's import costs seconds; only runs that use it pay

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            module = model.module if hasattr(model, "module") else model
            ckpt.save(tmp, module, optimizer, meta)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _maybe_inject_fault(train: TrainConfig, rank: int, step: int, config: dict) -> None:
    """Test hook: rank 1 kills its own process once (a marker file prevents a second kill)."""
    if train.fault_step is None or rank != 1 or step != train.fault_step:
        return
    marker = Path(config["fault_marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
