"""The training options of one pretraining run (:class:`TrainConfig`); the method's own options are its ``Config``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from raylurm.config import typed_config


@typed_config
class TrainConfig:
    method: Annotated[str, Field(description="method to pretrain")] = "lurm"
    epochs: Annotated[int, Field(ge=1, description="epochs")] = 5
    num_workers: Annotated[int, Field(ge=1, description="Ray Train workers (DDP ranks)")] = 2
    use_gpu: Annotated[bool, Field(description="one GPU per worker (NCCL)")] = False
    batch_size: Annotated[int | None, Field(
        ge=1, description="per-worker batch size (default: the method's paper default)")] = None
    lr: Annotated[float | None, Field(gt=0, description="learning rate (default: the method's paper default)")] = None
    seed: Annotated[int, Field(description="random seed")] = 0
    max_failures: Annotated[int, Field(
        ge=0, description="worker-group restarts from the last checkpoint before giving up")] = 2
    keep_checkpoints: Annotated[int | None, Field(
        ge=1, description="checkpoints kept per run, the latest ones (None: every epoch's; sweeps prune afterwards)")] = 2
    max_steps_per_epoch: Annotated[int | None, Field(
        ge=1, description="cap on steps per epoch (smoke tests, benchmarks)")] = None
    # a choice: 5 epochs without a better validation metric ends a run pretrained on a split
    patience: Annotated[int | None, Field(ge=1, description=(
        "early stopping of a run pretrained on a split: epochs without a better validation metric (None: every epoch)"))] = 5
    # a choice: ~0.006 standard error of an NDCG@10 near 0.15, and ATRank's own scorer stays ~1 min per epoch on 2 cores
    validation_users: Annotated[int | None, Field(ge=1, description=(
        "users whose validation item ranks the next-item methods after every epoch (None: every user)"))] = 2000
    fault_step: Annotated[int | None, Field(
        ge=0, description="fault injection for tests: rank 1 SIGKILLs itself once at this global step")] = None
