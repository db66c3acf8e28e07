"""Ray's real autoscaler on this machine: a fake-multinode config derived from cluster.yaml, and a driver.

:func:`fake_cluster_config` turns ``cluster.yaml`` into a complete ``provider: {type: fake_multinode}``
autoscaler config: the same node types (the head takes no work, ``cpu_worker``, ``gpu_worker``) with
their ``min_workers``, each scaled down to what a 2-core machine can host (:data:`SCALED_DOWN`) and
labelled with its type, a short idle timeout, and the GCS address of the head the test starts. The
fake provider "launches an instance" by starting a raylet and its agents from the head's autoscaler
process (the monitor), so only the cloud API is simulated: the autoscaler's decisions are Ray's own.
Ray validates the file against its schema (``validate_config``); ``prepare_config``, which
``raylurm.ray_internals.validate_cluster_config`` uses for cluster.yaml, needs the provider's
``example.yaml`` that the wheel lacks.

The ``gpu_worker`` keeps its role with a *logical* GPU: the fake node advertises ``GPU: 1`` (Ray does
not check it against the hardware), so a task asking for a GPU makes the autoscaler launch this type and
lands there; no CUDA device exists, so only plain Ray tasks use it, not a ``--use-gpu`` training run.

Two drivers, each in its own process (the test session's Ray stays up beside them), join the cluster at
``A`` (a head with no CPU) and write to ``O``:

* ``python -m tests.integration.autoscale watch --address A --out O`` records the alive nodes and their
  types every ``--poll`` seconds (``O/timeline.json``, rewritten at each change) until ``O/work.json``
  exists and only the head is left;
* ``python -m tests.integration.autoscale work --address A --boi B --out O`` is the job: it pretrains
  LURM for one epoch with two workers on the BoI at ``B`` (CPUs that exist only once the autoscaler has
  launched ``cpu_worker`` nodes), runs one task asking for a GPU, writes ``O/work.json`` (where they ran)
  and exits, so that nothing it owns keeps a node busy (a node holding a live object is not idle).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml

from raylurm.data.io import atomic_file
from tests.integration.multinode import train_nodes

#: Label every launched node carries: the cluster.yaml node type it was launched as.
TYPE_LABEL = "raylurm-node-type"
#: The fake provider always registers the head under this type name (cluster.yaml calls it ``head``).
FAKE_HEAD_TYPE = "ray.head.default"
#: Resources of each cluster.yaml worker type on this machine: 1 logical CPU each (16 / 4 on AWS), the
#: gpu_worker's A10G as a logical GPU. A node type added to cluster.yaml must be added here too.
SCALED_DOWN = {"cpu_worker": {"CPU": 1}, "gpu_worker": {"CPU": 1, "GPU": 1}}
#: At most this many nodes of each worker type (cluster.yaml: 8 and 4).
MAX_PER_TYPE = 2
#: Object store of each fake node (bytes, an integer as the schema wants): the test moves kilobytes.
OBJECT_STORE_BYTES = 300 * 1024 * 1024
#: Parquet footer-reading actors of the job's reads (Ray Data's default, 32, is a burst of 32 CPUs of demand).
FOOTER_ACTORS = 1


def fake_cluster_config(cluster_yaml: Path, gcs_address: str, idle_timeout_minutes: float = 0.25) -> dict:
    """A complete fake_multinode autoscaler config with cluster.yaml's node types, scaled down to this machine."""
    source = yaml.safe_load(Path(cluster_yaml).read_text())
    types = source["available_node_types"]
    head = source["head_node_type"]
    workers = {name: spec for name, spec in types.items() if name != head}
    if set(workers) != set(SCALED_DOWN):
        raise ValueError(f"cluster.yaml's worker types {sorted(workers)} differ from {sorted(SCALED_DOWN)}: "
                         "update SCALED_DOWN in tests/integration/autoscale.py")
    available = {FAKE_HEAD_TYPE: {"resources": dict(types[head].get("resources", {})), "node_config": {},
                                  "max_workers": 0}}
    for name, spec in workers.items():
        available[name] = {
            "resources": {**SCALED_DOWN[name], "object_store_memory": OBJECT_STORE_BYTES},
            "labels": {TYPE_LABEL: name},
            "node_config": {},
            "min_workers": spec.get("min_workers", 0),
            "max_workers": min(spec.get("max_workers", MAX_PER_TYPE), MAX_PER_TYPE),
        }
    return {
        "cluster_name": f"{source['cluster_name']}-fake",
        "max_workers": sum(t["max_workers"] for t in available.values()),
        "upscaling_speed": source.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,  # workers join this head, not the default port 6379
            "use_node_id_as_ip": True,  # every fake node has the same IP: the autoscaler tells them apart by id
            "disable_node_updaters": True,  # no SSH, no setup_commands: the "instance" is a local raylet
            "disable_launch_config_check": True,
        },
        "auth": {},
        "available_node_types": available,
        "head_node_type": FAKE_HEAD_TYPE,
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def write_fake_cluster_config(cluster_yaml: Path, path: Path, gcs_address: str, idle_timeout_minutes: float = 0.25) -> Path:
    """:func:`fake_cluster_config` written to ``path`` (YAML), for ``ray start --head --autoscaling-config``."""
    path.write_text(yaml.safe_dump(fake_cluster_config(cluster_yaml, gcs_address, idle_timeout_minutes), sort_keys=False))
    return path


