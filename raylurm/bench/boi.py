"""``python -m raylurm.bench boi`` — the month-scale BoI build on Ray Data vs polars vs DuckDB.

All engines compute the same thing from the same Parquet files: join events to the item ->
interest assignment, count per user x calendar month (UTC, months since 1970-01) x interest,
value = log1p(count) (with soft assignment: log1p of the summed weights), then one row per user
with nested lists ``month_periods`` list<int32>, ``month_ids`` list<list<int32>> (ascending),
``month_values`` list<list<float32>>, written to Parquet. Ray runs
:func:`raylurm.boi.pipeline.build_boi` with ``BoiConfig(scales=("month",), sequences=False)``;
polars runs one lazy streaming query; DuckDB one SQL statement; each in its own fresh process.

Data: a synthetic prepared dataset from :mod:`raylurm.data.synth` (5 years, so months vary;
items = 2 x D) cached in the work directory by config, and a vocabulary that is a *seeded random
hard assignment* item -> interest (no k-means: clustering 10^5 centroids is not what is
measured) with zero centroids of dimension 8 (the build never reads them).

Before any timing is reported, the outputs of all engines are compared cell by cell at every
size: identical (user, month, interest) sets, values within 1e-6; a mismatch aborts the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from raylurm.bench import common
from raylurm.cli import setup_logging

log = logging.getLogger(__name__)

HELP = "BoI build (month scale): Ray Data vs polars vs DuckDB, time and peak memory"
SECTION = "## BoI build (python -m raylurm.bench boi)"
PREAMBLE = ("# Benchmarks\n\nMeasured figures for raylurm against the tools a user would otherwise pick. "
            "Each section is written by the command in its title; re-running it replaces that section only.\n")
ENGINES = ("ray", "polars", "duckdb")
SINGLE_PROCESS = ("polars", "duckdb")
TOLERANCE = 1e-6
SYNTH_YEARS = 5
EVENTS_PER_USER_MONTH = 4.0
NUM_TOPICS = 100
CENTROID_DIM = 8
SEED = 0


# ----------------------------------------------------------------------------- data


def synth_config(num_events: int, num_items: int):
    """A synth config with about ``num_events`` events (users = events / (12 * years * rate))."""
    from raylurm.data.synth import SynthConfig

    users = max(1, round(num_events / (12 * SYNTH_YEARS * EVENTS_PER_USER_MONTH)))
    return SynthConfig(users=users, years=SYNTH_YEARS, items=num_items, num_topics=min(NUM_TOPICS, num_items),
                       events_per_user_month=EVENTS_PER_USER_MONTH, seed=SEED)


def ensure_dataset(workdir: Path, num_events: int, num_items: int) -> Path:
    """The cached synthetic dataset for this size (generated on first use)."""
    from raylurm.data.synth import generate

    config = synth_config(num_events, num_items)
    key = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()).hexdigest()[:10]
    path = workdir / "data" / f"synth-e{num_events}-i{num_items}-{key}"
    if not (path / "manifest.json").exists():
        log.info("generating %s", path)
        generate(config, path, progress=False)
    return path


def random_vocabulary(item_ids: pa.Array, num_interests: int, seed: int = SEED):
    """Seeded random hard assignment item -> one interest in [0, D); zero (D, 8) centroids."""
    from raylurm.boi.vocabulary import Vocabulary

    interests = np.random.default_rng(seed).integers(0, num_interests, len(item_ids)).astype(np.int32)
    offsets = pa.array(np.arange(len(item_ids) + 1, dtype=np.int32))
    return Vocabulary(item_ids, pa.ListArray.from_arrays(offsets, pa.array(interests)),
                      pa.ListArray.from_arrays(offsets, pa.array(np.ones(len(item_ids), np.float32))),
                      np.zeros((num_interests, CENTROID_DIM), np.float32),
                      {"kind": "random hard assignment (benchmark)", "num_interests": num_interests, "seed": seed})


def ensure_vocabulary(dataset: Path, num_interests: int) -> Path:
    """The cached random vocabulary over ``dataset``'s items (saved in Vocabulary's format)."""
    path = dataset / "bench-vocabularies" / f"random-d{num_interests}-s{SEED}"
    if not (path / "config.json").exists():
        items = pads.dataset(dataset / "items.parquet", format="parquet").to_table(columns=["item_id"])
        random_vocabulary(items["item_id"].combine_chunks(), num_interests).save(path)
    return path


# ----------------------------------------------------------------------------- engines


def build_ray(dataset: Path, vocabulary: Path, out: Path) -> None:
    """The project's Ray Data pipeline, month scale, no raw sequences (Ray must already be up)."""
    from raylurm.boi.pipeline import BoiConfig, build_boi
    from raylurm.boi.vocabulary import Vocabulary

    build_boi(dataset, Vocabulary.load(vocabulary), out, BoiConfig(scales=("month",), sequences=False))


