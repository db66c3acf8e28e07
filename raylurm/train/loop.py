"""The one training loop for all four methods, on Ray Train (``TorchTrainer``, Train V2).

Each method computes its own loss in ``forward``; the loop never branches on the method. Data
arrives as Ray Data shards of BoI rows (``get_dataset_shard("train")``) and is collated on the
worker (:func:`raylurm.train.batch.collate`). Models are wrapped in DDP by ``prepare_model`` (gloo on
CPU, NCCL on GPU); in-batch negatives are gathered across workers inside the methods.

Every epoch each rank calls ``ray.train.report`` once (rank 0 attaches the checkpoint: weights,
optimizer, epoch, step, method config, data sizes and vocabulary hash). A restarted worker group
(``FailureConfig``) or a rerun with the same ``name`` and ``storage_path`` resumes from the
latest checkpoint: the epoch and step counters continue where they stopped.

**Validation** (runs pretrained on a split: ``config["validation_boi"]``, see
:mod:`raylurm.train.validation`): after every epoch rank 0 computes the run's validation metric
and broadcasts it; a checkpoint is attached only when the metric improved (and at the last
epoch), so the latest two checkpoints kept are the best epoch and the last one, and the run stops
when ``TrainConfig.patience`` epochs passed without improvement. Every checkpoint's meta records
the best epoch so far; :func:`raylurm.train.checkpoint.best_in_run` picks the best epoch's.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from raylurm.config import from_dict, to_dict
from raylurm.methods import METHODS
from raylurm.ray_internals import PLACEMENT_GROUP_KEY, current_placement_group_id
from raylurm.train import checkpoint as ckpt
from raylurm.train.batch import DataInfo, collate
from raylurm.train.config import TrainConfig
from raylurm.train.optim import Adam
from raylurm.train.validation import for_run

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
    optimizer = Adam(model, lr=train.lr or model_config.lr)  # lazy Adam on sparse-gradient tables (raylurm.train.optim)
    if state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    batch_size = train.batch_size or model_config.batch_size
    shard = ray.train.get_dataset_shard("train")
    step = state.get("step", 0)
    module = model.module if hasattr(model, "module") else model
    inputs = _training_inputs(config, model_config, info, train.seed, rank, state.get("epoch", 0))
    tracker = _Tracker(config, train, state.get("meta", {}), module, info, rank)
    if state.get("meta", {}).get("stopped_early"):
        log.info("the run stopped early at epoch %d (best: epoch %s); nothing to train", state["epoch"], state["meta"].get("best_epoch"))
        return
    for epoch in range(state.get("epoch", 0), train.epochs):
        started, outputs = time.perf_counter(), []
        for table in shard.iter_batches(batch_size=batch_size, batch_format="pyarrow", drop_last=True,
                                        local_shuffle_buffer_size=4 * batch_size, local_shuffle_seed=train.seed + epoch):
            batch = collate(table, () if config.get("windows") else info.scales)
            if inputs is not None:
                batch.update(inputs(table))
            outputs.append(_step(model, optimizer, batch))
            step += 1
            _maybe_inject_fault(train, rank, step, config)
            if train.max_steps_per_epoch and len(outputs) >= train.max_steps_per_epoch:
                break
        if not outputs:
            raise ValueError(f"epoch {epoch + 1} had no full batch of {batch_size} users on rank {rank}: "
                             f"lower --batch-size (the data has too few users for {context.get_world_size()} worker(s))")
        metrics = _epoch_metrics(epoch, step, outputs, started, batch_size, context.get_world_size())
        attach, stop = tracker.after_epoch(epoch + 1, metrics, module)
        if rank == 0 and (group := current_placement_group_id()) is not None:
            metrics[PLACEMENT_GROUP_KEY] = group  # lets a Tune driver free the workers of a stopped trial
        _report(model, optimizer, metrics, rank if attach else -1,
                ckpt.meta_for(train.method, model_config, info, epoch=epoch + 1, step=step, train=to_dict(train),
                              split=config.get("split"), **tracker.meta(early=stop and epoch + 1 < train.epochs)))
        if stop:
            if epoch + 1 < train.epochs:
                log.info("early stop after epoch %d: no better %s for %d epochs (best: epoch %d, %.4f)", epoch + 1,
                         tracker.metric, train.patience, tracker.best_epoch, tracker.best_value)
            break


class _Tracker:
    """The validation metric after each epoch (rank 0 computes, every rank receives), the best epoch, the stop rule."""

    def __init__(self, config: dict, train: TrainConfig, meta: dict, model: torch.nn.Module, info: DataInfo, rank: int):
        self.train, self.scales = train, info.scales
        self.enabled = bool(config.get("validation_boi"))
        self.validation = for_run(model, config["validation_boi"], train.validation_users) if self.enabled and rank == 0 else None
        self.metric = self.validation.metric if self.validation is not None else meta.get("validation_metric")
        self.best_epoch, self.best_value = int(meta.get("best_epoch", 0)), float(meta.get("best_value", -math.inf))
        self.values: dict[str, float] = {}

    def after_epoch(self, epoch: int, metrics: dict, module: torch.nn.Module) -> tuple[bool, bool]:
        """Adds ``val_*`` to ``metrics``; -> (attach this epoch's checkpoint, stop after it)."""
        last = epoch >= self.train.epochs
        if not self.enabled:
            return True, last
        values = {}
        if self.validation is not None:
            started = time.perf_counter()
            values = self.validation.score(module, self.scales)
            values["validation_seconds"] = time.perf_counter() - started
        self.metric = _broadcast_name(self.metric)
        values = _broadcast_values(values)
        value = values.get(self.metric, math.nan) if self.metric else math.nan
        metrics.update(values)
        if math.isnan(value):  # no signal (e.g. a probe that could not be fitted): keep every epoch, never stop early
            self.best_epoch, self.values = epoch, values
            return True, last
        improved = value > self.best_value
        if improved:
            self.best_epoch, self.best_value = epoch, value
        self.values = values
        metrics.update(best_epoch=self.best_epoch, **{f"best_{self.metric}": self.best_value})
        stop = last or (self.train.patience is not None and epoch - self.best_epoch >= self.train.patience)
        return improved or stop, stop

    def meta(self, early: bool) -> dict:
        """What a checkpoint records: this epoch's validation, the best epoch so far, whether the run stopped early."""
        if not self.enabled:
            return {}
        return {"validation": self.values, "validation_metric": self.metric, "best_epoch": self.best_epoch,
                "best_value": self.best_value if math.isfinite(self.best_value) else None, "stopped_early": early}


def _broadcast_values(values: dict[str, float]) -> dict[str, float]:
    """Rank 0's ``values`` on every rank (a no-op in a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    box = [values]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _broadcast_name(name: str | None) -> str | None:
    return _broadcast_values({"name": name})["name"]


def _training_inputs(config: dict, model_config, info: DataInfo, seed: int, rank: int, epoch: int):
    """The method's per-batch additions (e.g. LURM's event-level views), seeded per run, rank and starting epoch."""
    hook = getattr(_method(config["method"]), "training_inputs", None)
    if hook is None or not config.get("boi_dir"):
        return None
    return hook(model_config, info, config["boi_dir"], seed=int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0]))


def _step(model: torch.nn.Module, optimizer: Adam, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One optimiser step -> the model's scalar outputs (``loss`` and what it reports beside it)."""
    device = next(model.parameters()).device
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out = model(batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1}


def _epoch_metrics(epoch: int, step: int, steps: list[dict[str, float]], started: float, batch_size: int, world: int) -> dict:
    """The epoch's means of every step output (``loss`` first), counts and throughput."""
    seconds = time.perf_counter() - started
    means = {k: float(np.mean([s[k] for s in steps if k in s])) for k in dict.fromkeys(k for s in steps for k in s)}
    return {"epoch": epoch + 1, "step": step, "loss": means.pop("loss", float("nan")), **means,
            "batches": len(steps), "epoch_seconds": seconds,
            "users_per_second": len(steps) * batch_size * world / seconds if seconds > 0 else 0.0}


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
    return {"epoch": meta["epoch"], "step": meta["step"], "optimizer": optimizer, "meta": meta}


def _report(model, optimizer, metrics: dict, rank: int, meta: dict) -> None:
    """Every rank reports once per epoch; rank 0 attaches the checkpoint (rank -1: nobody does, this epoch)."""
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
