"""``python -m raylurm.tune`` — Ray Tune sweeps of the four methods, the registry, the sweep report.

Examples::

    python -m raylurm.tune tune_configs/study.py                     # the cross-method study on ml-1m
    python -m raylurm.tune tune_configs/lurm.py --smoke-test         # two short trials per method
    python -m raylurm.tune tune_configs/study.py --name study --resume   # continue after an interruption
    python -m raylurm.tune report study                              # Markdown + PNG report (test metrics once)
    tensorboard --logdir ~/.cache/raylurm/tune/study                 # live curves of every trial

A sweep file (``tune_configs/``) gives each method's search space, written with Tune's own
primitives, fixed training options and the search settings (see :mod:`raylurm.tune.sweeps`).
Trials pretrain on the evaluation split's pretraining part (``raylurm.evaluate.split``) and
are scored every epoch on *validation* users (``val_auc``: profiling AUC of a probe, see
:mod:`raylurm.tune.validation`); ASHA stops weak trials early. Every method is its own Tune
experiment under ``<storage-path>/<name>/<method>``. When a method's sweep ends, its best
checkpoint is exported to the registry (``python -m raylurm.registry list``), which Serve and
``python -m raylurm.evaluate --all`` read. ``--resume`` restores an interrupted sweep with
``Tuner.restore``: finished trials are kept, unfinished ones continue from their last checkpoint.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Sequence

from raylurm import cli
from raylurm.evaluate.report import write_text
from raylurm.evaluate.split import SplitConfig, materialise
from raylurm.registry import Registry
from raylurm.runtime import init_ray
from raylurm.train.fit import resolve_dataset
from raylurm.tune import report, results, sweeps
from raylurm.tune.results import default_storage, resolve_experiment
from raylurm.tune.run import experiment_dir, run_sweep, smoke

log = logging.getLogger("raylurm.tune")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raylurm.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(p)
    p.add_argument("sweep", help="a sweep file (tune_configs/<name>.py), or 'report' (see: python -m raylurm.tune report -h)")
    p.add_argument("--name", help="experiment name (default: <sweep>-<timestamp>; with --resume: the sweep's name)")
    p.add_argument("--resume", action="store_true", help="continue the experiment --name (Tuner.restore): finished trials are not rerun")
    p.add_argument("--smoke-test", action="store_true", help="two trials per method, two epochs of two steps (checks a sweep end to end)")
    p.add_argument("--method", action="append", dest="methods", help="only this method of the sweep (repeatable)")
    p.add_argument("--data", default="ml-1m", help="dataset dir or bundled name; trials use its evaluation split (default: ml-1m)")
    p.add_argument("--cutoff-quantile", type=float, default=SplitConfig().cutoff_quantile,
                   help="the split's category-preference cutoff quantile (default: %(default)s)")
    p.add_argument("--storage-path", help="where experiments go (default: $RAYLURM_HOME/tune; s3://… on clusters)")
    p.add_argument("--max-concurrent-trials", type=int, help="cap on trials side by side (default: CPUs (GPUs) / workers per trial)")
    p.add_argument("--registry", help="registry directory (default: $RAYLURM_REGISTRY, else $RAYLURM_HOME/registry)")
    p.add_argument("--no-register", action="store_true", help="do not export the best checkpoints to the registry")
    cli.add_ray_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run (or resume) a sweep, export each method's best checkpoint to the registry, print where it all is."""
    sweep = sweeps.load(args.sweep)  # fails on typos before anything starts
    unknown = sorted(set(args.methods or []) - set(sweep.methods))
    if unknown:
        raise ValueError(f"{sweep.path} does not sweep {unknown}; it sweeps {sorted(sweep.methods)}")
    if args.smoke_test:
        sweep = smoke(sweep)
    if args.resume and not args.name:
        raise ValueError("--resume needs the --name of the experiment to continue")
    name = args.name or f"{sweep.name}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    storage = args.storage_path or str(default_storage())
    # with the dashboard: trials, results and resources at a glance (http://127.0.0.1:8265), and Ray Train's own
    # placement-group cleaner works (raylurm.tune.run.ReleaseStoppedTrials frees stopped trials' workers either way)
    init_ray(args.address, num_cpus=args.num_cpus, include_dashboard=True)
    split = materialise(resolve_dataset(args.data), SplitConfig(cutoff_quantile=args.cutoff_quantile))
    grids = run_sweep(sweep, split, storage, name, resume=args.resume, methods=args.methods,
                      max_concurrent=args.max_concurrent_trials)
    root = experiment_dir(storage, name)
    for method, grid in grids.items():
        errors = [r for r in grid if r.error]
        log.info("%s: %d trial(s), %d failed", method, len(grid), len(errors))
    if "://" in root:
        log.info("results in %s; sync it locally for the report and the registry", root)
        return 0
    if not args.no_register:
        for method, (entry, promoted) in results.register_best(Path(root), Registry(args.registry)).items():
            log.info("%s: best %s %.4f -> registry %s%s", method, entry.metric, entry.value, entry.path,
                     " (serving)" if promoted else "")
    print(f"experiment: {root}\nreport:     python -m raylurm.tune report {root}\n"
          f"tensorboard --logdir {root}")
    return 0


def build_report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raylurm.tune report", description=report.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(p)
    p.add_argument("experiment", help="experiment directory, or its name under --storage-path")
    p.add_argument("--storage-path", help="where experiments are (default: $RAYLURM_HOME/tune)")
    p.add_argument("--out", help="report directory (default: <experiment>/report)")
    p.add_argument("--no-test", action="store_true", help="skip the test metrics of the chosen checkpoints")
    return p


def run_report(args: argparse.Namespace) -> int:
    """Write and print the sweep report (test metrics of the chosen checkpoints computed once, then cached)."""
    experiment = resolve_experiment(args.experiment, args.storage_path)
    record = results.sweep_record(experiment)
    trials = results.load_trials(experiment)
    if not trials:
        raise ValueError(f"{experiment}: no trial has reported yet")
    best = results.best_trials(trials)
    tests = {} if args.no_test else report.test_metrics(experiment, record, best)
    out = Path(args.out) if args.out else experiment / "report"
    out.mkdir(parents=True, exist_ok=True)
    findings = report.ablations(trials)
    images = [p.name for p in report.plots(trials, findings, out)]
    command = "python -m raylurm.tune report " + " ".join(
        [experiment.name] + (["--out", args.out] if args.out else []) + (["--no-test"] if args.no_test else []))
    text = report.markdown(experiment, record, trials, best, tests, findings, images, command)
    write_text(out / "REPORT.md", text)
    print(text)
    log.info("report: %s", out / "REPORT.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        return cli.execute(run_report, build_report_parser(), argv[1:])
    return cli.execute(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