def build_polars(dataset: Path, vocabulary: Path, out: Path) -> None:
    """One lazy polars query, run by the streaming engine straight into Parquet."""
    import polars as pl

    assign = (pl.scan_parquet(vocabulary / "items.parquet").select("item_id", "interest_ids", "interest_weights")
              .explode(["interest_ids", "interest_weights"]).drop_nulls("interest_ids")
              .rename({"interest_ids": "interest", "interest_weights": "weight"}))
    when = pl.from_epoch("timestamp", time_unit="s")
    cells = (pl.scan_parquet(dataset / "events" / "*.parquet").select("user_id", "item_id", "timestamp")
             .join(assign, on="item_id", how="inner")
             .with_columns(month=((when.dt.year() - 1970) * 12 + when.dt.month() - 1).cast(pl.Int32))
             .group_by("user_id", "month", "interest")
             .agg(value=pl.col("weight").cast(pl.Float64).sum().log1p().cast(pl.Float32)))
    periods = cells.group_by("user_id", "month").agg(ids=pl.col("interest").sort(),
                                                     values=pl.col("value").sort_by("interest"))
    users = periods.group_by("user_id").agg(month_periods=pl.col("month").sort(),
                                            month_ids=pl.col("ids").sort_by("month"),
                                            month_values=pl.col("values").sort_by("month"))
    out.mkdir(parents=True, exist_ok=True)
    users.sink_parquet(out / "part-0.parquet", engine="streaming")


_DUCKDB_SQL = """
COPY (
  WITH assign AS (
    SELECT item_id, unnest(interest_ids) AS interest, unnest(interest_weights) AS weight
    FROM read_parquet('{vocabulary}')),
  events AS (
    SELECT user_id, item_id, make_timestamp(timestamp * 1000000) AS ts FROM read_parquet('{events}')),
  cells AS (
    SELECT e.user_id, CAST((year(e.ts) - 1970) * 12 + month(e.ts) - 1 AS INTEGER) AS month, a.interest,
           CAST(ln(1 + sum(CAST(a.weight AS DOUBLE))) AS FLOAT) AS value
    FROM events e JOIN assign a USING (item_id)
    WHERE a.interest IS NOT NULL
    GROUP BY ALL),
  periods AS (
    SELECT user_id, month, list(interest ORDER BY interest) AS ids, list(value ORDER BY interest) AS vals
    FROM cells GROUP BY user_id, month)
  SELECT user_id, list(month ORDER BY month) AS month_periods, list(ids ORDER BY month) AS month_ids,
         list(vals ORDER BY month) AS month_values
  FROM periods GROUP BY user_id
) TO '{out}' (FORMAT parquet)
"""


def build_duckdb(dataset: Path, vocabulary: Path, out: Path) -> None:
    """One DuckDB SQL statement (all cores; ``make_timestamp`` of microseconds is a naive UTC timestamp)."""
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    quoted = {name: str(path).replace("'", "''") for name, path in  # SQL string literals
              (("vocabulary", vocabulary / "items.parquet"), ("events", dataset / "events" / "*.parquet"),
               ("out", out / "part-0.parquet"))}
    sql = _DUCKDB_SQL.format(**quoted)
    with duckdb.connect() as con:
        con.execute(sql)


BUILDERS: dict[str, Callable[[Path, Path, Path], None]] = {
    "ray": build_ray, "polars": build_polars, "duckdb": build_duckdb,
}


# ----------------------------------------------------------------------------- outputs


