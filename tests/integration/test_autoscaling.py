"""Ray's real autoscaler, with the fake multi-node provider, on node types derived from cluster.yaml.

The test starts ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=<file>`` on 127.0.0.1 with a
config written by :func:`tests.integration.autoscale.fake_cluster_config` (cluster.yaml's head with no
CPU, ``cpu_worker`` and ``gpu_worker`` scaled down to 1 CPU, max 2 each, the GPU a logical resource, a
15 s idle timeout). Two drivers run in their own processes (``tests/integration/autoscale.py``): a
watcher records the alive nodes and their types over time, and a job pretrains LURM for one epoch with 2
workers — CPUs the head lacks — then runs a task asking for a GPU, and exits. The test asserts on the
watcher's timeline: the autoscaler launched ``cpu_worker`` nodes for the CPU demand (both DDP ranks ran
on them) and a ``gpu_worker`` for the GPU task (which ran there), never more nodes of a type than its
``max_workers``, and every worker was removed once idle, not before the idle timeout.

Only processes of this head are stopped at the end (``ray stop`` would stop every Ray of the user): they
are found by the unique ``RAY_TMPDIR`` they all inherit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.integration.autoscale import write_fake_cluster_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IDLE_TIMEOUT_MIN = 0.25  # 15 s: long enough to bridge the pauses of one job, short enough for CI
WORK_TIMEOUT_S = 300  # the job: node launches + one small epoch (~1 min here)
WATCH_TIMEOUT_S = 150  # after the job: idle timeout + removals
SLACK_S = 3.0


def _our_pids(ray_tmpdir: str) -> list[int]:
    """Processes of this user whose environment has ``RAY_TMPDIR=ray_tmpdir`` (the head, its nodes, their workers)."""
    marker = f"RAY_TMPDIR={ray_tmpdir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:  # gone, or another user's
            pass
    return pids


def _stop(ray_tmpdir: str, grace_s: float = 3.0) -> list[int]:
    """SIGTERM every process of this head, SIGKILL those left after ``grace_s``; return any still alive then."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        pids = _our_pids(ray_tmpdir)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while _our_pids(ray_tmpdir) and time.monotonic() < deadline:
            time.sleep(0.2)
    return _our_pids(ray_tmpdir)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} missing)"


def _autoscaler_log(ray_tmpdir: str) -> str:
    logs = Path(ray_tmpdir) / "ray" / "session_latest" / "logs"
    events = [line for line in _tail(logs / "monitor.log", 200_000).splitlines() if ":event_summary:" in line]
    return (f"--- autoscaler events ({logs / 'monitor.log'})\n" + "\n".join(events[-40:])
            + f"\n--- monitor.log\n{_tail(logs / 'monitor.log', 2500)}\n--- monitor.err\n{_tail(logs / 'monitor.err', 1000)}")


@pytest.fixture
def autoscaling_head(tmp_path):
    """A head (no CPU) with the autoscaler on a config derived from cluster.yaml: {address, ray_tmpdir, env, passed}."""
    ray_tmpdir = tempfile.mkdtemp(prefix="as", dir="/tmp")  # short: Unix socket paths are limited
    port = free_port()
    address = f"127.0.0.1:{port}"
    config = write_fake_cluster_config(REPO / "cluster.yaml", tmp_path / "fake-cluster.yaml", address, IDLE_TIMEOUT_MIN)
    env = {**os.environ, "RAY_TMPDIR": ray_tmpdir, "RAY_FAKE_CLUSTER": "1",
           "RAY_ADDRESS": address,  # what Ray's own helpers (e.g. Train's PlacementGroupCleaner) join: this head
           "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the autoscaler looks every second (default 5)
           "AUTOSCALER_METRIC_PORT": str(free_port()),  # not the fixed 44217 another Ray head may hold
           # the fake provider starts nodes without an IP: make Ray pick loopback, not this machine's address
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           # Train's placement group waits for nodes that are still being launched
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300"}
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}", "--num-cpus=0",
               "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--include-dashboard=false",
               f"--ray-client-server-port={free_port()}", "--object-store-memory=300000000",
               f"--autoscaling-config={config}"]
    head = {"address": address, "ray_tmpdir": ray_tmpdir, "env": env, "passed": False}
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"ray start failed:\n{(proc.stdout + proc.stderr)[-3000:]}"
        yield head
    finally:
        left = _stop(ray_tmpdir)
        assert not left, f"processes of the test's head survived SIGKILL: {left}"
        if head["passed"]:  # a failure keeps Ray's logs (the report names the directory)
            shutil.rmtree(ray_tmpdir, ignore_errors=True)


