"""Shared fixtures. Unit tests need no Ray runtime; integration tests share one per session.

The environment of ../shared/RAY_NOTES.md is applied before anything starts Ray, so nothing
leaves this machine and nothing is written to the home directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from raylurm.runtime import apply_local_ray_env

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="raylurm-tests-"))
os.environ.setdefault("RAYLURM_HOME", str(_SESSION_TMP / "home"))
os.environ.setdefault("MPLCONFIGDIR", str(_SESSION_TMP / "matplotlib"))  # font cache off the home directory
_OWN_RAY_TMP = "RAY_TMPDIR" not in os.environ
os.environ.setdefault("RAY_TMPDIR", str(Path(tempfile.gettempdir()) / f"rl-{os.getpid()}"))
apply_local_ray_env()


@pytest.fixture(scope="session")
def ml1m_dir() -> Path:
    """MovieLens-1M prepared once per test session (about a second)."""
    from raylurm.data import datasets

    return datasets.resolve("ml-1m")


@pytest.fixture(scope="session")
def ray_runtime():
    """One embedded 2-CPU Ray for every integration test of the session."""
    import ray

    from raylurm.runtime import init_ray

    init_ray(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def pytest_sessionfinish(session, exitstatus):
    """A passing session leaves nothing behind (a failing one keeps its files for a look)."""
    if exitstatus == 0:
        shutil.rmtree(_SESSION_TMP, ignore_errors=True)
        if _OWN_RAY_TMP:
            shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
