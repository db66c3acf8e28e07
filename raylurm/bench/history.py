"""``python -m raylurm.bench history`` — what encoding one user costs as the history grows.

LURM's claim (§1, §3.2): a lifelong history is summarised by a cost set by its time span (one sparse
BoI vector per month and per year), not by its event count, with nothing truncated; sequence models
read the latest ``max_length`` events and drop the rest. Measured here, one fresh process per
(method, history length), CPU, the methods' default sizes, randomly initialised (cost does not
depend on the weights):

* histories of ``--events`` events per user (10^2 … 10^5 by default), spread uniformly over
  ``--years`` years (10), items uniform over ``--items``, each item in one interest of D = ``--interests``;
* **lurm**: the user's month and year bags built from ALL its events (the pipeline's eq. 4
  aggregation, numpy: :func:`raylurm.boi.pipeline.bag_entries`), then SMEN's ``embed`` of them;
  reported separately (``bags`` / ``encode``) and together;
* **each sequence method**: ``embed`` of the latest ``--max-sequence-length`` events (200: what the BoI
  rows hold; each model then keeps its own max length) — the events before them are not read;
* time: median over ``--repeats`` calls, per user (``--users`` users per call); memory: the child's
  peak RSS above its RSS before the first call (model and imports excluded), per user.

A log-log plot (time per user against events per user) is written next to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from raylurm.bench import common

log = logging.getLogger(__name__)

HELP = "encoding cost per user against events per user (10^2..10^5 over 10 years): LURM vs the sequence methods"
SECTION = "## Cost as histories grow (python -m raylurm.bench history)"
CHILD = "import sys; from raylurm.bench.history import child_main; sys.exit(child_main())"
SECONDS_PER_YEAR = 365.2425 * 86400
START = 1_262_304_000  # 2010-01-01 UTC


def histories(num_users: int, num_events: int, years: int, num_items: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(items (U, n) int64, timestamps (U, n) int64 sorted per user): uniform over ``years`` years from 2010."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, num_items, size=(num_users, num_events))
    times = np.sort(START + (rng.random((num_users, num_events)) * years * SECONDS_PER_YEAR).astype(np.int64), axis=1)
    return items, times


def lurm_bags(items: np.ndarray, times: np.ndarray, num_interests: int) -> dict:
    """Every user's month and year bags from all its events (item i in interest i mod D), as ``collate`` lays them out."""
    from raylurm.boi.pipeline import bag_entries, period_index
    from raylurm.train.views import sparse_bags

    users = np.repeat(np.arange(items.shape[0]), items.shape[1])
    interest, flat_times = items.reshape(-1) % num_interests, times.reshape(-1)
    batch = {}
    for scale in ("month", "year"):
        found = bag_entries(users, period_index(flat_times, scale), interest, np.ones(len(interest)))
        batch.update(sparse_bags(*found, items.shape[0], scale))
    return batch


def sequence_batch(items: np.ndarray, times: np.ndarray, max_length: int) -> dict:
    """The latest ``max_length`` events of every user, as ``collate`` lays them out (+1 shift, no padding needed)."""
    import torch

    keep = min(max_length, items.shape[1])
    latest = items[:, -keep:] + 1
    return {"items": torch.from_numpy(latest), "behaviors": torch.ones_like(torch.from_numpy(latest)),
            "timestamps": torch.from_numpy(times[:, -keep:]), "lengths": torch.full((items.shape[0],), keep)}


def child_main(argv: Sequence[str] | None = None) -> int:
    """Internal: one (method, events) measurement in this fresh process; writes {bags_s, encode_s, rss} as JSON."""
    parser = argparse.ArgumentParser(prog="raylurm.bench.history child", description="internal: one measurement")
    parser.add_argument("--method", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--years", type=int, required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--interests", type=int, required=True)
    parser.add_argument("--max-sequence-length", type=int, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)

    import psutil
    import torch

    from raylurm.methods import METHODS
    from raylurm.train.batch import DataInfo

    torch.manual_seed(0)
    info = DataInfo(num_interests=args.interests, num_items=args.items, num_behaviors=1, scales=("month", "year"),
                    max_sequence_length=args.max_sequence_length, item_category=tuple(i % 20 for i in range(args.items)),
                    num_categories=20)
    cls = METHODS[args.method]
    model = cls(cls.Config(), info).eval()
    items, times = histories(args.users, args.events, args.years, args.items)
    baseline = psutil.Process().memory_info().rss
    bags, encode = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        batch = lurm_bags(items, times, args.interests) if args.method == "lurm" else sequence_batch(items, times, args.max_sequence_length)
        built = time.perf_counter()
        with torch.no_grad():
            model.embed(batch)
        bags.append(built - started)
        encode.append(time.perf_counter() - built)
    peak = common.max_rss_bytes()
    nonzeros = int(batch["month_ids"].numel() + batch["year_ids"].numel()) if args.method == "lurm" else 0
    args.result.write_text(json.dumps({"bags_s": statistics.median(bags) / args.users,
                                       "encode_s": statistics.median(encode) / args.users,
                                       "rss_per_user": max(0, peak - baseline) / args.users,
                                       "nonzeros_per_user": nonzeros / args.users,
                                       "events_read": args.events if args.method == "lurm" else min(args.events, args.max_sequence_length)}))
    return 0


