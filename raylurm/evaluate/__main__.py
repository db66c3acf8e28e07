"""``python -m raylurm.evaluate`` — downstream evaluation of frozen user representations.

Examples::

    python -m raylurm.evaluate --checkpoint demo-lurm              # a run name, run dir or checkpoint dir
    python -m raylurm.evaluate --all                               # latest checkpoint of each method on the split
    python -m raylurm.evaluate --registry                          # the sweeps' best checkpoints (raylurm.registry)
    python -m raylurm.evaluate --all --pretrain --out results/ml-1m --results-md RESULTS.md   # the RESULTS.md command
    python -m raylurm.evaluate --all --pretrain --methods atrank --out results/ml-1m --resume  # add a method to it later

``--resume`` makes a long evaluation span sessions: every subject's results are stored under
``<out>/subjects/`` as it finishes (always); with ``--resume`` a stored subject is read back
instead of evaluated again, and every other stored subject of the same split and protocol — a
method pretrained and evaluated in an earlier session — is carried into the report with the commit
it was evaluated at (``raylurm.evaluate.store``).

Tasks (see ``raylurm.evaluate.tasks``): user profiling, category preference, next item
(leave-one-out on every user, full ranking over the items with events, and 100
popularity-sampled negatives), and on synthetic data the recovery of each user's first-year topic
mixture from its ``truth.parquet`` (``raylurm.evaluate.recovery``). Baselines in the same tables: majority (label prior),
popularity, raw BoI, TF-IDF of the user's item texts, a randomly initialised encoder of each
evaluated method. Every verdict is a paired bootstrap over the same test users. The harness owns the split (``raylurm.evaluate.split``); a
checkpoint is evaluated only if it was pretrained on that split's pretraining part
(``python -m raylurm.pretrain --split``) — anything else saw held-out events and is refused.

Writes ``<out>/RESULTS.md``, ``<out>/results.csv`` (mean, std per task/target/model/metric),
``<out>/results_by_seed.csv``, ``<out>/results_by_user.parquet`` (every test user's rank or prediction:
the paired tests' input) and PNG plots; prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Sequence

from raylurm import cli
from raylurm.data import datasets
from raylurm.data.prepare import data_home
from raylurm.evaluate import tasks
from raylurm.evaluate.harness import (
    ablation_label,
    ablation_run_name,
    check_split,
    evaluate,
    finished_run,
    git_commit,
    latest_per_method,
    pretrain_on_split,
    refuse_stale_run,
    registry_per_method,
    result_in_run,
    run_name,
    split_of_checkpoint,
    write_outputs,
)
from raylurm.evaluate.recovery import has_truth
from raylurm.evaluate.split import SplitConfig, materialise
from raylurm.evaluate.store import SubjectStore
from raylurm.methods import METHODS
from raylurm.runtime import init_ray
from raylurm.train.checkpoint import default_storage, resolve_checkpoint

log = logging.getLogger("raylurm.evaluate")

PROTOCOL_FIELDS = ("catalogue", "mask_history", "negatives", "negative_sampling", "next_item_seeds", "head_prefixes", "head_folds",
                   "own_scorer_head")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raylurm.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", action="append", metavar="PATH", help="checkpoint dir, run dir or run name (repeatable)")
    what.add_argument("--all", action="store_true", help="the latest checkpoint of each method pretrained on this split")
    what.add_argument("--registry", nargs="?", const="", metavar="DIR",
                      help="the registry's current entry of each method (the sweeps' best; default DIR: $RAYLURM_HOME/registry)")
    p.add_argument("--pretrain", action="store_true",
                   help="with --all: first pretrain (paper defaults) each method with no checkpoint of --epochs epochs on the split "
                        "(a shorter run of the same name is continued)")
    # a choice: a cap, not a budget — each run stops when its validation metric has not improved for 5 epochs
    p.add_argument("--epochs", type=int, default=200,
                   help="with --pretrain: the most epochs per run; early stopping on the validation metric (patience 5) "
                        "ends a run sooner (default: %(default)s)")
    p.add_argument("--ablations", action="store_true",
                   help="with --all: also evaluate (with --pretrain: first pretrain) each method's paper loss, rows "
                        "'<method> (paper loss)': the same budget and early stopping as the default")
    p.add_argument("--pretrain-seeds", type=int, default=1, metavar="N",
                   help="with --all --pretrain: pretrain each method N times (seeds 0..N-1) and evaluate every run, so a row's "
                        "spread and its paired intervals include pretraining noise (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=2, help="with --pretrain: Ray Train workers (default: %(default)s)")
    p.add_argument("--methods", default=",".join(METHODS), help="with --all or --registry: which methods (default: all)")
    p.add_argument("--data", help="prepared dataset dir or bundled name (default: with --checkpoint, the dataset the "
                                  "checkpoint's split was cut from; otherwise ml-1m)")
    p.add_argument("--cutoff-quantile", type=float, default=SplitConfig().cutoff_quantile,
                   help="category-preference cutoff as a quantile of event times (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="probe seeds (default: %(default)s)")
    p.add_argument("--tasks", help="comma-separated subset of profiling, category, next_item, recovery (default: the first "
                                   "three, and recovery where the dataset keeps its generating truth, truth.parquet)")
    protocol = p.add_argument_group("next-item protocol (defaults: the full-ranking leave-one-out anchors' protocol)")
    cli.add_config_arguments(protocol, tasks.EvalConfig, PROTOCOL_FIELDS)
    p.add_argument("--no-baselines", action="store_true", help="skip raw BoI, TF-IDF, random init and popularity")
    p.add_argument("--out", help="output directory (default: $RAYLURM_HOME/evaluations/<dataset>-<split>)")
    p.add_argument("--results-md", help="also write the Markdown report here (e.g. RESULTS.md)")
    p.add_argument("--resume", action="store_true",
                   help="read back each subject already evaluated under <out>/subjects/ on this split and protocol instead "
                        "of evaluating it again, and carry every other stored subject (a method trained in an earlier "
                        "session) into the report, marked with its commit; without it every subject is evaluated and stored")
    p.add_argument("--storage-path", help="where runs are (default: $RAYLURM_HOME/runs)")
    cli.add_ray_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate the checkpoints the arguments name (pretraining them first with ``--pretrain``); write and print the report."""
    commit = git_commit()  # before anything is written: earlier outputs in the checkout must not count as changes
    chosen = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else tasks.TASKS
    config = cli.config_from_args(args, tasks.EvalConfig, PROTOCOL_FIELDS, seeds=tuple(range(args.seeds)), tasks=chosen)
    split_config = SplitConfig(cutoff_quantile=args.cutoff_quantile)
    storage = Path(args.storage_path or default_storage()).expanduser()
    if args.pretrain_seeds < 1 or (args.pretrain_seeds > 1 and not (args.all and args.pretrain)):
        raise ValueError("--pretrain-seeds N needs N >= 1 and, above 1, --all --pretrain")
    init_ray(args.address, num_cpus=args.num_cpus)
    paths = [resolve_checkpoint(value, storage) for value in args.checkpoint or ()]
    if paths and args.data is None:
        split = split_of_checkpoint(paths[0])  # the checkpoint records its split, and the split its dataset
    else:
        split = materialise(datasets.resolve(args.data or "ml-1m"), split_config)
    if args.tasks is None and has_truth(split.source):
        config = dataclasses.replace(config, tasks=config.tasks + ("recovery",))
    if args.all:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        checkpoints = {}
        for method in methods:
            runs = []
            for seed in range(args.pretrain_seeds):
                refuse_stale_run(storage, run_name(method, split, seed), split)
                found = result_in_run(storage, run_name(method, split, seed), split)
                if seed == 0 and found is None and not args.pretrain:
                    found = latest_per_method(storage, split).get(method)
                if args.pretrain and not finished_run(storage, run_name(method, split, seed), split, args.epochs):  # train, or continue
                    found = pretrain_on_split(split, method, args.epochs, args.num_workers, storage, seed=seed)
                if found is not None:
                    runs.append(found)
            if runs:
                checkpoints[method] = runs if len(runs) > 1 else runs[0]
            options = getattr(METHODS[method], "paper_loss", None)
            if args.ablations and options:
                name = ablation_run_name(method, split)
                refuse_stale_run(storage, name, split)
                found = result_in_run(storage, name, split)
                if args.pretrain and not finished_run(storage, name, split, args.epochs):
                    found = pretrain_on_split(split, method, args.epochs, args.num_workers, storage, overrides=options, name=name)
                if found is not None:
                    checkpoints[ablation_label(method)] = found
        if not checkpoints and not args.resume:
            raise FileNotFoundError(f"no checkpoint pretrained on split {split.id} under {storage}; add --pretrain "
                                    "(or --resume to report the subjects stored under --out)")
    elif args.registry is not None:
        checkpoints = registry_per_method(args.registry or None, split, [m.strip() for m in args.methods.split(",") if m.strip()])
    else:
        checkpoints = {}
        for path in paths:
            method = check_split(path, split)["method"]
            # a run of the method's paper loss (evaluate --ablations names it so) keeps its own row label
            checkpoints[ablation_label(method) if ablation_run_name(method, split) == path.parent.name else method] = path
    out = Path(args.out) if args.out else data_home() / "evaluations" / f"{split.meta['dataset']}-{split.id}"
    store = SubjectStore(out / "subjects", split.id, config, commit, resume=args.resume, vocabulary=split.meta.get("vocabulary_hash"))
    rows, per_user = evaluate(split, checkpoints, config, baselines=not args.no_baselines, store=store)
    command = "python -m raylurm.evaluate " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    text, md = write_outputs(rows, per_user, out, split, checkpoints, command.strip(),
                             Path(args.results_md) if args.results_md else None, commit=commit, config=config,
                             carried=store.carried(), reused=store.reused)
    print(text)
    log.info("wrote %s, %s", md, out / "results.csv")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.set_defaults(argv=None if argv is None else list(argv))
    return cli.execute(run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
