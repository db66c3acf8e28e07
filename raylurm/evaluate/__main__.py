"""``python -m raylurm.evaluate`` — downstream evaluation of frozen user representations.

Examples::

    python -m raylurm.evaluate --checkpoint demo-lurm              # a run name, run dir or checkpoint dir
    python -m raylurm.evaluate --all                               # latest checkpoint of each method on the split
    python -m raylurm.evaluate --registry                          # the sweeps' best checkpoints (raylurm.registry)
    python -m raylurm.evaluate --all --pretrain --out results/ml-1m --results-md RESULTS.md   # the RESULTS.md command

Tasks (see ``raylurm.evaluate.tasks``): user profiling, category preference, next item
(leave-one-out, full ranking and 100 popularity-sampled negatives). Baselines in the same
tables: raw BoI, TF-IDF of the user's item texts, a randomly initialised encoder of each
evaluated method, popularity. The harness owns the split (``raylurm.evaluate.split``); a
checkpoint is evaluated only if it was pretrained on that split's pretraining part
(``python -m raylurm.pretrain --split``) — anything else saw held-out events and is refused.

Writes ``<out>/RESULTS.md``, ``<out>/results.csv`` (mean, std per task/target/model/metric),
``<out>/results_by_seed.csv`` and PNG plots; prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from raylurm import cli
from raylurm.evaluate import report, tasks
from raylurm.evaluate.split import Split, SplitConfig, materialise

log = logging.getLogger("raylurm.evaluate")

METHOD_ORDER = ("lurm", "atrank", "dss", "adaptssr")
INPUT_PARTS = ("history", "history_test", "before_cutoff")


# ------------------------------------------------------------------------------------ checkpoints
def checkpoints_in(run: Path) -> list[Path]:
    return sorted((p for p in run.glob("checkpoint_*") if (p / "meta.json").exists()), key=lambda p: p.name)


def resolve_checkpoint(value: str, storage: Path) -> Path:
    """A checkpoint dir, a run dir (its latest checkpoint) or a run name under ``storage``."""
    for candidate in (Path(value), storage / value):
        if (candidate / "meta.json").exists():
            return candidate
        found = checkpoints_in(candidate) if candidate.is_dir() else []
        if found:
            return max(found, key=lambda p: (json.loads((p / "meta.json").read_text()).get("step", 0), p.name))
    raise FileNotFoundError(f"no checkpoint at {value!r} (looked for a checkpoint dir, a run dir and a run name under {storage})")


def check_split(checkpoint: Path, split: Split) -> dict:
    """The checkpoint's meta, if it was pretrained on ``split``'s pretraining part; a clear refusal otherwise."""
    meta = json.loads((checkpoint / "meta.json").read_text())
    seen = meta.get("split")
    if seen != split.id:
        what = "all events (no --split)" if seen is None else f"split {seen}"
        raise ValueError(
            f"refusing {checkpoint}: it was pretrained on {what}, but this evaluation uses split {split.id} "
            f"(dataset {split.meta['dataset']}, cutoff quantile {split.meta['config']['cutoff_quantile']}); its pretraining "
            f"may have seen held-out events. Pretrain on this split with: python -m raylurm.pretrain --split "
            f"--data {split.meta['dataset']} --cutoff-quantile {split.meta['config']['cutoff_quantile']}")
    if meta.get("vocabulary_hash") != split.meta["vocabulary_hash"]:
        raise ValueError(f"refusing {checkpoint}: its vocabulary {meta.get('vocabulary_hash')} is not the split's "
                         f"{split.meta['vocabulary_hash']}")
    return meta


def latest_per_method(storage: Path, split: Split) -> dict[str, Path]:
    """The most trained checkpoint of each method pretrained on ``split``, across runs in ``storage``."""
    best: dict[str, tuple] = {}
    for meta_path in storage.glob("*/checkpoint_*/meta.json"):
        meta = json.loads(meta_path.read_text())
        if meta.get("split") != split.id:
            continue
        key = (meta.get("epoch", 0), meta_path.parent.stat().st_mtime)
        if meta["method"] not in best or key > best[meta["method"]][0]:
            best[meta["method"]] = (key, meta_path.parent)
    return {m: best[m][1] for m in METHOD_ORDER if m in best}


def registry_per_method(root: str | None, split: Split, methods: Sequence[str] = METHOD_ORDER) -> dict[str, Path]:
    """The current registry entry of each method, if it was pretrained on ``split``."""
    from raylurm.registry import Registry

    registry = Registry(root)
    out = {}
    for method in methods:
        entry = registry.current(method)
        if entry is None:
            continue
        if entry.split != split.id:
            log.warning("registry: %s entry %s was pretrained on split %s, not %s; skipped", method, entry.name, entry.split, split.id)
            continue
        out[method] = entry.path
    if not out:
        raise FileNotFoundError(f"registry {registry.root} has no current entry on split {split.id}: run a sweep "
                                f"(python -m raylurm.tune tune_configs/study.py)")
    return out


# ------------------------------------------------------------------------------------ subjects
def subjects_for(checkpoints: dict[str, Path], split: Split, baselines: bool, score_users: list | None = None) -> list[tasks.Subject]:
    """Pretrained checkpoints, their random-init twins (the pretraining run's own initial weights), the baselines."""
    from raylurm.evaluate import represent
    from raylurm.train import init_seed

    def encoder(checkpoint: Path, seed: int | None):
        cache: dict[str, represent.Representation] = {}

        def get(part: str) -> represent.Representation:
            if not cache:  # one Ray Data pass over every input part
                cache.update(represent.encode(checkpoint, {p: split.boi(p) for p in INPUT_PARTS}, random_init_seed=seed,
                                              score_parts=("history_test",), score_users=score_users))
            return cache[part]
        return get

    def boi():
        cache: dict[str, represent.Representation] = {}

        def get(part: str) -> represent.Representation:
            if part not in cache:
                cache[part] = represent.raw_boi(split.boi(part))
            return cache[part]
        return get

    out = [tasks.Subject(name, "pretrained", encoder(path, None)) for name, path in checkpoints.items()]
    if baselines:
        out += [tasks.Subject(f"{name} (random init)", "random init",
                              encoder(path, init_seed(json.loads((path / "meta.json").read_text()).get("train", {}).get("seed", 0))))
                for name, path in checkpoints.items()]
        out += [tasks.Subject("raw BoI", "baseline", boi()), tasks.Subject("TF-IDF", "baseline", None, tfidf=True),
                tasks.Subject("popularity", "baseline", None, popularity=True)]
    return out


def evaluate(split: Split, checkpoints: dict[str, Path], config: tasks.EvalConfig = tasks.EvalConfig(),
             baselines: bool = True) -> list[dict]:
    """All subjects on all tasks -> long-format rows."""
    for path in checkpoints.values():
        check_split(path, split)
    context = tasks.Context(split, config)
    rows: list[dict] = []
    for subject in subjects_for(checkpoints, split, baselines, score_users=tasks.scored_users(context)):
        started = time.perf_counter()
        rows += tasks.run(subject, context)
        log.info("evaluated %s in %.1f s", subject.name, time.perf_counter() - started)
    return rows


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_outputs(rows: list[dict], out: Path, split: Split, checkpoints: dict[str, Path], command: str,
                  results_md: Path | None = None, footer: str = "", commit: str | None = None) -> tuple[str, Path]:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    summary = report.summarise(rows)
    report.write_csv(out / "results.csv", summary)
    report.write_csv(out / "results_by_seed.csv", pd.DataFrame(rows))
    images = report.bar_plots(summary, out)
    curve = report.training_curves({m: p.parent for m, p in checkpoints.items()}, out / "pretraining_curves.png")
    images += [curve] if curve else []
    md_path = results_md or out / "RESULTS.md"
    relative = [str(Path(_relpath(i, md_path.parent))) for i in images]
    seeds = sorted({r["seed"] for r in rows})
    header = (f"# Results — {split.meta['dataset']}\n\n"
              f"Produced by `{command}` at commit `{commit or _commit()}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.\n\n"
              f"Split `{split.id}`: leave-one-out (last event test, second-to-last validation) and category-preference cutoff "
              f"{dt.datetime.fromtimestamp(split.cutoff, dt.timezone.utc):%Y-%m-%d %H:%M} UTC (quantile "
              f"{split.meta['config']['cutoff_quantile']}); pretraining saw {split.meta['events']['pretrain']:,} events. "
              f"Probe users split 60/20/20 per seed; mean ± std over seeds {seeds}; choices on validation users, "
              f"test users scored once. Best mean per column in bold.\n\n"
              + checkpoint_table(checkpoints))
    footer = report.findings(summary, split.meta.get("dataset")) + ("\n" + footer if footer else "")
    text = report.markdown(summary, header, relative, footer)
    report.write_text(md_path, text)
    if results_md is not None and md_path != out / "RESULTS.md":
        report.write_text(out / "RESULTS.md", report.markdown(summary, header, [str(Path(_relpath(i, out))) for i in images], footer))
    return text, md_path


def checkpoint_table(checkpoints: dict[str, Path]) -> str:
    lines = ["| method | epochs | steps | users per step | checkpoint |", "|---|---|---|---|---|"]
    for method, path in checkpoints.items():
        meta = json.loads((path / "meta.json").read_text())
        train = meta.get("train", {})
        per_worker = train.get("batch_size") or meta["method_config"].get("batch_size")
        lines.append(f"| {method} | {meta.get('epoch')} | {meta.get('step')} | {per_worker} × {train.get('num_workers', 1)} "
                     f"| `{path.parent.name}/{path.name}` |")
    return "\nPretraining (paper defaults; the run's TensorBoard logs hold the loss per epoch):\n\n" + "\n".join(lines) + "\n" if checkpoints else ""


def _relpath(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


# ------------------------------------------------------------------------------------ CLI
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
    p.add_argument("--epochs", type=int, default=5, help="with --pretrain: epochs (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=2, help="with --pretrain: Ray Train workers (default: %(default)s)")
    p.add_argument("--methods", default=",".join(METHOD_ORDER), help="with --all or --registry: which methods (default: all four)")
    p.add_argument("--data", default="ml-1m", help="prepared dataset dir or bundled name (default: ml-1m)")
    p.add_argument("--cutoff-quantile", type=float, default=SplitConfig().cutoff_quantile,
                   help="category-preference cutoff as a quantile of event times (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="probe seeds (default: %(default)s)")
    p.add_argument("--tasks", default="profiling,category,next_item", help="comma-separated subset of tasks")
    p.add_argument("--no-baselines", action="store_true", help="skip raw BoI, TF-IDF, random init and popularity")
    p.add_argument("--out", help="output directory (default: $RAYLURM_HOME/evaluations/<dataset>-<split>)")
    p.add_argument("--results-md", help="also write the Markdown report here (e.g. RESULTS.md)")
    p.add_argument("--storage-path", help="where runs are (default: $RAYLURM_HOME/runs)")
    cli.add_ray_arguments(p)
    return p


def main_(args) -> int:
    from raylurm.data import datasets
    from raylurm.data.prepare import data_home
    from raylurm.pretrain import default_storage
    from raylurm.runtime import init_ray

    commit = _commit()  # before anything is written: earlier outputs in the checkout must not count as changes
    config = tasks.EvalConfig(seeds=tuple(range(args.seeds)), tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()))
    split_config = SplitConfig(cutoff_quantile=args.cutoff_quantile)
    storage = Path(args.storage_path or default_storage()).expanduser()
    init_ray(args.address, num_cpus=args.num_cpus)
    dataset = datasets.resolve(args.data)
    split = materialise(dataset, split_config)
    if args.all:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = sorted(set(methods) - set(METHOD_ORDER))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHOD_ORDER)}")
        found = latest_per_method(storage, split)
        if args.pretrain:
            for method in methods:
                if method not in found or _epochs(found[method]) < args.epochs:  # train, or continue the run
                    found[method] = pretrain_on_split(split, method, args.epochs, args.num_workers, storage)
        checkpoints = {m: found[m] for m in methods if m in found}
        if not checkpoints:
            raise FileNotFoundError(f"no checkpoint pretrained on split {split.id} under {storage}; add --pretrain")
    elif args.registry is not None:
        checkpoints = registry_per_method(args.registry or None, split, [m.strip() for m in args.methods.split(",") if m.strip()])
    else:
        checkpoints = {}
        for value in args.checkpoint:
            path = resolve_checkpoint(value, storage)
            checkpoints[check_split(path, split)["method"]] = path
    rows = evaluate(split, checkpoints, config, baselines=not args.no_baselines)
    out = Path(args.out) if args.out else data_home() / "evaluations" / f"{split.meta['dataset']}-{split.id}"
    command = "python -m raylurm.evaluate " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    text, md = write_outputs(rows, out, split, checkpoints, command.strip(), Path(args.results_md) if args.results_md else None,
                             commit=commit)
    print(text)
    log.info("wrote %s, %s", md, out / "results.csv")
    return 0


def _epochs(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "meta.json").read_text()).get("epoch", 0))


def pretrain_on_split(split: Split, method: str, epochs: int, num_workers: int, storage: Path) -> Path:
    from raylurm.pretrain import fit
    from raylurm.train import TrainConfig

    result = fit(split.boi("pretrain"), TrainConfig(method=method, epochs=epochs, num_workers=num_workers),
                 name=f"{method}-eval-{split.id}", storage_path=str(storage), split=split.id)
    if result.error:
        raise RuntimeError(f"pretraining {method} failed: {result.error}")
    return Path(result.checkpoint.path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.set_defaults(argv=None if argv is None else list(argv))
    return cli.run(main_, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
