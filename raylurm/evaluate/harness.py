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

from raylurm.data.io import atomic_file
from raylurm.data.prepare import data_home
from raylurm.evaluate import report, represent, tasks, vocabularies
from raylurm.evaluate.protocol import USER_COLUMNS
from raylurm.evaluate.split import Split
from raylurm.evaluate.store import Entry, SubjectStore, run_record
from raylurm.methods import METHODS
from raylurm.registry import Registry
from raylurm.train.checkpoint import best_in_run, run_finished
from raylurm.train.config import TrainConfig
from raylurm.train.curves import summarise_run
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
    seen = meta.get("vocabulary_hash")
    # a sequence model reads the BoI's item sequences only: a vocabulary the split replaced while keeping them is fine
    same_items = not reads_interests(meta) and seen in split.meta.get("same_item_sequences", [])
    if seen != split.meta["vocabulary_hash"] and not same_items:
        earlier = seen in split.meta.get("previous_vocabulary_hashes", [])
        raise ValueError(f"refusing {checkpoint}: its vocabulary {seen} is not the split's {split.meta['vocabulary_hash']}"
                         + (" (it is the split's earlier vocabulary, replaced by the dataset's chosen one: pretrain again)"
                            if earlier else ""))
    return meta


def reads_interests(meta: dict) -> bool:
    """Whether the checkpoint's method reads the BoI's interests (LURM) rather than only its item sequences."""
    cls = METHODS.get(meta.get("method"))
    return cls is None or bool(getattr(cls, "reads_interests", False))


def split_of_checkpoint(checkpoint: Path) -> Split:
    """The split a checkpoint was pretrained on (``meta.json`` records its id; splits live in ``$RAYLURM_HOME/splits``)."""
    seen = read_meta(checkpoint).get("split")
    if seen is None:
        raise ValueError(f"{checkpoint} was pretrained on all events (no --split): it saw held-out events and cannot be "
                         f"evaluated; pretrain with: python -m raylurm.pretrain --split --data <dataset>")
    found = sorted((data_home() / "splits").glob(f"*-{seen}/split.json"))
    if not found:
        raise FileNotFoundError(f"{checkpoint} was pretrained on split {seen}, which is not under {data_home() / 'splits'}; "
                                "pass --data <dataset> (and --cutoff-quantile) to cut it again")
    return Split.load(found[0].parent)


def latest_per_method(storage: Path, split: Split) -> dict[str, Path]:
    """Each method's most recently trained run on ``split`` in ``storage``, as its result (the best epoch's checkpoint)."""
    runs: dict[str, tuple] = {}
    for meta_path in storage.glob("*/checkpoint_*/meta.json"):
        meta = json.loads(meta_path.read_text())
        if meta.get("split") != split.id:
            continue
        key = meta_path.parent.stat().st_mtime
        if meta["method"] not in runs or key > runs[meta["method"]][0]:
            runs[meta["method"]] = (key, meta_path.parent.parent)
    return {m: best_in_run(runs[m][1], split.id) for m in METHODS if m in runs}


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


Checkpoints = dict[str, "Path | list[Path]"]  # method -> one checkpoint, or one per pretraining seed (--pretrain-seeds)


def runs_of(checkpoints: Checkpoints) -> dict[str, list[Path]]:
    return {m: list(p) if isinstance(p, (list, tuple)) else [p] for m, p in checkpoints.items()}


