"""``python -m raylurm.pretrain`` — distributed self-supervised pretraining on Ray Train.

Examples::

    python -m raylurm.pretrain                                  # ml-1m: prepare + BoI if needed, LURM, embedded Ray
    python -m raylurm.pretrain --method dss --epochs 10 --set num_intentions=8 --set selection_fraction=0.3
    python -m raylurm.pretrain --method lurm --data boi/synth --num-workers 4 --use-gpu
    ray job submit --working-dir . -- python -m raylurm.pretrain --method adaptssr

``--data`` is a BoI directory (``python -m raylurm.boi build``) or a bundled dataset name, whose
BoI is built on first use under ``$RAYLURM_HOME/boi/``. ``--set key=value`` overrides a field of
the method's config (see ``--list-options``). Runs are written to
``<storage-path>/<name>``: checkpoints every epoch, TensorBoard logs under ``tensorboard/``;
rerunning with the same ``--name`` resumes from the latest checkpoint.

The library behind this command is :mod:`raylurm.train` (``raylurm.train.fit.fit``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from raylurm import cli
from raylurm.config import apply_overrides, to_dict
from raylurm.evaluate.split import SplitConfig, materialise
from raylurm.methods import METHODS
from raylurm.runtime import init_ray
from raylurm.train.config import TrainConfig
from raylurm.train.fit import DEFAULT_DATA, fit, resolve_boi, resolve_dataset

log = logging.getLogger("raylurm.pretrain")

#: the TrainConfig fields that are flags (``--num-workers``...), besides ``--method``
TRAIN_FLAGS = ("epochs", "num_workers", "use_gpu", "batch_size", "lr", "seed", "max_steps_per_epoch", "max_failures",
               "patience", "validation_users")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raylurm.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(p)
    cli.add_config_arguments(p, TrainConfig, ["method"], extra={"method": {"choices": list(METHODS)}})
    p.add_argument("--data", default=DEFAULT_DATA, help="BoI directory or bundled dataset name (default: ml-1m)")
    cli.add_config_arguments(p, TrainConfig, TRAIN_FLAGS)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method option, e.g. --set num_anchors=4 (repeatable)")
    p.add_argument("--list-options", action="store_true",
                   help="print the method's options (--set KEY=VALUE) and their defaults as JSON, then exit")
    p.add_argument("--split", action="store_true",
                   help="pretrain on the evaluation split's pretraining part only (no held-out event; see raylurm.evaluate); "
                        "the checkpoint records the split")
    p.add_argument("--cutoff-quantile", type=float, default=SplitConfig().cutoff_quantile,
                   help="with --split: category-preference cutoff as a quantile of event times (default: %(default)s)")
    p.add_argument("--name", help="run name (default: METHOD-TIMESTAMP); an existing name resumes")
    p.add_argument("--storage-path", help="where runs go (default: $RAYLURM_HOME/runs; s3://… works on clusters)")
    cli.add_ray_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Pretrain with the parsed command-line ``args``; print the checkpoint and the last epoch's metrics."""
    if args.list_options:
        print(json.dumps(to_dict(METHODS[args.method].Config()), indent=2))
        return 0
    train = cli.config_from_args(args, TrainConfig, ("method", *TRAIN_FLAGS))  # a bad value fails here, before Ray
    apply_overrides(METHODS[args.method].Config(), args.overrides)  # fail fast on typos, before Ray starts
    init_ray(args.address, num_cpus=args.num_cpus)
    split = None
    if args.split:
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
    return cli.execute(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