def read_cells(out: Path) -> pa.Table:
    """An engine's output flattened to (user_id, month, interest, value), sorted by the first three."""
    columns = ["user_id", "month_periods", "month_ids", "month_values"]
    table = pads.dataset(out, format="parquet").to_table(columns=columns)
    periods = pc.list_value_length(table["month_periods"]).to_numpy(zero_copy_only=False)
    ids = pc.list_flatten(table["month_ids"])
    per_period = pc.list_value_length(ids).to_numpy(zero_copy_only=False)
    cells = pa.table({
        "user_id": np.repeat(np.repeat(table["user_id"].to_numpy(), periods), per_period),
        "month": np.repeat(pc.list_flatten(table["month_periods"]).to_numpy(), per_period),
        "interest": pc.list_flatten(ids).to_numpy(),
        "value": pc.list_flatten(pc.list_flatten(table["month_values"])).to_numpy(),
    })
    return cells.sort_by([("user_id", "ascending"), ("month", "ascending"), ("interest", "ascending")])


def compare_cells(reference: pa.Table, other: pa.Table, tolerance: float = TOLERANCE) -> str | None:
    """``None`` if both have the same (user, month, interest) cells and values within ``tolerance``, else why not."""
    if reference.num_rows != other.num_rows:
        return f"{other.num_rows:,} cells instead of {reference.num_rows:,}"
    for column in ("user_id", "month", "interest"):
        if not np.array_equal(reference[column].to_numpy(), other[column].to_numpy()):
            return f"different (user, month, interest) keys (first differing column: {column})"
    diff = np.abs(reference["value"].to_numpy().astype(np.float64) - other["value"].to_numpy())
    worst = float(diff.max()) if len(diff) else 0.0
    return None if worst <= tolerance else f"values differ by up to {worst:.3g} (tolerance {tolerance:g})"


def output_counts(out: Path) -> tuple[int, int]:
    """(users, cells) of an engine's output, from its list lengths."""
    ids = pads.dataset(out, format="parquet").to_table(columns=["month_ids"])["month_ids"]
    cells = pc.sum(pc.list_value_length(pc.list_flatten(ids))).as_py() if len(ids) else 0
    return len(ids), int(cells or 0)


# ----------------------------------------------------------------------------- child process


