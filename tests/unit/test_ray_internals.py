"""Canaries for raylurm/ray_internals.py: every private Ray thing it relies on, checked in the installed Ray.

No Ray runtime is started (synthetic GCS records and patched sessions stand in for one); the file runs in
seconds. A failure here after a Ray upgrade means an entry of raylurm/ray_internals.py needs re-checking:
each message names the entry.
"""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raylurm import ray_internals
from raylurm.ray_internals import CHECKED_AGAINST

REPO = Path(__file__).resolve().parents[2]


def hint(entry: str) -> str:
    return (f"Ray internal changed: re-check `{entry}` in raylurm/ray_internals.py "
            f"(checked against Ray {CHECKED_AGAINST}) before upgrading Ray")


def test_installed_ray_is_the_release_the_internals_were_checked_against():
    import ray

    assert ray.__version__.split(".")[:2] == CHECKED_AGAINST.split("."), (
        f"Ray {ray.__version__} is installed; raylurm/ray_internals.py was checked against Ray {CHECKED_AGAINST}. "
        "Re-check every entry there, run this file and tests/integration/test_tune.py, then bump CHECKED_AGAINST "
        "and the pin in pyproject.toml")


def test_importing_the_module_imports_no_ray():
    code = ("import sys, raylurm.ray_internals, raylurm.tune.validation, raylurm.train.loop; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", "raylurm.ray_internals must import Ray inside its functions only"


# --- report_to_tune: TuneReportCallback._training_actor_item_queue -----------------------------------------

class _Queue:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)


@pytest.fixture
def tune_session(monkeypatch) -> _Queue:
    """What TuneReportCallback.__init__ sees inside a Tune trial: a session with an inter-actor queue."""
    import ray.tune.integration.ray_train as ray_train

    queue = _Queue()

    class Session:
        def _get_or_create_inter_actor_queue(self):
            return queue

    monkeypatch.setattr(ray_train, "_in_tune_session", lambda: True)
    monkeypatch.setattr(ray_train, "get_session", lambda: Session())
    return queue


def test_tune_report_callback_gets_its_queue_from_the_tune_session(tune_session):
    from ray.train._internal.session import _TrainSession
    from ray.tune.integration.ray_train import TuneReportCallback

    callback = TuneReportCallback()
    assert getattr(callback, "_training_actor_item_queue", None) is tune_session, hint("report_to_tune")
    assert "_training_actor_item_queue.put(" in inspect.getsource(TuneReportCallback.after_report), \
        hint("report_to_tune") + ": Ray's own after_report no longer reports through the queue"
    for name in ("_get_or_create_inter_actor_queue", "_get_result_from_queues"):
        assert callable(getattr(_TrainSession, name, None)), hint("report_to_tune") + f": _TrainSession.{name}"
    ray_internals.report_to_tune(callback, {"epoch": 1})
    assert tune_session.items == [{"epoch": 1}]


def test_the_validation_callback_reports_through_report_to_tune(tune_session):
    from raylurm.tune.validation import report_callback

    callback = report_callback("unused-history", "unused-users")  # no checkpoint: no data is read
    callback.after_report(None, [{"epoch": 2, "loss": 0.5}], None)
    assert tune_session.items == [{"epoch": 2, "loss": 0.5}]


def test_report_to_tune_fails_loudly_without_the_queue():
    with pytest.raises(RuntimeError, match="raylurm/ray_internals.py"):
        ray_internals.report_to_tune(object(), {"epoch": 1})


# --- placement groups: table shape, resource naming, ids ---------------------------------------------------

def _pg_record(pgid, node, cpus=(0.99, 0.99), state="CREATED"):
    from ray.core.generated import common_pb2, gcs_pb2

    bundles = [common_pb2.Bundle(bundle_id=common_pb2.Bundle.BundleIdentifier(placement_group_id=pgid.binary(),
                                                                               bundle_index=i),
                                 unit_resources={"CPU": c}, node_id=node.binary()) for i, c in enumerate(cpus)]
    return gcs_pb2.PlacementGroupTableData(placement_group_id=pgid.binary(), bundles=bundles,
                                           state=getattr(gcs_pb2.PlacementGroupTableData, state),
                                           strategy=common_pb2.PlacementStrategy.PACK)


