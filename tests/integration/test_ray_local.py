"""An embedded Ray started by raylurm stays on this machine and out of the home directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

pytestmark = pytest.mark.integration

_PROBE = textwrap.dedent(
    """
    import json, os, ray
    from raylurm.ray_internals import session_dir
    from raylurm.runtime import init_ray
    init_ray(num_cpus=1)

    @ray.remote
    def worker_env():
        keys = ["RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED", "HTTP_PROXY", "NO_PROXY", "RAY_TMPDIR"]
        return {k: os.environ.get(k) for k in keys}

    info = {"worker": ray.get(worker_env.remote()), "session_dir": session_dir()}
    ray.shutdown()
    print(json.dumps(info))
    """
)


def test_embedded_ray_uses_the_local_environment(tmp_path):
    short = tempfile.mkdtemp(prefix="rl", dir="/tmp")  # Unix socket paths must stay < 108 bytes
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "HTTP", "http", "NO_PROXY", "no_proxy"))}
    env.update(HOME=str(home), TMPDIR=short)
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    worker = info["worker"]
    assert worker["RAY_AUTH_MODE"] == "disabled" and worker["RAY_USAGE_STATS_ENABLED"] == "0"
    assert worker["HTTP_PROXY"] == "http://127.0.0.1:9" and "127.0.0.1" in worker["NO_PROXY"]
    assert worker["RAY_TMPDIR"].startswith(short) and info["session_dir"].startswith(short)
    assert not (home / ".ray").exists(), "no token file in the home directory"
    shutil.rmtree(short, ignore_errors=True)


def test_shared_runtime_runs_tasks_on_two_cpus(ray_runtime):
    assert ray_runtime.cluster_resources()["CPU"] == 2

    @ray_runtime.remote
    def square(x):
        return x * x

    assert ray_runtime.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
