"""The evaluation harness as a library: which checkpoints, which subjects, all tasks, the written report.

``python -m raylurm.evaluate`` is the command line over :func:`evaluate` and :func:`write_outputs`;
``python -m raylurm.tune report`` calls the same functions for a sweep's best checkpoints.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from raylurm.evaluate import report, represent, tasks
from raylurm.evaluate.split import Split
from raylurm.methods import METHODS
from raylurm.registry import Registry
from raylurm.train.config import TrainConfig
from raylurm.train.fit import fit
from raylurm.train.loop import init_seed

log = logging.getLogger(__name__)

INPUT_PARTS = ("history", "history_test", "before_cutoff")


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
    return {m: best[m][1] for m in METHODS if m in best}


def registry_per_method(root: str | None, split: Split, methods: Sequence[str] = tuple(METHODS)) -> dict[str, Path]:
    """The current registry entry of each method, if it was pretrained on ``split``."""
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


def subjects_for(checkpoints: dict[str, Path], split: Split, baselines: bool, score_users: list | None = None) -> list[tasks.Subject]:
    """Pretrained checkpoints, their random-init twins (the pretraining run's own initial weights), the baselines."""
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


def git_commit() -> str:
    """The checkout's short commit, ``-dirty`` with uncommitted changes to tracked files; ``unknown`` outside git."""
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
    """Write RESULTS.md (and ``results_md``), results.csv, results_by_seed.csv and the plots; return the Markdown."""
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
              f"Produced by `{command}` at commit `{commit or git_commit()}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.\n\n"
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
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


def trained_epochs(checkpoint: Path) -> int:
    """The epochs a checkpoint was trained for (its ``meta.json``)."""
    return int(json.loads((checkpoint / "meta.json").read_text()).get("epoch", 0))


def pretrain_on_split(split: Split, method: str, epochs: int, num_workers: int, storage: Path) -> Path:
    """Pretrain ``method`` (paper defaults) on the split's pretraining part; continue a shorter run of the same name."""
    result = fit(split.boi("pretrain"), TrainConfig(method=method, epochs=epochs, num_workers=num_workers),
                 name=f"{method}-eval-{split.id}", storage_path=str(storage), split=split.id)
    if result.error:
        raise RuntimeError(f"pretraining {method} failed: {result.error}")
    return Path(result.checkpoint.path)