class _Captured(logging.Handler):
    """Keeps the messages of Ray Data's executor logger (its stats summary and total time)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _start_ray() -> _Captured:
    import ray

    from raylurm.ray_internals import ray_data_executor_logger
    from raylurm.runtime import init_ray

    init_ray()
    ray.data.DataContext.get_current().enable_auto_log_stats = True
    captured = _Captured()
    ray_data_executor_logger().addHandler(captured)
    return captured


def _ray_data_seconds(messages: Sequence[str]) -> float | None:
    found = [float(m) for text in messages for m in re.findall(r"execution finished in ([\d.]+) seconds", text)]
    return sum(found) if found else None


#: ``ray.timeline()`` event names (suffixes) of build_boi's Ray Data stages -> what runs in them: names of
#: Ray Data's private task functions (see raylurm/ray_internals.py, "Ray Data's task names").
RAY_STAGES = {
    "map_operator._map_task": "ListFiles (task)",
    "submit": "read_parquet + EventMapper (actor pool)",
    "shuffle_tasks._shuffle_map_task": "hash shuffle map (partition + compress)",
    "shuffle_tasks._shuffle_reduce_task": "shuffle reduce + build_user_rows + write",
}


def ray_stages(started: float) -> list[dict]:
    """Per stage: tasks, summed busy seconds, first start and last end (s after ``started``, epoch s)."""
    import ray

    stages: dict[str, dict] = {}
    for event in ray.timeline():
        label = next((v for k, v in RAY_STAGES.items() if event.get("name", "").endswith(k)), None)
        if event.get("ph") != "X" or label is None:
            continue
        begin, busy = event["ts"] / 1e6 - started, event["dur"] / 1e6
        st = stages.setdefault(label, {"stage": label, "tasks": 0, "busy_s": 0.0,
                                       "start_s": begin, "end_s": begin + busy})
        st["tasks"], st["busy_s"] = st["tasks"] + 1, st["busy_s"] + busy
        st["start_s"], st["end_s"] = min(st["start_s"], begin), max(st["end_s"], begin + busy)
    return sorted(stages.values(), key=lambda st: st["start_s"])


#: How the benchmark starts one measured build in a fresh process (``python -c CHILD --engine …``): this
#: module is a library, not a command, so it has no ``__main__`` block of its own.
CHILD = "import sys; from raylurm.bench.boi import child_main; sys.exit(child_main())"


def child_main(argv: Sequence[str] | None = None) -> int:
    """Internal entry point of one child process: build once with one engine, write {wall_s, max_rss, …} as JSON."""
    parser = argparse.ArgumentParser(prog="raylurm.bench.boi child", description="internal: one measured build")
    parser.add_argument("--engine", choices=ENGINES, required=True)
    for flag in ("--dataset", "--vocabulary", "--out", "--result"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging(-1)
    captured = _start_ray() if args.engine == "ray" else None  # ray.init is not timed
    started_epoch, started, cpu = time.time(), time.perf_counter(), time.process_time()
    BUILDERS[args.engine](args.dataset, args.vocabulary, args.out)
    result = {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,  # this process, all threads
              "max_rss": common.max_rss_bytes()}
    if captured is not None:  # after the clock stopped
        result["ray_data_s"] = _ray_data_seconds(captured.messages)
        result["ray_stages"] = ray_stages(started_epoch)
        args.result.with_suffix(".ray-data-stats.txt").write_text("\n\n".join(captured.messages))
    args.result.write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- measuring


@dataclasses.dataclass
class Measurement:
    """One engine at one size and D over ``repeat`` runs.

    Time, stages and contention come from the fastest run: on a shared machine other jobs only
    ever add time, so the fastest run is the best estimate of the engine's own cost. Peak memory
    is the largest over all runs.
    """

    engine: str
    events: int
    interests: int
    status: str = "ok"
    runs: list[dict] = dataclasses.field(default_factory=list)  # per run: wall_s, max_rss, other_cpu_s, …
    tree_pss: int = 0  # sampled peak of the summed PSS of the child's process tree
    processes: int = 0
    sampler_cpu_s: float = 0.0  # CPU seconds the memory sampler used, over all runs
    elapsed_s: float = 0.0  # wall seconds of the child processes, over all runs
    users: int | None = None
    cells: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.runs)

    @property
    def best_run(self) -> dict:
        return min(self.runs, key=lambda r: r["wall_s"])

    @property
    def wall_s(self) -> float:
        return self.best_run["wall_s"]

    @property
    def throughput(self) -> float:
        return self.events / self.wall_s

    @property
    def contention(self) -> float:
        """Cores' worth of CPU that other jobs used during the fastest run (0 on an otherwise idle machine)."""
        run = self.best_run
        return run["other_cpu_s"] / run["elapsed_s"] if run["elapsed_s"] else 0.0

    @property
    def child_max_rss(self) -> int:
        """Largest ru_maxrss of the child over the runs (for Ray: the driver process only)."""
        return max(r["max_rss"] for r in self.runs)

    @property
    def peak_memory(self) -> int:
        """The reported peak: ru_maxrss for one-process engines, the process tree's Σ PSS for Ray."""
        return self.tree_pss if self.engine == "ray" else self.child_max_rss

    @property
    def ray_data_s(self) -> float | None:
        return self.best_run.get("ray_data_s") if self.runs else None

    @property
    def ray_stages(self) -> list[dict]:
        return self.best_run.get("ray_stages", []) if self.runs else []


def measure(engines: Sequence[str], dataset: Path, vocabulary: Path, workdir: Path, timeout_s: float,
            repeat: int) -> list[Measurement]:
    """Run each engine ``repeat`` times, round-robin (so drifting background load hits all alike), in fresh
    processes; an engine that fails or times out is not run again. Outputs stay in :func:`out_dir`."""
    events = json.loads((dataset / "manifest.json").read_text())["counts"]["events"]
    interests = json.loads((vocabulary / "config.json").read_text())["num_interests"]
    row = [Measurement(engine, events, interests) for engine in engines]
    for i in range(repeat):
        for m in (m for m in row if m.status == "ok"):
            log.info("%s: %s events, D = %s (run %d/%d)", m.engine, f"{events:,}", f"{interests:,}", i + 1, repeat)
            _record(m, _run_once(m.engine, dataset, vocabulary, workdir, timeout_s))
    for m in row:
        if m.ok:
            m.users, m.cells = output_counts(out_dir(workdir, dataset, vocabulary, m.engine))
            log.info("%s: %.1f s, %.0f events/s, peak %.2f GiB",
                     m.engine, m.wall_s, m.throughput, m.peak_memory / common.GIB)
    return row


def _run_once(engine: str, dataset: Path, vocabulary: Path, workdir: Path, timeout_s: float) -> common.ChildRun:
    out = out_dir(workdir, dataset, vocabulary, engine)
    shutil.rmtree(out, ignore_errors=True)
    result = workdir / "runs" / f"{out.name}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    argv = ["-c", CHILD, "--engine", engine, "--dataset", str(dataset),
            "--vocabulary", str(vocabulary), "--out", str(out), "--result", str(result)]
    run = common.run_child(argv, result, timeout_s)
    if run.status != "ok":
        tail = f":\n{run.stderr_tail}" if run.stderr_tail else ""
        log.warning("%s %s after %.0f s%s", engine, run.status, run.elapsed_s, tail)
    return run


