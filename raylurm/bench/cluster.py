"""``python -m raylurm.bench cluster`` — BoI build and one pretraining epoch on 1 vs 2 (simulated) nodes.

A synthetic lifelong log (``--users`` × ``--years``) is generated and its interest vocabulary built
once. Then, for each layout, a ``ray.cluster_utils.Cluster`` is started on this machine — a head
that takes no work (as in cluster.yaml) and N worker nodes of C CPUs, each node its own raylet and
object store — and two stages are timed from the driver:

* the Ray Data BoI pipeline (read → map to interests/periods → shuffle by user partition → one
  sparse row per user → Parquet), as ``python -m raylurm.boi build`` runs it;
* one epoch of LURM pretraining, one Ray Train worker per CPU (DDP over gloo across nodes).

Layouts: 1 node × 1 CPU (the baseline), 2 nodes × 1 CPU (scale-out: twice the CPUs, in two
nodes), 1 node × 2 CPUs (the same CPUs in one node: what crossing nodes costs). On a 2-core
machine the 2-CPU layouts use both physical cores, so the scale-out ratio is bounded by 2.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from raylurm.bench import common

HELP = "BoI build and one pretraining epoch on 1 vs 2 simulated Ray nodes (ray.cluster_utils.Cluster)"
SECTION = "## Scale-out (python -m raylurm.bench cluster)"
LAYOUTS = ((1, 1), (2, 1), (1, 2))  # (nodes, CPUs per node)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=4000, help="synthetic users")
    parser.add_argument("--years", type=int, default=3, help="years of events per user")
    parser.add_argument("--interests", type=int, default=1000, help="interest vocabulary size D")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report file (section replaced)")
    common.add_report_arguments(parser)


def _prepare(root: Path, args) -> tuple[Path, Path, dict]:
    """Synthetic data + its vocabulary, on a throw-away embedded Ray (not timed)."""
    import ray

    from raylurm.boi.build import BuildConfig, build
    from raylurm.boi.embeddings import ItemEmbeddingConfig
    from raylurm.boi.pipeline import BoiConfig
    from raylurm.boi.vocabulary import VocabularyConfig
    from raylurm.data.synth import SynthConfig, generate
    from raylurm.runtime import init_ray

    stats = generate(SynthConfig(users=args.users, years=args.years, seed=0), root / "data", progress=False)
    init_ray()
    build(root / "data", root / "boi", BuildConfig(embedding=ItemEmbeddingConfig(method="cooccurrence", dim=32),
                                                  vocabulary=VocabularyConfig(num_interests=args.interests),
                                                  boi=BoiConfig(on_unknown_items="skip")), progress=False)
    ray.shutdown()
    return root / "data", root / "boi", stats


def run_layout(nodes: int, cpus: int, data: Path, boi: Path, work: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from raylurm.boi.pipeline import BoiConfig, build_boi
    from raylurm.boi.vocabulary import Vocabulary
    from raylurm.train.config import TrainConfig
    from raylurm.train.fit import fit

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        started = time.perf_counter()
        summary = build_boi(data, Vocabulary.load(boi / "vocabulary"), work / "users", BoiConfig(on_unknown_items="skip"))
        boi_s = time.perf_counter() - started
        workers = nodes * cpus
        started = time.perf_counter()
        result = fit(boi, TrainConfig(method="lurm", epochs=1, num_workers=workers, batch_size=256 // workers),
                     name="bench", storage_path=str(work / "runs"))
        epoch_s = time.perf_counter() - started
        if result.error:
            raise RuntimeError(f"pretraining failed on {nodes} x {cpus}: {result.error}")
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"nodes": nodes, "cpus": cpus, "boi_s": boi_s, "epoch_s": epoch_s, "users": summary["users"],
            "events": summary["events"], "partitions": summary["num_partitions"],
            "epoch_users_per_s": result.metrics.get("users_per_second"), "epoch_seconds_inside": result.metrics.get("epoch_seconds")}


def main(args: argparse.Namespace) -> int:
    from raylurm.runtime import apply_local_ray_env

    apply_local_ray_env()
    machine = common.machine_info()
    with tempfile.TemporaryDirectory(prefix="raylurm-bench-cluster-") as tmp:
        root = Path(tmp)
        data, boi, _ = _prepare(root, args)
        input_bytes = sum(p.stat().st_size for p in (data / "events").glob("*.parquet"))
        output_bytes = sum(p.stat().st_size for p in (boi / "users").glob("*.parquet"))
        runs = []
        for nodes, cpus in LAYOUTS:
            runs.append(run_layout(nodes, cpus, data, boi, root / f"run-{nodes}x{cpus}"))
            print(json.dumps(runs[-1]), flush=True)
    base = runs[0]
    rows = [[f"{r['nodes']} node{'s' if r['nodes'] > 1 else ''} × {r['cpus']} CPU", r["partitions"], f"{r['boi_s']:.1f}",
             f"{r['events'] / r['boi_s']:,.0f}", f"**{base['boi_s'] / r['boi_s']:.2f}×**", f"{r['epoch_s']:.1f}",
             f"{r['epoch_seconds_inside']:.1f}", f"**{base['epoch_seconds_inside'] / r['epoch_seconds_inside']:.2f}×**"]
            for r in runs]
    body = "\n".join([
        *common.header(args, machine, ['torch', 'ray']),
        "",
        f"Synthetic log: {base['users']:,} users, {base['events']:,} events ({args.years} years; events Parquet "
        f"{input_bytes / 2**20:.1f} MiB, BoI rows {output_bytes / 2**20:.1f} MiB), D = {args.interests}. Simulated nodes: "
        "`ray.cluster_utils.Cluster`, a head with 0 CPUs plus the worker nodes, each its own raylet and object store. "
        "BoI: the Ray Data pipeline from the driver's call to the Parquet files on disk. Epoch: one LURM epoch "
        "(global batch 256, one Ray Train worker per CPU); wall = the `fit` call (worker start-up, dataset "
        "split, checkpoint included), inside = the epoch as the workers time it.",
        "",
        common.markdown_table(["layout", "shuffle partitions", "BoI build (s)", "events/s", "BoI speed-up",
                               "epoch wall (s)", "epoch inside (s)", "epoch speed-up"], rows),
        "",
        _reading(runs, input_bytes, output_bytes),
    ])
    common.publish(args, SECTION, body)
    return 0


def _reading(runs: list[dict], input_bytes: int, output_bytes: int) -> str:
    one, two_nodes, two_cpus = runs
    per_event_in = input_bytes / one["events"]
    return (
        f"Scale-out on this machine: BoI {one['boi_s'] / two_nodes['boi_s']:.2f}× and epoch "
        f"{one['epoch_seconds_inside'] / two_nodes['epoch_seconds_inside']:.2f}× from the second node (at most 2× here: "
        f"2 physical cores). The same 2 CPUs in one node give BoI {one['boi_s'] / two_cpus['boi_s']:.2f}× and epoch "
        f"{one['epoch_seconds_inside'] / two_cpus['epoch_seconds_inside']:.2f}×, so crossing nodes costs "
        f"{two_nodes['boi_s'] / two_cpus['boi_s']:.2f}× (BoI) and {two_nodes['epoch_seconds_inside'] / two_cpus['epoch_seconds_inside']:.2f}× "
        "(epoch) of the single-node time: the shuffle's blocks and DDP's all-reduce go through the object stores "
        "and gloo over loopback instead of shared memory."
        + (f" The BoI build does not speed up at this size ({one['events']:,} events, {one['boi_s']:.0f} s on one CPU): "
           "fixed per-stage costs (mapper actors starting with the vocabulary, shuffle scheduling, the Parquet "
           "write) dominate; `python -m raylurm.bench boi` measures its throughput at 10^6–10^7 events."
           if one["boi_s"] / two_cpus["boi_s"] < 1.2 else "")
        + "\n\n"
        f"At 100× the data ({100 * one['events']:,} events, ≈ {100 * input_bytes / 2**30:.1f} GiB of events Parquet at "
        f"{per_event_in:.1f} B/event, ≈ {100 * output_bytes / 2**30:.1f} GiB of BoI rows): the pipeline streams — read "
        "and map run block by block, so memory per mapper stays one block plus the vocabulary — and the one "
        "all-to-all step is the shuffle by user partition: `default_partitions` gives max(2 × CPUs, events / 2M) "
        f"partitions ({max(2 * 16, -(-100 * one['events'] // 2_000_000))} for 16 CPUs), so one reducer holds ≈ 2M "
        "mapped events (≈ 100–200 MB of Arrow) at a time, whatever the total. The object store must hold the "
        "shuffle's in-flight blocks (Ray Data spills to disk beyond it), so the cluster's aggregate object store "
        "should be a few times the mapped events of the partitions in flight, not the whole log. Training reads "
        "the BoI rows as a streaming split (materialised only when no CPU is left for reads), so its memory does "
        "not grow with the data either; epoch time scales with users / (workers × per-worker users/s)."
    )
