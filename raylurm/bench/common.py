"""Measurement helpers shared by the benchmarks: child processes, memory sampling, reports.

Every measured run happens in a fresh child process, so its peak memory is its own. While the
child runs, the parent samples its whole process tree (the child and every descendant: for Ray
that is the driver, GCS, raylet, dashboard agent and all workers) every ``interval`` seconds.
The memory figure is the sum of the processes' **PSS** (proportional set size, Linux
``smaps_rollup``): a page shared by k processes counts 1/k in each, so shared libraries and the
shared-memory object store (``/dev/shm`` pages mapped by the raylet and the workers) are counted
once, not once per process as a plain RSS sum would. The plain RSS sum is recorded as well (an
upper bound). Sampling can miss spikes shorter than the interval; the child's own
``ru_maxrss`` (exact, kernel-tracked, but one process only) is reported beside it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import psutil

from raylurm.data.io import atomic_file

log = logging.getLogger(__name__)

GIB = float(1 << 30)


@dataclasses.dataclass
class TreeMemory:
    """What the sampler saw of a process tree: memory peaks (bytes) and CPU use (seconds)."""

    peak_pss: int = 0
    peak_rss: int = 0
    peak_processes: int = 0
    samples: int = 0
    tree_cpu_s: float = 0.0  # CPU time of the tree's processes (from the last sample of each process)
    machine_cpu_s: float = 0.0  # busy CPU time of the whole machine over the same period
    sampler_cpu_s: float = 0.0  # CPU time the sampling itself used (it shares the machine with the child)

    @property
    def other_cpu_s(self) -> float:
        """CPU time of everything else on the machine: other jobs competing with the measured run."""
        return max(0.0, self.machine_cpu_s - self.tree_cpu_s - self.sampler_cpu_s)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def sample_tree(pid: int, cpu: dict[tuple[int, float], float] | None = None) -> tuple[int, int, int]:
    """(sum of PSS, sum of RSS, process count) of ``pid`` and all its descendants, now.

    If ``cpu`` is given, each process's CPU seconds so far are stored in it, keyed by (pid, start time).
    """
    pss = rss = count = 0
    for proc in _tree(pid):
        try:
            with proc.oneshot():
                info = proc.memory_full_info()
                if cpu is not None:
                    times = proc.cpu_times()
                    cpu[(proc.pid, proc.create_time())] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        pss, rss, count = pss + getattr(info, "pss", info.rss), rss + info.rss, count + 1
    return pss, rss, count


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)  # guest is in user


class TreeSampler:
    """Background thread that records a process tree's peak memory and CPU use until stopped."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval, self.memory = pid, interval, TreeMemory()
        self._cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def __enter__(self) -> "TreeSampler":
        self._busy_at_start = _machine_busy_s()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        m = self.memory
        m.machine_cpu_s, m.tree_cpu_s = _machine_busy_s() - self._busy_at_start, sum(self._cpu.values())

    def _loop(self) -> None:
        while not self._stop.is_set():
            pss, rss, count = sample_tree(self.pid, self._cpu)
            m = self.memory
            m.peak_pss, m.peak_rss = max(m.peak_pss, pss), max(m.peak_rss, rss)
            m.peak_processes, m.samples = max(m.peak_processes, count), m.samples + 1
            m.sampler_cpu_s = time.thread_time()
            self._stop.wait(self.interval)


@dataclasses.dataclass
class ChildRun:
    """Outcome of one child process: ``status`` is "ok", "timeout" or "failed (exit N)"."""

    status: str
    result: dict
    memory: TreeMemory
    elapsed_s: float
    stderr_tail: str = ""


def run_child(argv: Sequence[str], result_path: Path, timeout_s: float, interval: float = 0.2) -> ChildRun:
    """Run ``python argv…`` in a fresh process, sample its tree, read the JSON it wrote to ``result_path``."""
    result_path.unlink(missing_ok=True)
    stderr_path = result_path.with_suffix(".stderr")
    started = time.perf_counter()
    with open(stderr_path, "wb") as stderr:
        child = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=stderr)
        with TreeSampler(child.pid, interval) as sampler:
            status = _wait(child, timeout_s)
    elapsed = time.perf_counter() - started
    result = json.loads(result_path.read_text()) if status == "ok" and result_path.exists() else {}
    tail = "" if status == "ok" else stderr_path.read_text(errors="replace")[-2000:]
    return ChildRun(status, result, sampler.memory, elapsed, tail)


