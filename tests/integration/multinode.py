"""A simulated multi-node Ray cluster on this machine, driven from its own process.

``python -m tests.integration.multinode MODE --data D --vocabulary V --out O`` starts a
``ray.cluster_utils.Cluster`` — a head that takes no work (``num_cpus=0``, as in cluster.yaml)
and ``--nodes`` worker nodes of one CPU each (so two of anything that needs a CPU cannot share a
node) — runs one scenario and writes ``O/result.json``. Its own process because a driver joins
one cluster at a time and the test session's Ray stays up.

Modes:
  place      BoI build (2 mapper actors) + 1 epoch of LURM pretraining (2 workers): where did they run?
  node-loss  pretraining (2 workers, 3 epochs) while the node of one worker is removed after the first checkpoint
  data-kill  BoI build while a mapper actor's process is SIGKILLed as soon as it processes data
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path


def start_cluster(nodes: int):
    import ray
    from ray.cluster_utils import Cluster

    # a removed node is declared dead after ~1.5 s of missed health checks instead of Ray's default ~15 s (3 s x 5)
    health = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": health})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    return cluster


def actor_nodes(class_part: str) -> list[dict]:
    """Actors whose class name contains ``class_part``: node, pid, state (from the GCS, no dashboard needed)."""
    from raylurm.ray_internals import actors

    return [{"node": a["node"], "pid": a["pid"], "state": a["state"]}
            for a in actors() if class_part in a["class_name"]]


def train_nodes() -> list[list[str]]:
    """Nodes of the bundles of every 2-bundle placement group (the Train worker groups)."""
    from raylurm.ray_internals import placement_group_table

    return [sorted(pg["bundles_to_node_id"].values()) for pg in placement_group_table().values()
            if len(pg["bundles"]) == 2 and pg["bundles_to_node_id"]]


def build(data: Path, vocabulary: Path, out: Path) -> dict:
    from raylurm.boi.pipeline import BoiConfig, build_boi
    from raylurm.boi.vocabulary import Vocabulary

    return build_boi(data, Vocabulary.load(vocabulary), out, BoiConfig(on_unknown_items="skip", concurrency=2))


def fit(boi: Path, storage: Path, epochs: int, name: str):
    from raylurm.train.config import TrainConfig
    from raylurm.train.fit import fit as pretrain

    train = TrainConfig(method="lurm", epochs=epochs, num_workers=2, batch_size=8, max_steps_per_epoch=3, max_failures=3)
    return pretrain(boi, train, overrides=["num_anchors=2", "hidden_dim=16"], name=name, storage_path=str(storage))


def place(args, cluster) -> dict:
    summary = build(args.data, args.vocabulary, args.out / "users")
    mappers = actor_nodes("MapWorker")
    result = fit(args.boi, args.out / "runs", 1, "place")
    return {"users": summary["users"], "mapper_nodes": sorted({m["node"] for m in mappers}),
            "train_nodes": train_nodes(), "error": repr(result.error) if result.error else None,
            "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
            "worker_nodes": [n.node_id for n in cluster.worker_nodes]}


def node_loss(args, cluster) -> dict:
    run = args.out / "runs" / "node-loss"
    removed: dict = {}

    def remove_a_training_node():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(run.glob("checkpoint_*")):
            time.sleep(0.2)
        groups = train_nodes()
        victim = next(n for n in cluster.worker_nodes if groups and n.node_id in groups[-1])
        removed.update(node=victim.node_id, checkpoints=len(list(run.glob("checkpoint_*"))), groups_before=groups)
        cluster.remove_node(victim, allow_graceful=False)

    thread = threading.Thread(target=remove_a_training_node, daemon=True)
    thread.start()
    result = fit(args.boi, args.out / "runs", 3, "node-loss")
    thread.join(timeout=5)
    return {"removed": removed, "error": repr(result.error) if result.error else None,
            "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
            "train_groups": train_nodes()}


def data_kill(args, cluster) -> dict:
    killed: dict = {}

    def kill_a_mapper():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            alive = [a for a in actor_nodes("MapWorker") if a["state"] == "ALIVE" and a["pid"]]
            if alive:
                time.sleep(0.5)  # let it take its first blocks
                os.kill(alive[0]["pid"], signal.SIGKILL)
                killed.update(alive[0])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill_a_mapper, daemon=True)
    thread.start()
    summary = build(args.data, args.vocabulary, args.out / "users")
    thread.join(timeout=5)
    return {"killed": killed, "users": summary["users"], "mappers": actor_nodes("MapWorker")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["place", "node-loss", "data-kill"])
    p.add_argument("--data", type=Path, required=True, help="prepared dataset")
    p.add_argument("--vocabulary", type=Path, required=True, help="interest vocabulary directory")
    p.add_argument("--boi", type=Path, required=True, help="a BoI directory to pretrain on")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--nodes", type=int, default=3)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cluster = start_cluster(args.nodes)
    try:
        result = {"place": place, "node-loss": node_loss, "data-kill": data_kill}[args.mode](args, cluster)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    (args.out / "result.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