def measure(method: str, events: int, args: argparse.Namespace, tmp: Path) -> dict:
    users = max(1, min(args.users, int(args.events_per_call // events)))
    result = tmp / f"{method}-{events}.json"
    argv = ["-c", CHILD, "--method", method, "--events", str(events), "--users", str(users), "--years", str(args.years),
            "--items", str(args.items), "--interests", str(int(args.interests)),
            "--max-sequence-length", str(args.max_sequence_length), "--repeats", str(args.repeats), "--result", str(result)]
    run = common.run_child(argv, result, args.timeout)
    if run.status != "ok":
        log.warning("%s at %d events: %s%s", method, events, run.status, f"\n{run.stderr_tail}" if run.stderr_tail else "")
        return {"method": method, "events": events, "users": users, "status": run.status}
    log.info("%s, %d events: %.2f ms per user", method, events, 1e3 * (run.result["bags_s"] + run.result["encode_s"]))
    return {"method": method, "events": events, "users": users, "status": "ok", **run.result}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", default="100,1000,10000,100000", help="events per user, comma-separated")
    parser.add_argument("--years", type=int, default=10, help="the histories' time span")
    parser.add_argument("--methods", default="lurm,sasrec,dss,atrank,adaptssr", help="comma-separated methods")
    parser.add_argument("--users", type=int, default=64, help="users per call (fewer at long histories: --events-per-call)")
    parser.add_argument("--events-per-call", type=float, default=2e6, help="cap on users x events per call (memory)")
    parser.add_argument("--items", type=int, default=20_000, help="catalogue size")
    parser.add_argument("--interests", type=float, default=1e4, help="D (item i in interest i mod D)")
    parser.add_argument("--max-sequence-length", type=int, default=200, help="events a sequence method is given (the BoI rows' cap)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median reported)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement before it is abandoned")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report file (section replaced)")
    common.add_report_arguments(parser)


def main(args: argparse.Namespace) -> int:
    sizes = [int(float(n)) for n in args.events.split(",") if n]
    methods = [m for m in args.methods.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="rl-bench-history-") as tmp:
        rows = [measure(m, n, args, Path(tmp)) for m in methods for n in sizes]
    plot = args.out.with_name("benchmarks-history.png")
    if not args.no_report:
        plot_rows(rows, plot)
    common.publish(args, SECTION, report(args, rows, plot.name))
    return 0


def plot_rows(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raylurm.data.io import atomic_file

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        ok = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        ax.plot([r["events"] for r in ok], [1e3 * (r["bags_s"] + r["encode_s"]) for r in ok], marker="o", label=method)
    ax.set(xscale="log", yscale="log", xlabel="events per user (over 10 years)", ylabel="ms per user (encode + bags)",
           title="Encoding cost as histories grow")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def report(args, rows: list[dict], plot_name: str) -> str:
    machine = common.machine_info()
    table = []
    for r in rows:
        if r["status"] != "ok":
            table.append([r["method"], f"{r['events']:,}", "–", "–", "–", "–", "–", r["status"]])
            continue
        table.append([r["method"], f"{r['events']:,}", f"{r['events_read']:,}",
                      f"{r['nonzeros_per_user']:,.0f}" if r["method"] == "lurm" else "–",
                      f"{1e3 * r['bags_s']:.2f}" if r["method"] == "lurm" else "–", f"{1e3 * r['encode_s']:.2f}",
                      f"{r['rss_per_user'] / 2**20:.2f}", "ok"])
    return "\n".join([
        *common.header(args, machine, ["torch", "numpy"]),
        "",
        f"Histories of n events per user over {args.years} years, {args.items:,} items, D = {int(args.interests):,} "
        f"interests; sequence methods are given the latest {args.max_sequence_length} events (the BoI rows' cap; each "
        "keeps its own max length); LURM reads every event. One fresh process per row, default model sizes, CPU.",
        "",
        common.markdown_table(["method", "events per user", "events read", "BoI non-zeros per user",
                               "bags (ms/user)", "encode (ms/user)", "peak memory (MiB/user)", "status"], table),
        "",
        f"![encoding cost per user against events per user]({plot_name})",
    ])
