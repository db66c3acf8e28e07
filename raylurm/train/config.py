"""The training options of one pretraining run (:class:`TrainConfig`); the method's own options are its ``Config``."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    method: str = "lurm"  # lurm | atrank | dss | adaptssr
    epochs: int = 5
    num_workers: int = 2  # Ray Train workers (DDP ranks)
    use_gpu: bool = False
    batch_size: int | None = None  # per worker; None = the method's paper default
    lr: float | None = None  # None = the method's paper default
    seed: int = 0
    max_failures: int = 2  # worker-group restarts from the last checkpoint before giving up
    keep_checkpoints: int = 2
    max_steps_per_epoch: int | None = None  # cap (smoke tests, benchmarks)
    fault_step: int | None = None  # fault injection for tests: rank 1 SIGKILLs itself once at this global step

    def __post_init__(self):
        if self.epochs < 1 or self.num_workers < 1 or self.max_failures < 0:
            raise ValueError("epochs and num_workers must be >= 1, max_failures >= 0")
