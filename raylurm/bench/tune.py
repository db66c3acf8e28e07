"""``python -m raylurm.bench tune`` — sweep wall time: raylurm's trial layout vs one run at a time.

The same LURM grid (``--trials`` values of M, H = 64, ``--epochs`` epochs, FIFO, validation every
epoch) on the evaluation split of ``--data`` (ml-1m by default), on the embedded Ray, twice:

* **raylurm**: ``python -m raylurm.tune``'s layout — 1 Ray Train worker per trial, as many trials
  side by side as there are CPUs;
* **baseline**: what a user gets running ``raylurm.pretrain`` once per configuration — one trial at
  a time, each with 2 workers (the pretraining default).

Reported: wall time of each sweep (driver side, Ray start-up excluded), trials per hour and the
ratio, from one run on one machine. Both runs compute the same validation metric per epoch; the
2-worker runs see a global batch twice as large, so their val_auc is shown only as a sanity check.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from raylurm.bench import common

HELP = "sweep wall time: N 1-worker trials side by side (raylurm.tune) vs one 2-worker run at a time"
SECTION = "## Sweeps (python -m raylurm.bench tune)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="ml-1m", help="dataset (its evaluation split is used; default: ml-1m)")
    parser.add_argument("--trials", type=int, default=4, help="LURM configurations in the grid (M = 1, 2, 3, …)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report file (section replaced)")
    common.add_report_arguments(parser)


def _sweep(root: Path, trials: int, epochs: int):
    from raylurm.tune import sweeps

    path = root / "bench_sweep.py"
    path.write_text("from ray import tune\n"
                    f"METHODS = {{'lurm': {{'num_anchors': tune.grid_search({list(range(1, trials + 1))}), 'hidden_dim': 64}}}}\n"
                    f"TRAIN = {{'epochs': {epochs}}}\n"
                    "SEARCH = {'num_samples': 1, 'scheduler': 'fifo'}\n")
    return sweeps.load(path)


def run_layout(sweep, split, storage: Path, name: str, workers: int, max_concurrent: int | None) -> dict:
    import dataclasses

    from raylurm.tune import results
    from raylurm.tune.run import concurrency, run_sweep

    sweep = dataclasses.replace(sweep, train={**sweep.train, "num_workers": workers})
    started = time.perf_counter()
    run_sweep(sweep, split, str(storage), name, max_concurrent=max_concurrent)
    wall = time.perf_counter() - started
    trials = results.load_trials(storage / name)["lurm"]
    return {"name": name, "workers": workers, "concurrent": concurrency(workers, False, max_concurrent), "wall_s": wall,
            "trials": len(trials), "errors": sum(t.error is not None for t in trials),
            "best_val_auc": max(t.best_value for t in trials)}


def main(args: argparse.Namespace) -> int:
    from raylurm.evaluate.split import SplitConfig, materialise
    from raylurm.runtime import init_ray
    from raylurm.train.fit import resolve_dataset

    machine = common.machine_info()
    init_ray()
    split = materialise(resolve_dataset(args.data), SplitConfig())
    with tempfile.TemporaryDirectory(prefix="raylurm-bench-tune-") as tmp:
        root = Path(tmp)
        sweep = _sweep(root, args.trials, args.epochs)
        ours = run_layout(sweep, split, root / "tune", "raylurm", workers=1, max_concurrent=None)
        base = run_layout(sweep, split, root / "tune", "baseline", workers=2, max_concurrent=1)
    rows = []
    for label, r in (("raylurm: 1 worker per trial, trials side by side", ours), ("baseline: 2 workers, one trial at a time", base)):
        rows.append([label, r["concurrent"], r["trials"], r["errors"], f"{r['wall_s']:.0f}", f"{3600 * r['trials'] / r['wall_s']:.0f}",
                     f"{r['best_val_auc']:.4f}"])
    body = "\n".join([
        *common.header(args, machine, ['torch', 'ray']),
        "",
        f"The same sweep — LURM, M ∈ 1…{args.trials}, H = 64, {args.epochs} epochs per trial, val_auc every epoch, FIFO — on "
        f"the {args.data} evaluation split (split `{split.id}`), in the same Ray runtime:",
        "",
        common.markdown_table(["layout", "trials side by side", "trials", "failed", "wall (s)", "trials / hour", "best val_auc"], rows),
        "",
        f"**raylurm's layout: {base['wall_s'] / ours['wall_s']:.2f}× the baseline's trials per hour** (wall-time ratio, "
        "one run on one machine). Both layouts pay the same per-trial costs (process start-up, dataset split, the "
        "validation probe on the Train controller after every epoch); they differ in whether the cores are shared by "
        "independent trials or by the two DDP ranks of one trial.",
    ])
    common.publish(args, SECTION, body)
    return 0