def _record(m: Measurement, run: common.ChildRun) -> None:
    m.status = run.status
    m.tree_pss, m.processes = max(m.tree_pss, run.memory.peak_pss), max(m.processes, run.memory.peak_processes)
    m.sampler_cpu_s, m.elapsed_s = m.sampler_cpu_s + run.memory.sampler_cpu_s, m.elapsed_s + run.elapsed_s
    if run.status == "ok":
        m.runs.append({**run.result, "other_cpu_s": run.memory.other_cpu_s, "elapsed_s": run.elapsed_s})


def out_dir(workdir: Path, dataset: Path, vocabulary: Path, engine: str) -> Path:
    return workdir / "out" / f"{dataset.name}-{vocabulary.name}-{engine}"


class EnginesDisagree(ValueError):
    """The engines computed different BoI cells: their timings would compare different work."""


def verify(measurements: Sequence[Measurement], outputs: dict[str, Path]) -> str:
    """Compare every successful engine's cells with the first's; raise :class:`EnginesDisagree` on a mismatch."""
    ok = [m.engine for m in measurements if m.ok]
    if len(ok) < 2:
        return f"not verified at {measurements[0].events:,} events: only {ok or 'no engine'} finished"
    reference = read_cells(outputs[ok[0]])
    for engine in ok[1:]:
        problem = compare_cells(reference, read_cells(outputs[engine]))
        if problem:
            raise EnginesDisagree(f"{engine} and {ok[0]} disagree at {measurements[0].events:,} events: {problem}")
    return (f"{', '.join(ok)} produced identical (user, month, interest) sets ({reference.num_rows:,} cells) "
            f"with values within {TOLERANCE:g} at {measurements[0].events:,} events")


# ----------------------------------------------------------------------------- the benchmark


@dataclasses.dataclass
class Results:
    sizes: list[list[Measurement]]
    memory_check: list[Measurement]
    verification: list[str]  # one line per size
    datasets: list[dict]
    timeout_s: float


def run_benchmark(args: argparse.Namespace) -> Results:
    workdir = Path(args.workdir)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its import chatter is not about the benchmark
    results = Results([], [], [], [], args.timeout)
    for k, events in enumerate(sorted(args.events)):
        dataset = ensure_dataset(workdir, events, 2 * args.interests)
        vocabulary = ensure_vocabulary(dataset, args.interests)
        results.datasets.append(json.loads((dataset / "manifest.json").read_text()))
        row = measure(args.engines, dataset, vocabulary, workdir, args.timeout, args.repeat)
        outputs = {e: out_dir(workdir, dataset, vocabulary, e) for e in args.engines}
        results.verification.append(verify(row, outputs))  # raises before anything is reported
        log.info("%s", results.verification[-1])
        if k == 0:
            results.memory_check = _memory_check(args, workdir, dataset, row)
        results.sizes.append(row)
        for path in outputs.values():
            shutil.rmtree(path, ignore_errors=True)
    return results


def _memory_check(args: argparse.Namespace, workdir: Path, dataset: Path, row: list[Measurement]) -> list[Measurement]:
    """Ray at the smallest size with D = ``--memory-check-interests`` besides the main D."""
    ray_run = next((m for m in row if m.engine == "ray"), None)
    if ray_run is None or not args.memory_check_interests or args.memory_check_interests == args.interests:
        return []
    vocabulary = ensure_vocabulary(dataset, args.memory_check_interests)
    [small] = measure(["ray"], dataset, vocabulary, workdir, args.timeout, args.repeat)
    shutil.rmtree(out_dir(workdir, dataset, vocabulary, "ray"), ignore_errors=True)
    return sorted([small, ray_run], key=lambda m: m.interests)


# ----------------------------------------------------------------------------- the report


def _gib(n: int) -> str:
    return f"{n / common.GIB:.2f}"


def _best_single(row: Sequence[Measurement]) -> Measurement | None:
    done = [m for m in row if m.ok and m.engine in SINGLE_PROCESS]
    return min(done, key=lambda m: m.wall_s) if done else None