def test_placement_group_table_has_the_shape_release_and_multinode_read():
    import ray
    import ray.util
    from ray._private.state import GlobalState

    assert callable(getattr(ray.util, "placement_group_table", None)), hint("placement_group_table")
    pgid, node = ray.PlacementGroupID.from_random(), ray.NodeID.from_random()
    info = GlobalState()._gen_placement_group_info(_pg_record(pgid, node))
    assert info["placement_group_id"] == pgid.hex(), hint("placement_group_table") + ": keyed by the hex id"
    assert info["state"] == "CREATED", hint("placement_group_table")
    assert info["bundles"] == {0: {"CPU": 0.99}, 1: {"CPU": 0.99}}, hint("placement_group_table")
    assert info["bundles_to_node_id"] == {0: node.hex(), 1: node.hex()}, hint("placement_group_table")
    removed = GlobalState()._gen_placement_group_info(_pg_record(pgid, node, state="REMOVED"))
    assert removed["state"] == "REMOVED", hint("placement_group_table")


def test_placement_group_resources_are_named_resource_group_id():
    import ray
    from ray.autoscaler._private.util import parse_placement_group_resource_str

    group = ray.PlacementGroupID.from_random().hex()
    assert parse_placement_group_resource_str(f"CPU_group_{group}") == ("CPU", group, True), \
        hint("placement_group_idle") + ": CPU_group_<id> is no longer how Ray names a group's CPUs"
    bundles = {0: {"CPU": 0.99}, 1: {"CPU": 0.99}}
    assert ray_internals.placement_group_idle(group, bundles, {f"CPU_group_{group}": 1.98, "CPU": 2.0})
    assert not ray_internals.placement_group_idle(group, bundles, {f"CPU_group_{group}": 0.99})
    assert not ray_internals.placement_group_idle(group, bundles, {})


def test_placement_group_handles_round_trip_through_the_hex_id():
    import ray
    import ray.util
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    pgid = ray.PlacementGroupID.from_random()
    handle = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pgid.hex())))
    assert handle.id == pgid and handle.id.hex() == pgid.hex(), hint("remove_placement_group")
    assert list(inspect.signature(remove_placement_group).parameters) == ["placement_group"], \
        hint("remove_placement_group")
    assert callable(ray.util.get_current_placement_group), hint("current_placement_group_id")


class _Trial:
    def __init__(self, last_result):
        self.last_result = last_result


def test_release_stopped_trials_frees_idle_groups_only(monkeypatch):
    import ray

    idle, busy, gone = "aa" * 18, "bb" * 18, "cc" * 18
    table = {idle: {"state": "CREATED", "bundles": {0: {"CPU": 1.0}}},
             busy: {"state": "CREATED", "bundles": {0: {"CPU": 1.0}}},
             gone: {"state": "REMOVED", "bundles": {0: {"CPU": 1.0}}}}
    removed = []
    monkeypatch.setattr(ray_internals, "placement_group_table", lambda: table)
    monkeypatch.setattr(ray_internals, "remove_placement_group", removed.append)
    monkeypatch.setattr(ray, "available_resources", lambda: {f"CPU_group_{idle}": 1.0, f"CPU_group_{busy}": 0.0})
    releaser = ray_internals.ReleaseStoppedTrials()
    for group in (idle, busy, gone):
        releaser.trial_ended(_Trial({ray_internals.PLACEMENT_GROUP_KEY: group}))
    releaser.trial_ended(_Trial(None))  # a trial that never reported
    releaser.release()
    assert removed == [idle] and set(releaser.pending) == {busy}
    releaser.release(force_after_s=0.0)
    assert removed == [idle, busy] and not releaser.pending


def test_pickled_experiments_still_find_the_release_callback():
    from raylurm.tune import run

    assert run.ReleaseStoppedTrials is ray_internals.ReleaseStoppedTrials
    callback = pickle.loads(pickle.dumps(run.ReleaseCallback()))
    assert isinstance(callback.releaser, ray_internals.ReleaseStoppedTrials) and callback.releaser.pending == {}


# --- cluster.yaml: ray.autoscaler._private.util ------------------------------------------------------------

