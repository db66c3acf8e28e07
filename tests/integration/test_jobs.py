"""`ray job submit -- python -m raylurm.pretrain` against a head this test starts (and stops) on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def head():
    """A `ray start --head --block` process; terminating it stops exactly the processes it started."""
    tmp = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    # As a user with the project's venv activated: `python` in a job's entrypoint is the venv's.
    env = {**os.environ, "RAY_TMPDIR": tmp, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    gcs, dashboard = free_port(), free_port()
    # Every agent port explicit and free: the defaults (e.g. the agent's 52365) collide with any other
    # Ray on this machine, such as the test session's own runtime, and the job agent then never registers.
    agents = [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                      "metrics-export-port", "runtime-env-agent-port", "ray-client-server-port")]
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--num-cpus=2", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
         f"--port={gcs}", f"--dashboard-port={dashboard}", "--include-dashboard=true", f"--temp-dir={tmp}", *agents],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    address = f"http://127.0.0.1:{dashboard}"
    _wait_for_jobs_api(address, proc)
    yield address, env
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def _wait_for_jobs_api(address: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited: {proc.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError("the Ray head's jobs API did not come up")


def _submit(address: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the head's job agent has not registered yet (it lags the jobs API)."""
    cmd = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--", "python", "-m", "raylurm.pretrain", *args]
    deadline = time.monotonic() + 180
    while True:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        if "No available agent" not in proc.stdout + proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(2)


def test_job_submit_trains_and_streams_logs(head, boi_dir, tmp_path):
    address, env = head
    proc = _submit(address, env, "--method", "lurm", "--data", str(boi_dir), "--epochs", "1", "--batch-size", "8",
                   "--max-steps-per-epoch", "2", "--storage-path", str(tmp_path), "--name", "job", "--set", "num_anchors=2")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout.lower()
    assert '"step": 2' in proc.stdout, "the job's own output is streamed back to the submitter"
    assert list((tmp_path / "job").glob("checkpoint_*")), "a checkpoint was written by the job"


def test_failing_job_propagates_its_error(head, boi_dir):
    address, env = head
    proc = _submit(address, env, "--method", "lurm", "--data", str(boi_dir), "--set", "no_such_option=1")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "no_such_option" in output and "failed" in output.lower()