def table(results: Results) -> str:
    headers = ["events", "engine", "D", "wall (s)", "events/s", "peak memory (GiB)", "Σ PSS sampled (GiB)",
               "users", "cells", "throughput vs best 1-process", "other jobs (cores)"]
    rows = []
    for row in results.sizes:
        best = _best_single(row)
        for m in row:
            rows.append(_table_row(m, best))
    return common.markdown_table(headers, rows)


def _table_row(m: Measurement, best: Measurement | None) -> list[str]:
    if not m.ok:
        return [f"{m.events:,}", m.engine, f"{m.interests:,}", m.status, "–", "–", _gib(m.tree_pss)] + ["–"] * 4
    ratio = f"{m.throughput / best.throughput:.2f}×" if best else "–"
    return [f"{m.events:,}", m.engine, f"{m.interests:,}", f"{m.wall_s:.1f}", f"{m.throughput:,.0f}",
            _gib(m.peak_memory), _gib(m.tree_pss), f"{m.users:,}", f"{m.cells:,}", ratio, f"{m.contention:.1f}"]


def ratio_lines(results: Results) -> list[str]:
    lines = []
    for row in results.sizes:
        best = _best_single(row)
        for m in row:
            if m.engine == "ray" and best is not None:
                if m.ok:
                    lines.append(f"- {m.events:,} events: Ray / {best.engine} throughput "
                                 f"{m.throughput / best.throughput:.3f}× ({m.wall_s / best.wall_s:.1f}× the time), "
                                 f"peak memory {m.peak_memory / best.peak_memory:.1f}×.")
                else:
                    lines.append(f"- {m.events:,} events: Ray {m.status} (limit {results.timeout_s:.0f} s per run); "
                                 f"{best.engine} took {best.wall_s:.1f} s.")
    for a, b in zip(results.memory_check, results.memory_check[1:]):
        if a.ok and b.ok:
            lines.append(f"- Peak memory vs D (Ray, {a.events:,} events): D = {a.interests:,} → "
                         f"{_gib(a.peak_memory)} GiB, D = {b.interests:,} → {_gib(b.peak_memory)} GiB "
                         f"(wall {a.wall_s:.1f} s vs {b.wall_s:.1f} s, other jobs {a.contention:.1f} vs "
                         f"{b.contention:.1f} cores).")
    return lines


def stage_table(results: Results) -> str:
    """Ray's Data stages per size, from ``ray.timeline()`` of the fastest run: tasks, busy time, span."""
    rows = []
    for m in (m for row in results.sizes for m in row if m.engine == "ray" and m.ok):
        for st in m.ray_stages:
            rows.append([f"{m.events:,}", st["stage"], st["tasks"], f"{st['busy_s']:.1f}",
                         f"{st['start_s']:.1f} – {st['end_s']:.1f}"])
        rows.append([f"{m.events:,}", "*whole build (wall)*", "", "", f"0 – {m.wall_s:.1f}"])
    headers = ["events", "Ray stage", "tasks", "busy (s)", "span (s after start)"]
    return common.markdown_table(headers, rows) if rows else ""


def _covered(stages: Sequence[dict], wall: float) -> float:
    """Seconds of [0, wall] during which at least one stage task ran."""
    covered, reach = 0.0, 0.0
    for st in sorted(stages, key=lambda st: st["start_s"]):
        begin, end = max(st["start_s"], reach), min(st["end_s"], wall)
        covered, reach = covered + max(0.0, end - begin), max(reach, end)
    return covered


QUIET = 0.3  # "other jobs" (cores) below which a run counts as unperturbed


def interpretation(results: Results) -> list[str]:
    """Sentences computed from the figures: Ray's fixed vs per-event cost, and what more cores would buy."""
    rays = [m for row in results.sizes for m in row if m.engine == "ray" and m.ok]
    best = [b for b in (_best_single(row) for row in results.sizes) if b is not None]
    out = []
    if rays and rays[-1].ray_stages:
        ref = next((b for b in best if b.events == rays[-1].events), None)
        out += _stage_sentences(rays[-1], ref, os.cpu_count() or 1)
    if len(rays) >= 2 and rays[-1].events > rays[0].events:
        out.append(_fit_sentence(rays[0], rays[-1]))
    out.append("More nodes divide the per-event work (read + EventMapper, the hash shuffle by user, `build_user_rows` "
               "and the Parquet write are all parallel by file or user partition) but not the start-up, and they add "
               "network transfer to the shuffle; on one small machine Ray only pays its overhead, its case is data "
               "that outgrows one machine's memory or a pipeline that already runs on a cluster.")
    return out


