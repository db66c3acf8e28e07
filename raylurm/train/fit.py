"""Pretraining runs on Ray Train: :func:`fit` builds the ``TorchTrainer`` around the one training loop.

``fit`` takes a BoI directory and a :class:`~raylurm.train.config.TrainConfig`; the command line
``python -m raylurm.pretrain`` is a thin layer over it. Runs are written to
``<storage>/<name>``: a checkpoint every epoch, TensorBoard logs under ``tensorboard/``; a rerun
with the same name resumes from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Sequence

import pyarrow.parquet as pq

from raylurm.boi.build import build
from raylurm.boi.manifest import boi_dataset_dir
from raylurm.config import apply_overrides, to_dict
from raylurm.data import datasets
from raylurm.data.prepare import data_home
from raylurm.methods import METHODS
from raylurm.train.batch import DataInfo
from raylurm.train.checkpoint import default_storage
from raylurm.train.config import TrainConfig
from raylurm.train.loop import train_loop_per_worker
from raylurm.train.windows import SEQUENCE_COLUMNS, expand, has_earlier_events

log = logging.getLogger(__name__)

DEFAULT_DATA = "ml-1m"


def resolve_boi(data: str) -> Path:
    """A BoI directory from a path, or from a bundled name (prepared and built on first use)."""
    path = Path(data)
    if (path / "manifest.json").exists() and (path / "users").exists():
        return path
    target = data_home() / "boi" / data
    if (target / "manifest.json").exists():
        return target
    dataset = datasets.resolve(data)  # raises a clear DataError for unknown names
    log.info("building Bag-of-Interests sequences for %s into %s (once)", data, target)
    build(dataset, target)
    return target


def resolve_dataset(data: str) -> Path:
    """The prepared dataset behind ``data``: a dataset dir or bundled name, or a BoI dir (its manifest's dataset)."""
    path = Path(data)
    if (path / "manifest.json").exists() and (path / "users").exists():
        return boi_dataset_dir(path)
    return datasets.resolve(data)


class TensorBoardCallback:
    """Writes rank 0's epoch metrics to ``<run>/tensorboard`` from the Train controller."""

    def __init__(self, logdir: Path):
        self.logdir = str(logdir)
        self._writer = None

    def after_report(self, run_context, metrics, checkpoint):
        from torch.utils.tensorboard import SummaryWriter  # lazy: TensorBoard loads only in the controller

        self._writer = self._writer or SummaryWriter(self.logdir)
        first = metrics[0]
        for key, value in first.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self._writer.add_scalar(f"train/{key}", value, global_step=int(first.get("step", 0)))
        self._writer.flush()

    def after_exception(self, run_context, worker_exceptions):
        pass


def fit(boi_dir: Path, train: TrainConfig, overrides: Sequence[str] = (), name: str | None = None,
        storage_path: str | None = None, split: str | None = None, fault_marker: str | None = None):
    """Pretrain ``train.method`` on the BoI rows at ``boi_dir``; return the Ray Train ``Result``."""
    import ray  # Ray is imported when a run starts, so that ``--help`` and config errors stay instant
    import ray.train
    from ray.train.torch import TorchTrainer

    if train.method not in METHODS:
        raise ValueError(f"unknown method {train.method!r}; choose one of {sorted(METHODS)}")
    model_config = apply_overrides(METHODS[train.method].Config(), overrides)
    info = DataInfo.from_boi(boi_dir)
    name = name or f"{train.method}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    storage = Path(storage_path or default_storage()).expanduser().resolve()
    window = training_window(METHODS[train.method], model_config, info, boi_dir)
    loop_config = {"train": dataclasses.asdict(train), "windows": window, "method": train.method, "method_config": to_dict(model_config),
                   "info": dataclasses.asdict(info), "split": split,
                   "boi_dir": str(boi_dir), "validation_boi": str(boi_dir) if split else None,  # a split's run validates every epoch
                   "fault_marker": fault_marker or str(storage / name / ".fault-injected")}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=train.keep_checkpoints),
            callbacks=[tensorboard_callback(storage / name / "tensorboard")],
        ),
        datasets={"train": _dataset(boi_dir, train.num_workers, window, train.seed)},
    )
    log.info("pretraining %s on %s with %d worker(s) -> %s", train.method, boi_dir, train.num_workers, storage / name)
    return trainer.fit()


def training_window(method: type, config, info: DataInfo, boi_dir: Path) -> int | None:
    """Events per training window of ``method`` (:mod:`raylurm.train.windows`), or None: it trains on BoI rows.

    None also when the BoI rows lack the earlier events (built with ``earlier_events=False`` or
    before they existed): the method then trains on each user's latest events only, as logged."""
    size = method.training_window(config, info) if hasattr(method, "training_window") else None
    if size is None:
        return None
    if not has_earlier_events(pq.read_schema(next(iter(sorted((boi_dir / "users").glob("*.parquet"))))).names):
        log.warning("%s has no earlier_* columns: %s trains on each user's latest %d events only "
                    "(rebuild the BoI for windows over the whole history)", boi_dir, method.name, info.max_sequence_length)
        return None
    return size


def as_windows(ds, size: int, seed: int = 0):
    """A Ray Dataset of BoI rows -> one row per training window of ``size`` events (:func:`raylurm.train.windows.expand`)."""
    columns = ["user_id", *SEQUENCE_COLUMNS, *(f"earlier_{c}" for c in SEQUENCE_COLUMNS)]
    return ds.select_columns(columns).map_batches(expand, fn_kwargs={"size": size, "seed": seed}, batch_format="pyarrow")


def _dataset(boi_dir: Path, num_workers: int, window: int | None = None, seed: int = 0):
    """BoI rows as a Ray Dataset (cut into training windows of ``window`` events when given);
    materialised first when the trainers would leave no CPU for streaming reads."""
    import ray  # lazy: Ray's import costs seconds; only runs that use it pay

    ds = ray.data.read_parquet(str(boi_dir / "users"))
    if window is not None:
        ds = as_windows(ds, window, seed)
    if ray.cluster_resources().get("CPU", 0) - num_workers < 1:
        log.info("no CPU left beside %d trainer(s): materialising the BoI rows in the object store first", num_workers)
        ds = ds.materialize()
    return ds


def tensorboard_callback(logdir: Path):
    """A :class:`TensorBoardCallback` that Ray Train accepts (``ray.train.UserCallback`` is mixed in lazily)."""
    import ray.train  # lazy: Ray's import costs seconds; only runs that use it pay

    return type("TensorBoard", (TensorBoardCallback, ray.train.UserCallback), {})(logdir)