# --- the drivers --------------------------------------------------------------------------------------------

def alive_nodes() -> dict[str, str]:
    """Alive nodes of the cluster this driver joined: node id -> node type (``head`` for the head)."""
    import ray

    return {n["NodeID"]: ("head" if n["Resources"].get("node:__internal_head__") else
                          n.get("Labels", {}).get(TYPE_LABEL, "?"))
            for n in ray.nodes() if n["Alive"]}


def _write_json(path: Path, data) -> None:
    with atomic_file(path) as tmp:  # readers never see half a file
        tmp.write_text(json.dumps(data, indent=1, default=str))


def watch(args) -> None:
    """Record the alive nodes (``timeline.json``: each change, wall-clock time) until the work is done and
    only the head is left, or until ``--timeout``."""
    events: list[dict] = []  # {"t": time.time(), "nodes": {id: type}}
    deadline = time.monotonic() + args.timeout
    outcome = "timed out"
    while time.monotonic() < deadline:
        nodes = alive_nodes()
        if not events or nodes != events[-1]["nodes"]:
            events.append({"t": time.time(), "nodes": nodes})
            _write_json(args.out / "timeline.json", {"events": events, "outcome": None})
        if (args.out / "work.json").exists() and set(nodes.values()) == {"head"}:
            outcome = "scaled down"
            break
        time.sleep(args.poll)
    _write_json(args.out / "timeline.json", {"events": events, "outcome": outcome})


def pretrain(boi: Path, storage: Path):
    """One epoch of LURM (2 DDP workers, 3 steps): 2 CPUs of placement group after the BoI rows are read."""
    import ray.data
    from ray.data import ExecutionResources

    from raylurm.train.config import TrainConfig
    from raylurm.train.fit import fit

    # The head has no CPU, so fit() reads the BoI rows into the object store before training. Two bursts of
    # CPU demand are capped, or the autoscaler (v1) puts what exceeds cpu_worker's max_workers on gpu_worker
    # nodes (it prefers not to, no more): Ray Data's own scale-up requests (up to its CPU limit), and the
    # 32 FooterReader actors with which Ray Data 2.60's read_parquet lists files, each asking for 1 CPU to
    # be scheduled (the driver reads the variable when read_parquet plans the read).
    context = ray.data.DataContext.get_current()
    context.execution_options.resource_limits = ExecutionResources(cpu=2)
    context.enable_progress_bars = False
    os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] = str(FOOTER_ACTORS)
    train = TrainConfig(method="lurm", epochs=1, num_workers=2, batch_size=8, max_steps_per_epoch=3)
    return fit(boi, train, overrides=["num_anchors=2", "hidden_dim=16"], name="autoscale", storage_path=str(storage))


def gpu_task() -> dict:
    """Where a task asking for one GPU ran: node id and the GPU ids Ray gave it."""
    import ray

    @ray.remote(num_gpus=1)
    def where():
        return {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": ray.get_gpu_ids()}

    return ray.get(where.remote())


def work(args) -> None:
    """The job: pretraining, then a GPU task; ``work.json`` says where they ran and when (wall clock).
    The process then exits, as a submitted job does, so its objects no longer pin any node."""
    import ray

    marks = {"start": time.time()}
    cpus_at_start = ray.cluster_resources().get("CPU", 0.0)  # the head's: none
    fitted = pretrain(args.boi, args.out / "runs")
    marks["fit done"] = time.time()
    result = {"cpus_at_start": cpus_at_start, "error": repr(fitted.error) if fitted.error else None,
              "train_nodes": train_nodes(),
              "metrics": {k: v for k, v in fitted.metrics.items() if isinstance(v, (int, float))}}
    result["gpu_task"] = gpu_task()
    marks["gpu task done"] = time.time()
    _write_json(args.out / "work.json", {**result, "marks": marks})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["watch", "work"])
    p.add_argument("--address", required=True, help="GCS address of the autoscaling head")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--boi", type=Path, help="work: a BoI directory to pretrain on")
    p.add_argument("--poll", type=float, default=0.5, help="watch: seconds between two looks at the node set")
    p.add_argument("--timeout", type=float, default=600.0, help="watch: give up after this many seconds")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import ray

    ray.init(address=args.address, log_to_driver=args.mode == "work")
    try:
        {"watch": watch, "work": work}[args.mode](args)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