def subjects_for(checkpoints: Checkpoints, split: Split, baselines: bool, prefixes: Path | None = None) -> list[tasks.Subject]:
    """Pretrained checkpoints (each pretraining run), their random-init twins (each run's own initial weights), baselines.

    ``prefixes``: the BoI directory of the next-item head's prefix examples, encoded in the same pass."""
    parts = {p: split.boi(p) for p in INPUT_PARTS} | ({"prefixes": prefixes} if prefixes is not None else {})

    def encoder(checkpoint: Path, seed: int | None):
        cache: dict[str, represent.Representation] = {}

        def get(part: str) -> represent.Representation:
            if not cache:  # one Ray Data pass over every input part
                cache.update(represent.encode(checkpoint, parts, random_init_seed=seed, score_parts=("history_test",)))
            return cache[part]
        return get

    def boi():
        cache: dict[str, represent.Representation] = {}

        def get(part: str) -> represent.Representation:
            if part not in cache:
                cache[part] = represent.raw_boi(parts[part])
            return cache[part]
        return get

    def twin_seed(path: Path) -> int:
        return init_seed(read_meta(path).get("train", {}).get("seed", 0))

    def vocabulary(path: Path) -> str | None:
        meta = read_meta(path)
        return meta.get("vocabulary_hash") if reads_interests(meta) else None

    runs = runs_of(checkpoints)
    out = [tasks.Subject(name, "pretrained", encoder(path, None), run=k, checkpoint=path, vocabulary=vocabulary(path))
           for name, paths in runs.items() for k, path in enumerate(paths)]
    if baselines:
        out += [tasks.Subject(f"{name} (random init)", "random init", encoder(path, twin_seed(path)), run=k, checkpoint=path,
                              seed=twin_seed(path), vocabulary=vocabulary(path))
                for name, paths in runs.items() for k, path in enumerate(paths)
                if not name.endswith(ABLATION)]  # the paper-loss row has its method's architecture: one random init each
        out += [tasks.Subject("majority", "baseline", None, majority=True), tasks.Subject("popularity", "baseline", None, popularity=True),
                tasks.Subject("raw BoI", "baseline", boi(), vocabulary=split.meta["vocabulary_hash"]),
                tasks.Subject("TF-IDF", "baseline", None, tfidf=True)]
    return out


def evaluate(split: Split, checkpoints: Checkpoints, config: tasks.EvalConfig = tasks.EvalConfig(),
             baselines: bool = True, store: SubjectStore | None = None) -> tuple[list[dict], pd.DataFrame]:
    """All subjects on all tasks -> long-format metric rows and the per-user results.

    ``store``: each subject's results are written there as they finish, and with ``store.resume`` read back
    instead of evaluated again (:mod:`raylurm.evaluate.store`); ``store.carried()`` then holds the rest."""
    for paths in runs_of(checkpoints).values():
        for path in paths:
            check_split(path, split)
    context = tasks.Context(split, config)
    prefixes = context.prefixes.boi if "next_item" in config.tasks else None
    rows: list[dict] = []
    per_user: list[pd.DataFrame] = []
    for subject in subjects_for(checkpoints, split, baselines, prefixes):
        started = time.perf_counter()
        stored = store.get(subject) if store is not None else None
        if stored is not None:
            more, users = stored.rows, stored.per_user
        else:
            more, users = tasks.run(subject, context)
            if store is not None:
                store.put(subject, more, users)
        rows += more
        per_user.append(users)
        log.info("%s %s in %.1f s", "read back" if stored is not None else "evaluated",
                 subject.name if not subject.run else f"{subject.name} (run {subject.run})", time.perf_counter() - started)
    return rows, (pd.concat(per_user, ignore_index=True) if per_user else pd.DataFrame(columns=list(USER_COLUMNS)))


def read_meta(path: Path) -> dict:
    return json.loads((Path(path) / "meta.json").read_text())


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


