"""The one place raylurm touches Ray internals: private modules and attributes, undocumented formats.

Why this module exists: a few things raylurm needs have no public Ray API (reporting from a Ray Train
callback to Tune, freeing the workers of a stopped Train V2 trial, offline checks of cluster.yaml and of
the Serve config, a few facts tests assert). Private APIs change without notice between Ray releases, so
they are kept here, each in one small function with a note, instead of being spread over the code base.

**Ray is pinned to 2.60.x** (``pyproject.toml``) because of this file. Upgrading Ray means:

1. re-check every entry below against the new Ray's source (each names what it relies on);
2. run the canaries, ``pytest tests/unit/test_ray_internals.py`` (seconds, no Ray runtime started): each
   asserts that a private thing used here still exists with the expected shape, and fails with a message
   pointing back to this file;
3. run the integration tests each entry names (``tests/integration/test_tune.py`` above all);
4. bump ``CHECKED_AGAINST`` and the pin.

Each entry says: the Ray version it was checked against, what it relies on, what breaks on an upgrade and
how you would notice, and which test covers it.

Ray is imported inside the functions, not at the top of this module, on purpose: modules that must stay
importable without Ray import this one at their top (``raylurm.train.loop``, ``raylurm.tune.validation``,
the latter pulled in by the registry/report CLIs whose ``--help`` stays instant). ``import ray`` costs
~0.3 s, ``ray.tune`` and ``ray.serve`` ~0.6 s more each (measured on 2.60.0); a canary checks that
importing this module imports no Ray.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The Ray release (major.minor) every entry below was read against: ray 2.60.0 (commit b7f4259e94).
CHECKED_AGAINST = "2.60"

_UPGRADE_HINT = ("a Ray internal raylurm relies on changed: see raylurm/ray_internals.py "
                 f"(checked against Ray {CHECKED_AGAINST}) and tests/unit/test_ray_internals.py")


# --- Tune + Train V2: reporting a Train callback's metrics to Tune ----------------------------------------
# Checked against Ray 2.60.0. Relies on: ``ray.tune.integration.ray_train.TuneReportCallback.__init__`` (a
# DeveloperAPI) setting the private attribute ``_training_actor_item_queue`` to the Tune session's
# ``_get_or_create_inter_actor_queue()`` (a ``ray.util.queue.Queue`` of size 1), whose items the Tune trial's
# session reads back and reports as that trial's result (``_TrainSession._get_result_from_queues``). Ray's
# own ``after_report`` puts ``metrics[0]`` (+ ``checkpoint_path``) there; raylurm's ``ValidationReport``
# puts the same plus ``val_*`` metrics. On upgrade: if the attribute is renamed, this raises
# RuntimeError (with this file's name) at the first epoch of every trial; if Ray moves reporting elsewhere
# (e.g. a public ``report`` method), trials would report nothing and Tune would see no ``val_auc``.
# Covered by: tests/unit/test_ray_internals.py (canary, no runtime), tests/integration/test_tune.py.
def report_to_tune(callback, metrics: dict[str, Any]) -> None:
    """Hand ``metrics`` from a ``TuneReportCallback`` subclass (inside a Train run inside a Tune trial) to Tune."""
    queue = getattr(callback, "_training_actor_item_queue", None)
    if queue is None:
        raise RuntimeError(f"{type(callback).__name__} has no _training_actor_item_queue: {_UPGRADE_HINT}")
    queue.put(metrics)


# --- Freeing the Train workers of stopped Tune trials ----------------------------------------------------
#: The result key under which rank 0 reports its Train worker group's placement group (hex id).
PLACEMENT_GROUP_KEY = "placement_group"


# Checked against Ray 2.60.0. Relies on: the public ``ray.util.get_current_placement_group()`` and
# ``PlacementGroup.id.hex()`` giving the same hex id that keys ``placement_group_table()`` and names the
# group's resources (below). On upgrade: a different id format would make ``ReleaseStoppedTrials`` find no
# group (it then silently does nothing: the next trials wait for CPUs forever in test_tune.py).
# Covered by: tests/unit/test_ray_internals.py (id round trip), tests/integration/test_tune.py.
def current_placement_group_id() -> str | None:
    """Hex id of the placement group this worker runs in, or ``None`` (called by Train workers)."""
    import ray.util

    group = ray.util.get_current_placement_group()
    return None if group is None else group.id.hex()


# Checked against Ray 2.60.0. Relies on: ``ray.util.placement_group_table()`` (a DeveloperAPI, shape not
# documented) returning ``{hex id: {"state": "CREATED"|"REMOVED"|…, "bundles": {index: {"CPU": n, …}},
# "bundles_to_node_id": {index: node hex}, …}}`` (``ray._private.state.GlobalState._gen_placement_group_info``).
# On upgrade: renamed keys raise KeyError in tests/integration/multinode.py or make the release below treat
# every group as gone (``state`` None) and drop it without freeing it (test_tune.py then hangs on CPUs).
# Covered by: tests/unit/test_ray_internals.py (shape from a synthetic GCS record), tests/integration/
# test_tune.py, tests/integration/test_multinode.py.
def placement_group_table() -> dict[str, dict]:
    """Every placement group of the cluster: ``{hex id: {"state", "bundles", "bundles_to_node_id", …}}``."""
    import ray.util

    return ray.util.placement_group_table()


# Checked against Ray 2.60.0. Relies on: the undocumented naming of a placement group's resources,
# ``<resource>_group_<hex id>`` (the group-wide "wildcard" resource, besides ``<resource>_group_<index>_<hex
# id>`` per bundle), as listed by ``ray.available_resources()``; Ray's own parser of it is
# ``ray.autoscaler._private.util.parse_placement_group_resource_str``. A group's ``CPU_group_<id>`` that is all
# available means no worker holds any of it. On upgrade: a new naming makes every group look busy, so a stopped
# trial's group is only removed by the 20 s force in ``on_experiment_end``, never between trials: the next
# trials wait for CPUs (test_tune.py slows down or times out). Covered by: tests/unit/test_ray_internals.py
# (Ray's parser still reads the name), tests/integration/test_tune.py.
def placement_group_idle(group: str, bundles: dict[int, dict[str, float]], available: dict[str, float]) -> bool:
    """Whether none of the CPUs of placement group ``group`` (hex id, its table ``bundles``) is in use."""
    need = sum(b.get("CPU", 0.0) for b in bundles.values())
    return available.get(f"CPU_group_{group}", 0.0) >= need - 1e-6


# Checked against Ray 2.60.0. Relies on: building a handle from a hex id, ``PlacementGroup(PlacementGroupID(
# bytes.fromhex(id)))`` (public classes, but constructing them from an id is undocumented; Ray's handles
# normally come from ``placement_group()``), accepted by the public ``remove_placement_group``. On upgrade: a
# changed constructor raises TypeError/ValueError in the Tune driver's callback (the sweep fails loudly).
# Covered by: tests/unit/test_ray_internals.py (round trip), tests/integration/test_tune.py.
def remove_placement_group(group: str) -> None:
    """Remove the placement group with hex id ``group`` (frees its reserved resources)."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group))))


