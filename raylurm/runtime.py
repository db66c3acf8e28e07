"""Starting or joining Ray so that a local run stays on this machine.

When no cluster address is given (``--address`` / ``RAY_ADDRESS``), raylurm starts an embedded
local Ray with the environment below (see ../shared/RAY_NOTES.md): no usage reporting, no
token file in the home directory, Ray's temp files under raylurm's own temp dir, and the
cloud-metadata probes Ray makes at start-up sent to a closed loopback port. Variables the user
has already set win. A remote cluster is used exactly as the user configured it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_LOOPBACK = "127.0.0.1,localhost,::1"
_DEAD_PROXY = "http://127.0.0.1:9"  # discard port: Ray's metadata probes fail fast, locally


def local_ray_env() -> dict[str, str]:
    """Environment for an embedded local Ray (defaults only; callers keep user settings)."""
    return {
        "RAY_TMPDIR": str(Path(tempfile.gettempdir()) / f"raylurm-{os.getuid()}"),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HTTP_PROXY": _DEAD_PROXY,
        "HTTPS_PROXY": _DEAD_PROXY,
        "http_proxy": _DEAD_PROXY,
        "https_proxy": _DEAD_PROXY,
        "NO_PROXY": _LOOPBACK,
        "no_proxy": _LOOPBACK,
        "RAY_DATA_ENABLE_ARROW_BACKED_PANDAS_CONVERSION": "0",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    }


def apply_local_ray_env(environ: dict | None = None) -> dict[str, str]:
    """Set the local-Ray defaults in ``environ`` (default ``os.environ``) where unset; return what was set."""
    environ = os.environ if environ is None else environ
    applied = {k: v for k, v in local_ray_env().items() if k not in environ}
    environ.update(applied)
    Path(environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)
    return applied


def cluster_address(address: str | None = None) -> str | None:
    """The cluster to join: ``address`` if given, else ``RAY_ADDRESS``, else ``None`` (embedded)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def init_ray(address: str | None = None, num_cpus: int | None = None, include_dashboard: bool = False, **kwargs):
    """Join the cluster at ``address``/``RAY_ADDRESS``, or start an isolated embedded local Ray."""
    import ray  # lazy: Ray's import costs seconds; only runs that use it pay

    if ray.is_initialized():
        return ray.get_runtime_context()
    target = cluster_address(address)
    if target is not None:
        log.info("joining Ray cluster at %s", target)
        return ray.init(address=target, **kwargs)
    apply_local_ray_env()
    log.info("starting an embedded local Ray (temp dir %s)", os.environ["RAY_TMPDIR"])
    return ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard, **kwargs)