PROTOCOL = """\
**Protocol.** Next item is leave-one-out: each user's events are ordered by (timestamp, the
item's row in the item table, behaviour) — one tie rule for the split and the BoI pipeline —,
the last event is the test
target, the second-to-last the validation target. Every user with at least three events is
scored ({users:,} users) against the {catalogue:,} items that have at least one event, the
user's input history masked and the target never — the full-ranking protocol of the SASRec /
HSTU ML-1M anchors, whose models are also trained on every event but each user's last two,
as every model here is (pretraining saw {pretrain:,} events). Rows marked *own* rank with the
method's pretrained scorer; every other representation (and ATRank's and DSS's embeddings, rows
"(head)") gets the same next-item head, a softmax over the items trained on {prefixes} (prefix →
next item) examples per user from the pretraining events and scored by {folds}-fold
cross-fitting over users, so every user is scored by a head that never saw them. The sampled
protocol ranks the target among {negatives} {sampling}-sampled negatives from outside the history.

"""
NO_NEXT_ITEM = "**Protocol.** Next item was not evaluated by this command (`--tasks {tasks}`).\n\n"
PROBES = """\
Profiling and category preference{recovery} are probed from frozen representations: the *selection
users* ({selection:.0%} of the users, chosen by a hash of the user id, shared with Tune's
checkpoint selection) choose every epoch and weight decay and are never test users; each probe
seed cuts the other users into probe-train and test users ({train:.0%} / {test:.0%} of all users);
mean ± std over seeds {seeds}{runs}. Category preference reads events before the cutoff
{cutoff} (quantile {quantile}) and predicts the categories touched after it; its caveat: the
encoders and the interest vocabulary were pretrained on every event but each user's last two,
events after the cutoff included (never the labels as targets), the same for every row, so
its rows compare with each other but the task is transductive, not a forecast of unseen time.
Label prevalences are printed under each table; `majority` is the constant predictor.{recovery_note}

Every "A vs B" verdict below is a paired bootstrap over the same test users (2,000 replicates,
95 % percentile interval of Δ; pretraining runs resampled too when there are several): ">"
or "<" only when the interval excludes 0. Best mean per column in bold.
"""


