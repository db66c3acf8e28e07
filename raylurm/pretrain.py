"""``python -m raylurm.pretrain`` — distributed self-supervised pretraining on Ray Train.

Examples::

    python -m raylurm.pretrain                                  # ml-1m: prepare + BoI if needed, LURM, embedded Ray
    python -m raylurm.pretrain --method dss --epochs 10 --set num_intentions=8 --set selection_ratio=0.3
    python -m raylurm.pretrain --method lurm --data boi/synth --num-workers 4 --use-gpu
    ray job submit --working-dir . -- python -m raylurm.pretrain --method adaptssr

``--data`` is a BoI directory (``python -m raylurm.boi build``) or a bundled dataset name, whose
BoI is built on first use under ``$RAYLURM_HOME/boi/``. ``--set key=value`` overrides a field of
the method's config (see ``--list-options``). Runs are written to
``<storage-path>/<name>``: checkpoints every epoch, TensorBoard logs under ``tensorboard/``;
rerunning with the same ``--name`` resumes from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from raylurm import cli
from raylurm.batch import DataInfo
from raylurm.config import apply_overrides, to_dict
from raylurm.train import TrainConfig, train_loop_per_worker

log = logging.getLogger("raylurm.pretrain")

DEFAULT_DATA = "ml-1m"


def resolve_boi(data: str) -> Path:
    """A BoI directory from a path, or from a bundled name (prepared and built on first use)."""
    path = Path(data)
    if (path / "manifest.json").exists() and (path / "users").exists():
        return path
    from raylurm.boi.build import build
    from raylurm.data import datasets
    from raylurm.data.prepare import data_home

    target = data_home() / "boi" / data
    if (target / "manifest.json").exists():
        return target
    dataset = datasets.resolve(data)  # raises a clear DataError for unknown names
    log.info("building Bag-of-Interests sequences for %s into %s (once)", data, target)
    build(dataset, target)
    return target


def resolve_dataset(data: str) -> Path:
    """The prepared dataset behind ``data``: a dataset dir or bundled name, or a BoI dir (its manifest's dataset)."""
    from raylurm.data import datasets

    path = Path(data)
    if (path / "manifest.json").exists() and (path / "users").exists():
        return Path(json.loads((path / "manifest.json").read_text())["dataset"])
    return datasets.resolve(data)


class TensorBoardCallback:
    """Writes rank 0's epoch metrics to ``<run>/tensorboard`` from the Train controller."""

    def __init__(self, logdir: Path):
        self.logdir = str(logdir)
        self._writer = None

    def after_report(self, run_context, metrics, checkpoint):
        from torch.utils.tensorboard import SummaryWriter

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
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from raylurm.methods import METHODS

    if train.method not in METHODS:
        raise ValueError(f"unknown method {train.method!r}; choose one of {sorted(METHODS)}")
    model_config = apply_overrides(METHODS[train.method].Config(), overrides)
    info = DataInfo.from_boi(boi_dir)
    name = name or f"{train.method}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    storage = Path(storage_path or default_storage()).expanduser().resolve()
    loop_config = {"train": dataclasses.asdict(train), "method": train.method, "method_config": to_dict(model_config),
                   "info": dataclasses.asdict(info), "split": split,
                   "fault_marker": fault_marker or str(storage / name / ".fault-injected")}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=train.keep_checkpoints),
            callbacks=[_callback(storage / name / "tensorboard")],
        ),
        datasets={"train": _dataset(boi_dir, train.num_workers)},
    )
    log.info("pretraining %s on %s with %d worker(s) -> %s", train.method, boi_dir, train.num_workers, storage / name)
    return trainer.fit()


def _dataset(boi_dir: Path, num_workers: int):
    """BoI rows as a Ray Dataset; materialised first when the trainers would leave no CPU for streaming reads."""
    import ray

    ds = ray.data.read_parquet(str(boi_dir / "users"))
    if ray.cluster_resources().get("CPU", 0) - num_workers < 1:
        log.info("no CPU left beside %d trainer(s): materialising the BoI rows in the object store first", num_workers)
        ds = ds.materialize()
    return ds


def _callback(logdir: Path):
    import ray.train

    return type("TensorBoard", (TensorBoardCallback, ray.train.UserCallback), {})(logdir)


def default_storage() -> Path:
    from raylurm.data.prepare import data_home

    return data_home() / "runs"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raylurm.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(p)
    defaults = TrainConfig()
    p.add_argument("--method", default=defaults.method, choices=["lurm", "atrank", "dss", "adaptssr"], help="method to pretrain")
    p.add_argument("--data", default=DEFAULT_DATA, help="BoI directory or bundled dataset name (default: ml-1m)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=defaults.num_workers, help="Ray Train workers (default: %(default)s)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker (NCCL)")
    p.add_argument("--batch-size", type=int, help="per-worker batch size (default: the method's paper default)")
    p.add_argument("--lr", type=float, help="learning rate (default: the method's paper default)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)")
    p.add_argument("--max-steps-per-epoch", type=int, help="cap steps per epoch (smoke runs)")
    p.add_argument("--max-failures", type=int, default=defaults.max_failures, help="worker-group restarts (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method option, e.g. --set num_anchors=4 (repeatable)")
    p.add_argument("--list-options", action="store_true", help="print the method's options and defaults, then exit")
    p.add_argument("--split", action="store_true",
                   help="pretrain on the evaluation split's pretraining part only (no held-out event; see raylurm.evaluate); "
                        "the checkpoint records the split")
    from raylurm.evaluate.split import SplitConfig

    p.add_argument("--cutoff-quantile", type=float, default=SplitConfig().cutoff_quantile,
                   help="with --split: category-preference cutoff as a quantile of event times (default: %(default)s)")
    p.add_argument("--name", help="run name (default: METHOD-TIMESTAMP); an existing name resumes")
    p.add_argument("--storage-path", help="where runs go (default: $RAYLURM_HOME/runs; s3://… works on clusters)")
    cli.add_ray_arguments(p)
    return p


def main_(args) -> int:
    from raylurm.methods import METHODS
    from raylurm.runtime import init_ray

    if args.list_options:
        print(json.dumps(to_dict(METHODS[args.method].Config()), indent=2))
        return 0
    train = TrainConfig(method=args.method, epochs=args.epochs, num_workers=args.num_workers, use_gpu=args.use_gpu,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed, max_failures=args.max_failures,
                        max_steps_per_epoch=args.max_steps_per_epoch)
    apply_overrides(METHODS[args.method].Config(), args.overrides)  # fail fast on typos, before Ray starts
    init_ray(args.address, num_cpus=args.num_cpus)
    split = None
    if args.split:
        from raylurm.evaluate.split import SplitConfig, materialise

        split = materialise(resolve_dataset(args.data), SplitConfig(cutoff_quantile=args.cutoff_quantile))
        boi = split.boi("pretrain")
        log.info("pretraining on split %s (%s events, none held out)", split.id, f"{split.meta['events']['pretrain']:,}")
    else:
        boi = resolve_boi(args.data)
    result = fit(boi, train, args.overrides, args.name, args.storage_path, split=split.id if split else None)
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    print(json.dumps({"checkpoint": result.checkpoint.path if result.checkpoint else None, "metrics": result.metrics}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(main_, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