def test_rays_autoscaler_validator_accepts_the_repos_cluster_yaml():
    from ray.autoscaler._private import util

    for name in ("prepare_config", "validate_config"):
        assert callable(getattr(util, name, None)), hint("validate_cluster_config") + f": {name}"
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    full = ray_internals.validate_cluster_config(REPO / "cluster.yaml")
    assert full["head_node_type"] == "head" and "cluster_synced_files" in full, hint("validate_cluster_config")
    from_dict = ray_internals.validate_cluster_config(config)
    assert from_dict["available_node_types"].keys() == full["available_node_types"].keys()
    assert config == yaml.safe_load((REPO / "cluster.yaml").read_text()), "the caller's dict must not be modified"


# --- session dir: ray._private.worker._global_node ---------------------------------------------------------

def test_the_session_dir_comes_from_the_global_node():
    import ray
    import ray._private.node
    import ray._private.worker

    assert hasattr(ray._private.worker, "_global_node"), hint("session_dir")
    assert callable(getattr(ray._private.node.Node, "get_session_dir_path", None)), hint("session_dir")
    if not ray.is_initialized():
        with pytest.raises(RuntimeError, match="not initialised"):
            ray_internals.session_dir()


# --- actors: ray._private.state.actors ---------------------------------------------------------------------

def test_actor_table_has_the_shape_multinode_reads(monkeypatch):
    import ray
    import ray._private.state as state
    from ray.core.generated import common_pb2, gcs_pb2

    assert "actor_state_name" in inspect.signature(state.actors).parameters, hint("actors")
    actor, node = ray.ActorID.from_random(), ray.NodeID.from_random()
    record = gcs_pb2.ActorTableData(actor_id=actor.binary(), class_name="MapWorker", pid=4242,
                                    state=gcs_pb2.ActorTableData.ALIVE,
                                    address=common_pb2.Address(node_id=node.binary()))
    info = state.GlobalState()._gen_actor_info(record)
    monkeypatch.setattr(state, "actors", lambda: {actor.hex(): info})
    assert ray_internals.actors() == [{"actor_id": actor.hex(), "class_name": "MapWorker", "node": node.hex(),
                                       "pid": 4242, "state": "ALIVE"}], hint("actors")


# --- Serve: ray.serve._private.api.call_user_app_builder_with_args_if_necessary -----------------------------

def test_serve_builds_an_application_from_a_typed_builder_and_args():
    from pydantic import BaseModel
    from ray import serve
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    assert list(inspect.signature(call_user_app_builder_with_args_if_necessary).parameters) == ["builder", "args"], \
        hint("build_serve_app")

    class Args(BaseModel):
        n: int

    @serve.deployment
    class Echo:
        def __init__(self, n: int):
            self.n = n

    seen = []

    def builder(args):
        seen.append(args)
        return Echo.bind(args.n)

    # Ray reads the annotation object itself, no string (this file has `from __future__ import annotations`)
    builder.__annotations__["args"] = Args
    app = ray_internals.build_serve_app(builder, {"n": "3"})
    assert isinstance(app, serve.Application) and seen == [Args(n=3)], hint("build_serve_app")


# --- Ray Data internals the benchmark reads (raylurm/bench/boi.py) -----------------------------------------

def test_ray_datas_executor_logs_under_its_module_name():
    import importlib
    import logging

    module = importlib.import_module(ray_internals.RAY_DATA_EXECUTOR_LOGGER)
    assert isinstance(module.logger, logging.Logger) and module.logger is ray_internals.ray_data_executor_logger(), \
        hint("RAY_DATA_EXECUTOR_LOGGER")
    assert "execution finished in" in inspect.getsource(module), hint("RAY_DATA_EXECUTOR_LOGGER") + ": the message"


@pytest.mark.parametrize("module, function", [
    ("ray.data._internal.execution.operators.map_operator", "_map_task"),
    ("ray.data._internal.execution.operators.shuffle_operators.shuffle_tasks", "_shuffle_map_task"),
    ("ray.data._internal.execution.operators.shuffle_operators.shuffle_tasks", "_shuffle_reduce_task"),
])
def test_ray_datas_task_functions_keep_the_names_the_benchmark_groups_by(module, function):
    import importlib

    assert callable(getattr(importlib.import_module(module), function, None)), \
        hint("ray.timeline() event names (raylurm/bench/boi.py RAY_STAGES)") + f": {module}.{function}"