def _stage_sentences(m: Measurement, ref: Measurement | None, cores: int) -> list[str]:
    """Fixed part (no per-event stage running) vs per-event work, from the stages of Ray's largest run."""
    work = [st for st in m.ray_stages if st["stage"] != RAY_STAGES["map_operator._map_task"]]
    busy = sum(st["busy_s"] for st in work)
    fixed = m.wall_s - _covered(work, m.wall_s)
    top = max(work, key=lambda st: st["busy_s"]) if work else None
    out = [f"At {m.events:,} events, {fixed:.1f} s of Ray's {m.wall_s:.1f} s passed with no per-event stage running "
           "(Ray Data start-up, the ListFiles task, worker processes starting, and hand-over between the stages, which "
           f"run one after another rather than overlapped); the per-event stages' tasks were busy {busy:.1f} s "
           f"({busy / m.events * 1e6:.2f} µs per event, {100 * busy / (m.wall_s * cores):.0f}% of the {cores} cores' "
           "time)" + (f", most of it in {top['stage']} ({top['busy_s']:.1f} s)." if top else ".")]
    if ref is not None and ref.best_run.get("cpu_s"):
        per_event = ref.best_run["cpu_s"] / ref.events * 1e6
        ratio = busy / ref.best_run["cpu_s"]
        out.append(f"{ref.engine} used {per_event:.2f} µs of CPU per event (all its threads), so Ray does about "
                   f"{ratio:.1f}× {ref.engine}'s work per event: with perfect scaling it needs {ratio:.1f}× the "
                   f"cores {ref.engine} has to match its throughput, plus the fixed part.")
    return out


def _fit_sentence(small: Measurement, large: Measurement) -> str:
    """Fixed vs per-event cost from a straight line through Ray's smallest and largest size, if both were quiet."""
    if max(small.contention, large.contention) > QUIET:
        return (f"(A straight line through Ray's two sizes is not drawn: other jobs used {small.contention:.1f} and "
                f"{large.contention:.1f} cores during them, which would bias it.)")
    per_event = (large.wall_s - small.wall_s) / (large.events - small.events)
    if per_event <= 0:
        return f"Ray took no longer at {large.events:,} than at {small.events:,} events: its time here is start-up."
    fixed = small.wall_s - per_event * small.events
    return (f"A straight line through Ray's two sizes gives about {fixed:.1f} s of fixed cost plus "
            f"{per_event * 1e6:.2f} µs per event of wall time (a marginal {1 / per_event:,.0f} events/s).")


def render_section(results: Results, command: str, machine: dict, package_versions: dict) -> str:
    data = results.datasets[0]["config"]
    parts = [
        f"Command: `{command}`",
        f"Machine: {machine['cpu']}, {machine['cores']} logical cores, {machine['ram_gib']:.1f} GiB RAM, Python "
        f"{machine['python']}. A shared machine: the 1-minute load average was {machine['load_average']:.1f} when the "
        "run started, and the *other jobs* column gives the CPU that processes outside the benchmark used while each "
        f"engine ran, in cores on average (machine busy time minus the measured process tree's and the sampler's); "
        f"anything well above 0 on {machine['cores']} cores means that row's time is inflated by competition.",
        f"Date: {machine['date_utc']}. Versions: " + ", ".join(f"{k} {v}" for k, v in package_versions.items()) + ".",
        "Data: synthetic events from `raylurm.data.synth` (not uniformly random events as in RAY_NOTES: users have "
        f"heavy-tailed activity, Zipf item popularity and drifting topics), {data['years']} years so months vary, "
        f"items = 2 × D, seed {data['seed']}: " + "; ".join(
            f"{d['counts']['events']:,} events, {d['counts']['users']:,} users" for d in results.datasets) + ". "
        "Vocabulary: a seeded random hard assignment item → interest (no k-means), zero centroids of dimension "
        f"{CENTROID_DIM}.",
        "Work: join events to interests, count per user × UTC month × interest, value = log1p(count), nested "
        "per-user lists, written to Parquet; Ray runs `build_boi` with "
        "`BoiConfig(scales=(\"month\",), sequences=False)`, polars one lazy query on its streaming engine, DuckDB one "
        "SQL statement.",
        "Equality (checked before anything is reported; a mismatch aborts the benchmark): "
        + "; ".join(results.verification) + ".",
        "Measurement: each engine in its own fresh process; wall time end to end including reading and writing Parquet "
        "(for Ray excluding `ray.init`, including everything else); the fastest of the repeats, which run "
        "round-robin (other jobs only add time). Peak memory, the largest over the repeats: "
        "`ru_maxrss` of the process for polars and DuckDB; for Ray the peak, sampled every 0.2 s, of the summed PSS "
        "(proportional set size) of the driver and every process it started (GCS, raylet, workers), which counts the "
        "shared-memory object store and shared libraries once. The Σ PSS column is that sample for every engine. "
        + _sampler_cost(results),
        table(results),
        "Ratios (against the faster single-process engine of the same run):\n\n" + "\n".join(ratio_lines(results)),
        _stage_part(results),
        "Interpretation: " + " ".join(interpretation(results)),
    ]
    return "\n\n".join(part for part in parts if part)