def _wait(child: subprocess.Popen, timeout_s: float) -> str:
    try:
        code = child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        terminate_tree(child.pid)
        child.wait()
        return "timeout"
    return "ok" if code == 0 else f"failed (exit {code})"


def terminate_tree(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM ``pid`` and every descendant (by id), then SIGKILL whatever is left after ``grace_s``."""
    procs = _tree(pid)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def max_rss_bytes() -> int:
    """This process's peak RSS (``ru_maxrss``; KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


def machine_info() -> dict:
    """CPU model, logical cores, RAM, the load average when the benchmark started, and the UTC date."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "ram_gib": psutil.virtual_memory().total / GIB,
        "load_average": os.getloadavg()[0],
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
    }


def versions(packages: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(document: str, title: str, body: str) -> str:
    """``document`` with the ``## title`` section (up to the next ``## `` heading) replaced, or appended."""
    section = f"{title}\n\n{body.strip()}\n"
    lines = document.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == title), None)
    if start is None:
        return document.rstrip("\n") + "\n\n" + section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + rest if rest else "")


def update_markdown(path: Path, title: str, body: str, preamble: str) -> None:
    """Replace or append one section of ``path`` atomically (``preamble`` starts a new file)."""
    document = path.read_text() if path.exists() else preamble
    with atomic_file(path) as tmp:
        tmp.write_text(replace_section(document, title, body))
    log.info("updated section %r of %s", title, path)


PREAMBLE = "# Benchmarks\n\nMeasured figures for raylurm against the baselines a user would otherwise pick.\n"


def header(args, machine: dict, packages: Sequence[str]) -> list[str]:
    """The command, machine, date and versions lines every benchmark section starts with."""
    return [
        f"Command: `python -m raylurm.bench {' '.join(getattr(args, 'argv', [args.command]))}`  ",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']:.0f} GiB RAM, load average "
        f"{machine['load_average']:.1f} at start, Python {machine['python']}; date {machine['date_utc']}  ",
        f"Versions: {versions(list(packages))}",
    ]


#: Other processes' average CPU use (in cores) above which a run's figures are not published: on a 2-core
#: machine a quarter of a core taken by another job already moves throughput by ~10 %.
BUSY_CORES = 0.25


class MachineWatch:
    """The CPU other processes use while a benchmark runs: machine busy time minus this command's process tree
    (Ray's processes included: a local cluster's raylet and workers descend from the driver)."""

    def __init__(self, interval: float = 1.0):
        self._sampler = TreeSampler(os.getpid(), interval)
        self._started = time.perf_counter()
        self.other_cores: float | None = None

    def start(self) -> "MachineWatch":
        self._started = time.perf_counter()
        self._sampler.__enter__()
        return self

    def stop(self) -> float:
        """-> other processes' average CPU use in cores since :meth:`start` (idempotent)."""
        if self.other_cores is None:
            self._sampler.__exit__(None, None, None)
            elapsed = time.perf_counter() - self._started
            self.other_cores = self._sampler.memory.other_cpu_s / elapsed if elapsed > 0 else 0.0
        return self.other_cores


def add_report_arguments(parser) -> None:
    """``--no-report`` and ``--allow-busy``, for benchmarks that publish through :func:`publish`."""
    parser.add_argument("--no-report", action="store_true", help="print only; do not touch the report file")
    parser.add_argument("--allow-busy", action="store_true",
                        help=f"publish even if other processes used more than {BUSY_CORES} cores on average during the "
                             "run (the section then says so); by default such a run is printed, not published")


def publish(args, section: str, body: str) -> None:
    """Print the section and, unless ``--no-report`` or a busy machine, replace it in ``--out``.

    The section gets a line with the CPU other processes used during the run (``args.watch``, started by
    ``python -m raylurm.bench``); above :data:`BUSY_CORES` the run is flagged and not published unless
    ``--allow-busy``."""
    watch = getattr(args, "watch", None)
    busy = False
    if watch is not None:
        other = watch.stop()
        busy = other > BUSY_CORES
        body = body.rstrip("\n") + "\n\n" + (
            f"Other processes used {other:.2f} cores on average during the run (machine busy CPU time minus this "
            "command's process tree" + (f"): **a busy machine — these figures are not comparable to a quiet run's**.\n"
                                        if busy else ").\n"))
    print(body)
    if args.no_report:
        return
    if busy and not getattr(args, "allow_busy", False):
        log.warning("not published to %s: other processes used %.2f cores on average during the run (> %.2f); rerun on a "
                    "quiet machine, or pass --allow-busy", args.out, watch.other_cores, BUSY_CORES)
        return
    update_markdown(args.out, section, body, PREAMBLE)