class ReleaseStoppedTrials:
    """Frees the Ray Train workers of trials that Tune stopped (ASHA, or the last epoch) before ``fit`` returned.

    Ray Train V2 creates each run's worker placement group from its controller, scoped to the job; when Tune
    kills a trial's function actor the controller dies with it and the group stays reserved. Ray's own
    cleaner needs the dashboard's state API and one Ray instance per machine; this does not: every epoch's
    result names the group (``placement_group``, reported by rank 0), and once a finished trial's group is
    idle (no worker left in it) it is removed. Measured without it: the next trials wait for CPUs forever.

    Checked against Ray 2.60.0; relies on the three placement-group entries above. Whether it is still needed
    on a newer Ray: run tests/integration/test_tune.py without ``ReleaseCallback`` in raylurm.tune.run.
    (Also importable as ``raylurm.tune.run.ReleaseStoppedTrials``, the name pickled experiments refer to.)
    """

    def __init__(self):
        self.pending: dict[str, float] = {}  # placement group id -> when its trial ended
        self.checked = 0.0

    def trial_ended(self, trial) -> None:
        group = (trial.last_result or {}).get(PLACEMENT_GROUP_KEY)
        if group:
            self.pending[group] = time.monotonic()

    def release(self, force_after_s: float | None = None) -> None:
        import ray

        if not self.pending:
            return
        table = placement_group_table()
        available = ray.available_resources()
        for group, ended in list(self.pending.items()):
            state = table.get(group, {}).get("state")
            if state in (None, "REMOVED"):
                del self.pending[group]
                continue
            idle = placement_group_idle(group, table[group].get("bundles", {}), available)
            if idle or (force_after_s is not None and time.monotonic() - ended > force_after_s):
                log.info("freeing the workers of a stopped trial (placement group %s)", group[:12])
                remove_placement_group(group)
                del self.pending[group]