def _sampler_cost(results: Results) -> str:
    rays = [m for row in results.sizes for m in row if m.engine == "ray" and m.elapsed_s > 0]
    if not rays:
        return ""
    cpu, wall = sum(m.sampler_cpu_s for m in rays), sum(m.elapsed_s for m in rays)
    return (f"Sampling Ray's process tree cost {cpu:.1f} CPU-s over {wall:.0f} s of Ray runs "
            f"({100 * cpu / wall:.0f}% of one core, taken from the same machine).")


def _stage_part(results: Results) -> str:
    stages = stage_table(results)
    return ("Where Ray's time goes (`ray.timeline()` of the fastest run; busy = summed task time, span = first "
            "start to last end, in seconds after `build_boi` was called):\n\n" + stages) if stages else ""


def command_line(argv: Sequence[str]) -> str:
    return "python -m raylurm.bench " + " ".join(argv)


# ----------------------------------------------------------------------------- CLI


def parse_sizes(text: str) -> list[int]:
    """``"1e6,1e7"`` -> [1000000, 10000000]."""
    try:
        sizes = [int(float(part)) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated event counts like 1e6,1e7: {err}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("event counts must be positive")
    return sizes


def parse_engines(text: str) -> list[str]:
    engines = [e.strip() for e in text.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if not engines or unknown:
        raise argparse.ArgumentTypeError(f"engines must be among {', '.join(ENGINES)}; got {text!r}")
    return engines


def default_workdir() -> Path:
    home = os.environ.get("RAYLURM_HOME")
    return Path(home) / "bench" if home else Path(tempfile.gettempdir()) / f"raylurm-bench-{os.getuid()}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--events", type=parse_sizes, default=parse_sizes("1e6,1e7"),
                        help="comma-separated event counts (approximate: synth draws them); default 1e6,1e7")
    parser.add_argument("--interests", type=lambda s: int(float(s)), default=100_000,
                        help="D, the number of interests (default 1e5); the datasets have 2 x D items")
    parser.add_argument("--engines", type=parse_engines, default=list(ENGINES),
                        help=f"comma-separated subset of {','.join(ENGINES)} (default: all)")
    parser.add_argument("--memory-check-interests", type=lambda s: int(float(s)), default=1000,
                        help="also run Ray at the smallest size with this D to show peak memory vs D "
                             "(0: skip; default 1e3)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per engine and size, round-robin; the fastest is reported (default 1)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per engine run (default 900)")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"),
                        help="Markdown file whose BoI section is replaced or appended (default BENCHMARKS.md)")
    parser.add_argument("--no-report", action="store_true", help="print the table only; leave --out untouched")
    parser.add_argument("--workdir", type=Path, default=default_workdir(),
                        help="cached datasets and outputs (default $RAYLURM_HOME/bench, else a temp dir)")


def main(args: argparse.Namespace) -> int:
    """Run the benchmark; ``args.argv`` (set by ``python -m raylurm.bench``) is the command recorded in the report."""
    if args.repeat < 1 or args.timeout <= 0:
        raise ValueError("--repeat must be >= 1 and --timeout > 0")
    machine = common.machine_info()
    results = run_benchmark(args)
    print(table(results))
    print("\n".join(ratio_lines(results)))
    if not args.no_report:
        package_versions = common.versions(["ray", "polars", "duckdb", "pyarrow"])
        body = render_section(results, command_line(getattr(args, "argv", ["boi"])), machine, package_versions)
        common.update_markdown(args.out, SECTION, body, PREAMBLE)
    return 0