def write_outputs(rows: list[dict], per_user: pd.DataFrame, out: Path, split: Split, checkpoints: Checkpoints, command: str,
                  results_md: Path | None = None, footer: str = "", commit: str | None = None,
                  config: tasks.EvalConfig = tasks.EvalConfig(), carried: Sequence[Entry] = (),
                  reused: Sequence[Entry] = ()) -> tuple[str, Path]:
    """Write RESULTS.md (and ``results_md``), results.csv, results_by_seed.csv, results_by_user.parquet, plots.

    ``carried``: stored subjects of earlier evaluations (``--resume``) to add to ``rows``; their runs' records
    stand in for checkpoints that may no longer exist. ``reused``: subjects whose rows (already in ``rows``) were
    read back from the store. The report names the commit each of them was evaluated at."""
    rows = list(rows) + [r for e in carried for r in e.rows]
    if not rows:
        raise ValueError("nothing to report: no checkpoint, no baseline and no stored subject to carry (--resume) on split "
                         f"{split.id}")
    frames = [f for f in [per_user] + [e.per_user for e in carried] if len(f)]
    per_user = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(USER_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    summary = report.summarise(rows)
    report.write_csv(out / "results.csv", summary)
    report.write_csv(out / "results_by_seed.csv", pd.DataFrame(rows))
    with atomic_file(out / "results_by_user.parquet") as tmp:
        per_user.to_parquet(tmp, index=False)
    images = report.bar_plots(summary, out)
    records = run_records(checkpoints, carried)
    most_runs = max((r["k"] + 1 for r in records), default=0)
    curve = report.training_curves({r["model"]: r["curves"] for r in records if r["k"] == 0}, out / "pretraining_curves.png")
    images += [curve] if curve else []
    md_path = results_md or out / "RESULTS.md"
    relative = [str(Path(_relpath(i, md_path.parent))) for i in images]
    next_users = per_user[per_user.task == "next_item"]
    catalogue = int(summary_value(rows, "catalogue") or 0)
    evaluated = set(per_user.task) | {r.get("task") for r in rows}
    protocol = (PROTOCOL.format(users=next_users.user_id.nunique(), catalogue=catalogue, pretrain=split.meta["events"]["pretrain"],
                                prefixes=config.head_prefixes, folds=config.head_folds, negatives=config.negatives,
                                sampling=config.negative_sampling)
                if "next_item" in evaluated else NO_NEXT_ITEM.format(tasks=",".join(config.tasks)))
    recovered = "recovery" in evaluated
    protocol += PROBES.format(
        recovery=" (and, on synthetic data, the recovery of the first year's topic mixture)" if recovered else "",
        recovery_note=("\nRecovery asks the representation for each user's true first-year topic mixture "
                       "(`truth.parquet`, what the synthetic labels are drawn from): a softmax probe trained against it, "
                       "cosine and top-topic accuracy on the test users; `majority` predicts the mean mixture."
                       if recovered else ""),
        selection=config.fractions[1], train=config.fractions[0], test=config.fractions[2], seeds=list(config.seeds),
        runs=f" and {most_runs} pretraining runs" if most_runs > 1 else "",
        cutoff=f"{dt.datetime.fromtimestamp(split.cutoff, dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        quantile=split.meta["config"]["cutoff_quantile"])
    header = (f"# Results — {split.meta['dataset']}\n\n"
              f"Produced by `{command}` at commit `{commit or git_commit()}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"split `{split.id}`.\n\n" + earlier_note(reused, carried) + protocol + checkpoint_table(records))
    footer = (report.findings(summary, per_user, split.meta.get("dataset")) + ("\n" + footer if footer else "")
              + ("\n" + vocabularies.section(out / "vocabularies.csv", split) if (out / "vocabularies.csv").exists() else ""))
    text = report.markdown(summary, header, relative, footer, per_user=per_user)
    if results_md is not None:  # one file for every dataset: this dataset's section is replaced, the others kept
        report.write_section(md_path, str(split.meta.get("dataset") or split.id), text)
    else:
        report.write_text(md_path, text)
    if results_md is not None and md_path != out / "RESULTS.md":
        report.write_text(out / "RESULTS.md", report.markdown(summary, header, [str(Path(_relpath(i, out))) for i in images], footer,
                                                              per_user=per_user))
    return text, md_path


def summary_value(rows: list[dict], key: str):
    return next((r[key] for r in rows if key in r), None)


def run_records(checkpoints: Checkpoints, carried: Sequence[Entry] = ()) -> list[dict]:
    """The pretraining runs behind the rows: each checkpoint's run here, then each carried entry's stored record."""
    out = []
    for model, paths in runs_of(checkpoints).items():
        for k, path in enumerate(paths):
            record, curves = run_record(path)
            out.append(record | {"model": model, "k": k, "curves": curves, "carried": None})
    out += [e.record | {"model": e.name, "k": e.run, "curves": e.curves if e.curves is not None else pd.DataFrame(),
                        "carried": e.commit} for e in carried if e.group == "pretrained" and e.record]
    return out


def checkpoint_table(runs: "Checkpoints | list[dict]") -> str:
    """The pretraining runs behind the rows: epochs trained, the best (validation-chosen) epoch, wall time.

    ``runs``: checkpoints (read here) or :func:`run_records`."""
    records = runs if isinstance(runs, list) else run_records(runs)
    lines = ["| model | run | seed | epochs trained | best epoch | validation (best) | stopped early | wall time | "
             "steps to best | users per step | checkpoint |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        meta = r["meta"]
        train = meta.get("train", {})
        per_worker = train.get("batch_size") or meta["method_config"].get("batch_size")
        metric = meta.get("validation_metric")
        run = summarise_run(r["curves"], metric)
        value = meta.get("best_value")
        wall = f"{run['seconds'] / 60:.1f} min" if run["seconds"] else "–"
        where = f"`{r['checkpoint']}`" + (f" (carried from commit `{r['carried']}`)" if r["carried"] else "")
        lines.append(f"| {r['model']} | {r['k']} | {train.get('seed', 0)} | {run['epochs'] or meta.get('epoch')} | {meta.get('epoch')} | "
                     f"{f'{metric} {value:.4f}' if metric and value is not None else '–'} | "
                     f"{'yes' if r['stopped_early'] else 'no'} | {wall} | {meta.get('step')} | "
                     f"{per_worker} × {train.get('num_workers', 1)} | {where} |")
    return ("\nPretraining (each run until its validation metric stopped improving for `patience` epochs; the row is "
            "the best epoch's checkpoint; curves in the training plot and the run's TensorBoard logs):\n\n" + "\n".join(lines) + "\n"
            if records else "")


def earlier_note(reused: Sequence[Entry], carried: Sequence[Entry]) -> str:
    """Which rows come from earlier evaluations (``--resume``): read back or carried, at which commit and day."""
    parts = []
    for what, entries in (("read back", reused), ("carried (not evaluated by this command)", carried)):
        by_commit: dict[tuple[str, str], list[str]] = {}
        for e in entries:  # by commit and day
            by_commit.setdefault((e.commit, e.written[:10]), []).append(e.name if not e.run else f"{e.name} (run {e.run})")
        if by_commit:
            parts.append(f"{what}: " + "; ".join(f"{', '.join(dict.fromkeys(names))} at commit `{commit}` ({day})"
                                                 for (commit, day), names in by_commit.items()))
    if not parts:
        return ""
    return ("Rows from earlier evaluations of this split and protocol (`--resume`, stored under `subjects/`) — "
            + " — ".join(parts) + ".\n\n")


def _relpath(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


def run_name(method: str, split: Split, seed: int = 0) -> str:
    """The run a ``--pretrain`` evaluation trains ``method`` in (one per pretraining seed)."""
    return f"{method}-eval-{split.id}" + (f"-seed{seed}" if seed else "")


ABLATION = " (paper loss)"  # the label suffix of a method trained with its paper's own loss (``Method.paper_loss``)


def ablation_label(method: str) -> str:
    """The row of ``method`` trained with its paper's loss."""
    return method + ABLATION


def ablation_run_name(method: str, split: Split) -> str:
    """The run an ``--ablations`` evaluation trains ``method``'s paper loss in."""
    return f"{method}-paper-loss-eval-{split.id}"


def result_in_run(storage: Path, name: str, split: Split) -> Path | None:
    """Run ``name``'s result on ``split`` (its best validation epoch, else its latest), or None."""
    return best_in_run(storage / name, split.id)


def refuse_stale_run(storage: Path, name: str, split: Split) -> None:
    """A clear error for run ``name`` if it read the split's interests with a vocabulary the split has replaced since
    (a rebuilt split keeps its id, so the run's name is the same): resuming it would mix two vocabularies."""
    found = result_in_run(storage, name, split)
    if found is None:
        return
    meta = read_meta(found)
    if reads_interests(meta) and meta.get("vocabulary_hash") != split.meta["vocabulary_hash"]:
        raise ValueError(f"run {storage / name} was pretrained with interest vocabulary {meta.get('vocabulary_hash')}, but the "
                         f"split's BoI now has {split.meta['vocabulary_hash']} (the dataset's vocabulary was chosen anew): "
                         f"move it away (mv {storage / name} {storage / name}.old) and run this command again")


def finished_run(storage: Path, name: str, split: Split, epochs: int) -> bool:
    """Whether run ``name`` trained ``epochs`` epochs on ``split`` or stopped early."""
    return run_finished(storage / name, epochs, split.id)


def pretrain_on_split(split: Split, method: str, epochs: int, num_workers: int, storage: Path, seed: int = 0,
                      overrides: dict | None = None, name: str | None = None) -> Path:
    """Pretrain ``method`` (its defaults, or with ``overrides``; ``seed``) on the split's pretraining part, until early
    stopping or ``epochs``; continue a shorter run of the same name. -> the run's best checkpoint."""
    name = name or run_name(method, split, seed)
    result = fit(split.boi("pretrain"), TrainConfig(method=method, epochs=epochs, num_workers=num_workers, seed=seed),
                 overrides=[f"{k}={v}" for k, v in (overrides or {}).items()], name=name, storage_path=str(storage), split=split.id)
    if result.error:
        raise RuntimeError(f"pretraining {name} failed: {result.error}")
    return result_in_run(storage, name, split) or Path(result.checkpoint.path)