def _driver(mode: str, address: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.integration.autoscale", mode, "--address", address, "--out", str(out), *extra]


def _wait_for(predicate, timeout_s: float, poll_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def test_autoscaler_scales_cluster_yaml_node_types_up_for_work_and_down_when_idle(boi_dir, tmp_path, autoscaling_head):
    address, ray_tmpdir, env = (autoscaling_head[k] for k in ("address", "ray_tmpdir", "env"))
    out = tmp_path / "drivers"
    out.mkdir()
    log = {"watch": open(tmp_path / "watch.log", "w"), "work": open(tmp_path / "work.log", "w")}
    started = time.time()
    watcher = subprocess.Popen(_driver("watch", address, out, "--timeout", str(WORK_TIMEOUT_S + WATCH_TIMEOUT_S)),
                               cwd=REPO, env=env, stdout=log["watch"], stderr=subprocess.STDOUT)
    work_error = None
    try:
        _wait_for(lambda: (out / "timeline.json").exists() or watcher.poll() is not None, 60)
        assert (out / "timeline.json").exists(), "the watcher did not start:\n" + _tail(tmp_path / "watch.log")
        try:
            job = subprocess.run(_driver("work", address, out, "--boi", str(boi_dir)), cwd=REPO, env=env,
                                 stdout=log["work"], stderr=subprocess.STDOUT, timeout=WORK_TIMEOUT_S)
            if job.returncode != 0 or not (out / "work.json").exists():
                work_error = f"the job failed (exit {job.returncode})"
        except subprocess.TimeoutExpired:
            work_error = f"the job took more than {WORK_TIMEOUT_S} s"
        if work_error is None:
            try:
                watcher.wait(timeout=WATCH_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if watcher.poll() is None:
            watcher.terminate()
            watcher.wait(timeout=30)
        for f in log.values():
            f.close()
    elapsed = time.time() - started

    timeline = _read_json(out / "timeline.json") or {"events": [], "outcome": None}
    events, job = timeline["events"], _read_json(out / "work.json") or {}
    marks = {k: v - started for k, v in job.get("marks", {}).items()}

    def report() -> str:
        lines = [f"{e['t'] - started:7.1f} s  " + ", ".join(sorted(e["nodes"].values())) for e in events]
        return (f"\nnode timeline (s since the watcher started, {elapsed:.0f} s in all; watcher: {timeline['outcome']}):\n"
                + "\n".join(lines) + f"\njob marks: { {k: round(v, 1) for k, v in marks.items()} }"
                + f"\n--- job output\n{_tail(tmp_path / 'work.log')}\n--- watcher output\n{_tail(tmp_path / 'watch.log', 1500)}"
                + f"\n{_autoscaler_log(ray_tmpdir)}")

    assert work_error is None, work_error + report()
    types = {n: t for e in events for n, t in e["nodes"].items()}  # every node seen: id -> type
    counts = [{t: list(e["nodes"].values()).count(t) for t in ("head", "cpu_worker", "gpu_worker")} for e in events]
    print(report())

    # the head alone at first, with no CPU; every node the autoscaler launched carries its cluster.yaml type
    assert counts and counts[0] == {"head": 1, "cpu_worker": 0, "gpu_worker": 0} and job["cpus_at_start"] == 0, report()
    assert set(types.values()) <= {"head", "cpu_worker", "gpu_worker"}, report()
    # the pretraining ran on two cpu_worker nodes the autoscaler launched for it (one DDP rank each)
    assert job["error"] is None and job["metrics"]["step"] == 3, report()
    assert len(job["train_nodes"]) == 1, report()  # one worker group: no restart
    (ranks,) = job["train_nodes"]
    assert len(set(ranks)) == 2 and all(types.get(n) == "cpu_worker" for n in ranks), report()
    # the CPU demand was met by cpu_workers (both ranks' nodes are); the GPU task ran on a gpu_worker. A
    # gpu_worker may still appear during the fit: the autoscaler (v1) can count a placement group that was
    # just placed as still pending, and cpu_worker is at max_workers then; such a node gets no work and
    # idles out like the others (in two of eight runs here).
    during_fit = [c for c, e in zip(counts, events) if e["t"] - started <= marks["fit done"]]
    assert max(c["cpu_worker"] for c in during_fit) == 2, report()
    assert types.get(job["gpu_task"]["node"]) == "gpu_worker" and job["gpu_task"]["gpu_ids"], report()
    assert all(c["cpu_worker"] <= 2 and c["gpu_worker"] <= 2 for c in counts), report()  # the config's max_workers
    # once idle, every worker was removed, and not before the idle timeout: the ranks' nodes at least that
    # long after the fit, the GPU task's node after the task (slack: the end of the work is seen by the job
    # a moment after the node's last use)
    assert timeline["outcome"] == "scaled down" and counts[-1] == {"head": 1, "cpu_worker": 0, "gpu_worker": 0}, report()
    idle_s = IDLE_TIMEOUT_MIN * 60
    for node, last_use in [*((n, marks["fit done"]) for n in ranks), (job["gpu_task"]["node"], marks["gpu task done"])]:
        gone = next(e["t"] - started for e in events if node not in e["nodes"] and e["t"] - started > last_use)
        assert gone - last_use >= idle_s - SLACK_S, f"node {node[-5:]} removed {gone - last_use:.1f} s after its work" + report()
    autoscaling_head["passed"] = True