# --- cluster.yaml, offline ----------------------------------------------------------------------------------
# Checked against Ray 2.60.0. Relies on: ``ray.autoscaler._private.util.prepare_config`` (fills in the
# provider's defaults, as ``ray up`` does) and ``validate_config`` (Ray's JSON schema ``ray-schema.json`` +
# consistency checks; raises jsonschema.ValidationError, ValueError or KeyError). On upgrade: an ImportError
# or changed signature fails tests/unit/test_cluster_config.py; a stricter schema fails it too, which is the
# point (cluster.yaml must then be updated). Covered by: tests/unit/test_cluster_config.py,
# tests/unit/test_ray_internals.py.
def validate_cluster_config(config: dict | str | os.PathLike) -> dict:
    """Ray's own validation of an autoscaler config (a dict, or a YAML file): return it with Ray's defaults
    filled in; raise ``jsonschema.ValidationError``/``ValueError``/``KeyError`` if Ray would reject it.
    Offline: nothing is launched, no cloud is contacted. ``config`` itself is not modified."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    if not isinstance(config, dict):
        import yaml

        config = yaml.safe_load(Path(config).read_text())
    full = prepare_config(copy.deepcopy(config))
    validate_config(full)
    return full


# --- the Ray session of this process ---------------------------------------------------------------------
# Checked against Ray 2.60.0. Relies on: ``ray._private.worker._global_node`` (the ``ray._private.node.Node``
# this driver started or joined, None before ``ray.init``) and its ``get_session_dir_path()``. On upgrade:
# AttributeError in the probe of tests/integration/test_ray_local.py (which checks that Ray's session dir
# lies under RAY_TMPDIR). Covered by: tests/unit/test_ray_internals.py, tests/integration/test_ray_local.py.
def session_dir() -> str:
    """The session directory (``<RAY_TMPDIR>/ray/session_…``) of the Ray this process is connected to."""
    import ray._private.worker

    node = ray._private.worker._global_node
    if node is None:
        raise RuntimeError("Ray is not initialised in this process (call raylurm.runtime.init_ray first)")
    return node.get_session_dir_path()


# Checked against Ray 2.60.0. Relies on: ``ray._private.state.actors()`` (the GCS actor table, "for
# debugging only"; no dashboard needed, unlike ``ray.util.state.list_actors``) returning ``{actor hex id:
# {"ActorClassName", "Address": {"NodeID", …}, "Pid", "State", …}}`` (``GlobalState._gen_actor_info``). On
# upgrade: ImportError/KeyError in tests/integration/multinode.py (test_multinode.py fails). Covered by:
# tests/unit/test_ray_internals.py (shape from a synthetic GCS record), tests/integration/test_multinode.py.
def actors() -> list[dict[str, Any]]:
    """Every actor of the cluster, from the GCS: ``{"actor_id", "class_name", "node", "pid", "state"}`` each."""
    from ray._private.state import actors as actor_table

    return [{"actor_id": actor_id, "class_name": a["ActorClassName"], "node": a["Address"]["NodeID"],
             "pid": a["Pid"], "state": a["State"]} for actor_id, a in actor_table().items()]


# --- Serve: an application from a builder and its config args --------------------------------------------
# Checked against Ray 2.60.0. Relies on: ``ray.serve._private.api.call_user_app_builder_with_args_if_necessary(
# builder, args)``, what ``serve run``/``serve deploy`` do with a config file's ``import_path`` + ``args``
# (validating ``args`` into the builder's pydantic annotation), so tests deploy exactly as serve/config.yaml
# would. On upgrade: ImportError or TypeError in tests/unit/test_serving.py and tests/integration/
# test_serve.py. Covered by: tests/unit/test_ray_internals.py, tests/unit/test_serving.py.
def build_serve_app(builder, args: dict[str, Any]):
    """The Serve ``Application`` that ``serve run`` would build from ``builder`` and a config's ``args``."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    return call_user_app_builder_with_args_if_necessary(builder, args)


# --- Ray Data's execution log (benchmarks) ---------------------------------------------------------------
# Checked against Ray 2.60.0. Relies on: the logger name of Ray Data's streaming executor, the private module
# ``ray.data._internal.execution.streaming_executor``, which logs the stats summary (with
# ``DataContext.enable_auto_log_stats``) and "… execution finished in <s> seconds". On upgrade: the benchmark's
# Ray Data seconds come out empty (None), no error. Covered by: tests/unit/test_ray_internals.py (the module
# exists and logs under its own name). The benchmark raylurm/bench/boi.py (``_start_ray``) listens to it.
RAY_DATA_EXECUTOR_LOGGER = "ray.data._internal.execution.streaming_executor"


def ray_data_executor_logger() -> logging.Logger:
    """The logger Ray Data's streaming executor writes its per-dataset summaries to."""
    return logging.getLogger(RAY_DATA_EXECUTOR_LOGGER)


# --- Ray Data's task names (benchmarks) ---
# Checked against Ray 2.60.0, documentation only (no function: the names live in raylurm/bench/boi.py
# ``RAY_STAGES``). The Ray Data benchmark groups ``ray.timeline()`` events by the names of Ray Data's private
# task functions: ``ray.data._internal.execution.operators.map_operator._map_task`` and
# ``...operators.shuffle_operators.shuffle_tasks._shuffle_map_task`` / ``_shuffle_reduce_task``. On upgrade:
# renamed functions leave those stages out of the benchmark's stage table, no error. Covered by:
# tests/unit/test_ray_internals.py (the functions still exist under those names).
