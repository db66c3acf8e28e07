"""``python -m raylurm.bench serve`` — HTTP serving latency and throughput vs a bare in-process forward.

The Serve application (``raylurm.serving.app``) is deployed on an embedded Ray with the registry's
current entries, bound to 127.0.0.1. For each method and concurrency level (1, 8, 32 by default),
``c`` client threads send ``POST /v1/embed`` requests in a closed loop — each request one real
user's events from the registry entry's pretraining data (ML-1M by default), over keep-alive
connections — until ``--requests`` have completed or ``--max-seconds`` have passed.

Baseline: what a user gets without Serve — the same entry loaded in this process
(:class:`raylurm.serving.model.ServedModel`), encoding the same ``c`` requests' events and running
them through the model as one batch (what ``@serve.batch`` does). Its latency is the median over
repetitions. Reported: p50/p99 latency, requests/s, and the overhead ratio served p50 / in-process
p50 of the same batch. Loopback only; the counts and times are bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from raylurm.bench import common
from raylurm.boi.manifest import boi_dataset_dir

HELP = "HTTP serving: p50/p99 and req/s at concurrency 1/8/32 vs a bare in-process forward of the same batch"
SECTION = "## Serving (python -m raylurm.bench serve)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", nargs="+", help="methods to measure (default: every method; their current registry entries)")
    parser.add_argument("--registry", help="registry root (default: $RAYLURM_REGISTRY or $RAYLURM_HOME/registry)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="client threads (requests in flight)")
    parser.add_argument("--requests", type=int, default=400, help="requests per (method, concurrency), at most")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound per (method, concurrency)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="@serve.batch size of the model deployments")
    parser.add_argument("--placements", nargs="+", choices=["deployments", "ingress"], default=["deployments", "ingress"],
                        help="where the models run (ServeArgs.placement), each measured in turn")
    parser.add_argument("--soak-seconds", type=float, default=0.0,
                        help="after the rows, a soak of this long at --soak-concurrency on the first method, per "
                             "placement: 5xx count and the replicas' memory over time (the issue's: 600)")
    parser.add_argument("--soak-concurrency", type=int, default=32, help="requests in flight during the soak")
    parser.add_argument("--no-access-log", action="store_true", help="deploy without Serve's per-request access log")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report file (section replaced)")
    common.add_report_arguments(parser)


def _payloads(served, method: str, count: int) -> list[bytes]:
    """``count`` real users' events from the entry's pretraining data (the dataset its BoI manifest names)."""
    import pyarrow.parquet as pq

    dataset = boi_dataset_dir(served.entry.path / "boi")
    if not (dataset / "events").exists() and served.users_dir:  # a registry copy of the BoI dir: its split's
        dataset = served.users_dir.parents[2] / "datasets" / "pretrain"
    events = pq.read_table(dataset / "events").to_pylist()
    by_user: dict = {}
    for e in events:
        by_user.setdefault(e["user_id"], []).append({"item_id": e["item_id"], "timestamp": e["timestamp"], "behavior": e["behavior"]})
    users = list(by_user)[:count]
    return [json.dumps({"method": method, "events": by_user[u]}).encode() for u in users]


_BUDGET = threading.Lock()
CONNECTION_ERROR = 0  # the status recorded for a request that got no HTTP answer


def _client(port: int, payloads: list[bytes], start: int, stride: int, stop_at: float, budget: list, out: list, errors: list,
            path: str = "/v1/embed"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = start
    while time.perf_counter() < stop_at:
        with _BUDGET:
            if budget[0] <= 0:
                break
            budget[0] -= 1
        body = payloads[i % len(payloads)] if payloads else None
        t0 = time.perf_counter()
        try:
            connection.request("POST" if body else "GET", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):  # reset, refused, timed out: counted, then a new connection
            status = CONNECTION_ERROR
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        elapsed = time.perf_counter() - t0
        if status == 200:
            out.append(elapsed)
        else:
            errors.append(status)
        i += stride
    connection.close()


def load(port: int, payloads: list[bytes], concurrency: int, requests: int, max_seconds: float, path: str = "/v1/embed") -> dict:
    latencies, errors, budget = [], [], [requests]
    stop_at = time.perf_counter() + max_seconds
    threads = [threading.Thread(target=_client, args=(port, payloads, k, concurrency, stop_at, budget, latencies, errors, path))
               for k in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {"n": len(lat), "errors": len(errors), "5xx": sum(e >= 500 for e in errors),
            "no answer": sum(e == CONNECTION_ERROR for e in errors),
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"), "rps": len(lat) / wall}


def replica_pids(app: str = "raylurm") -> dict[str, int]:
    """Deployment name -> pid of each alive replica of the Serve application ``app`` (one replica each here)."""
    from raylurm.ray_internals import actors

    prefix = f"ServeReplica:{app}:"
    return {a["class_name"][len(prefix):]: a["pid"] for a in actors()
            if a["class_name"].startswith(prefix) and a["state"] == "ALIVE"}


def soak(port: int, payloads: list[bytes], concurrency: int, seconds: float, pids: dict[str, int],
         sample_s: float = 10.0, warmup_s: float = 60.0) -> dict:
    """``concurrency`` closed-loop clients for ``seconds``, the replicas' RSS sampled every ``sample_s``.

    Memory growth per replica = its last sample over its first sample after ``warmup_s`` (allocator pools and
    batch buffers fill in the first minute; a leak keeps growing after it)."""
    import psutil

    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(load(port, payloads, concurrency, 10 ** 9, seconds)))
    started = time.perf_counter()
    worker.start()
    samples: list[tuple[float, dict[str, int]]] = []
    gone: set[str] = set()  # replicas whose process died during the soak (a crash Serve may have restarted)

    def sample() -> None:
        rss = {}
        for name, pid in pids.items():
            try:
                rss[name] = psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                gone.add(name)
        samples.append((time.perf_counter() - started, rss))

    while True:
        sample()
        worker.join(timeout=sample_s)
        if not worker.is_alive():
            break
    sample()
    after = [m for t, m in samples if t >= min(warmup_s, seconds / 2)] or [samples[-1][1]]
    alive = [n for n in pids if n not in gone]
    growth = {n: after[-1][n] / after[0][n] - 1 for n in alive}
    return {**result, "seconds": seconds, "samples": len(samples), "replicas_gone": sorted(gone),
            "rss_mb": {n: (after[0][n] / 2 ** 20, after[-1][n] / 2 ** 20) for n in alive}, "growth": growth}


def in_process(served, payloads: list[bytes], batch: int, repeats: int = 30) -> dict:
    """Encode ``batch`` requests' events and run them as one forward, in this process: median ms."""
    requests = [json.loads(p)["events"] for p in payloads]
    times = []
    for r in range(repeats):
        chosen = [requests[(r * batch + k) % len(requests)] for k in range(batch)]
        t0 = time.perf_counter()
        served.forward([served.rows(events)[0] for events in chosen])
        times.append(time.perf_counter() - t0)
    p50 = statistics.median(times) * 1000
    return {"p50": p50, "rps": batch / (p50 / 1000)}


def _reading(rows: list, floors: list) -> str:
    """What the tables say, computed from them (so a rerun cannot leave a stale conclusion)."""
    parts = []
    for placement in dict.fromkeys(r[0] for r in rows):
        ratios = [float(r[-1].strip("*×")) for r in rows if r[0] == placement]
        at_one = [float(r[-1].strip("*×")) for r in rows if r[0] == placement and r[3] == 1]
        fixed = [float(f[2]) for f in floors if f[0] == placement and "by user_id" in f[1]]
        cost = f"; fixed cost of a request without model work {min(fixed):.1f}–{max(fixed):.1f} ms" if fixed else ""
        at = f" (at concurrency 1: {min(at_one):.2f}–{max(at_one):.2f}×{cost})" if at_one else ""
        parts.append(f"*{placement}*: p50 ≤ 2× the in-process forward in {sum(r <= 2 for r in ratios)} of {len(ratios)} rows{at}")
    proxy = [float(f[2]) for f in floors if "healthz" in f[1]]
    return ("**Target p50 ≤ 2× the in-process forward at concurrency 1** — " + "; ".join(parts) + ". "
            f"Proxy + ingress alone (GET /healthz) cost {min(proxy):.1f}–{max(proxy):.1f} ms: with ML-1M's models encoding "
            "and running one user in a few ms, that floor decides the ratio at concurrency 1; under load the 2 cores are "
            "shared by the proxy, the ingress, the replicas and the client threads.")


def main(args: argparse.Namespace) -> int:
    import socket

    from ray import serve

    from raylurm.methods import METHODS
    from raylurm.registry import Registry
    from raylurm.runtime import init_ray
    from raylurm.serving.app import app_builder
    from raylurm.serving.model import ServedModel
    from raylurm.serving.schemas import ServeArgs

    args.methods = args.methods or list(METHODS)
    machine = common.machine_info()
    registry = Registry(args.registry)
    served = {m: ServedModel(registry.current(m)) if registry.current(m) else None for m in args.methods}
    missing = [m for m, s in served.items() if s is None]
    if missing:
        raise ValueError(f"registry {registry.root}: no current entry for {missing} (run a sweep first)")
    payloads = {m: _payloads(s, m, 256) for m, s in served.items()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init_ray()
    rows, floors, soaks = [], [], []
    for placement in args.placements:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(app_builder(ServeArgs(registry=str(registry.root), methods=args.methods, reload_interval_s=0, placement=placement,
                                        max_batch_size=args.max_batch_size, access_log=not args.no_access_log)),
                  name="raylurm", route_prefix="/")
        try:
            load(port, [], 1, 50, 10, "/healthz")
            floors.append([placement, "GET /healthz (proxy + ingress)", f"{load(port, [], 1, 200, 20, '/healthz')['p50']:.1f}"])
            for method in args.methods:
                load(port, payloads[method], 4, 40, 30)  # warm-up: models loaded, connections open
                if served[method].user_ids:  # an entry registered without its users has no user_id lookup
                    lookup = [json.dumps({"method": method, "user_id": served[method].user_ids[0]}).encode()]
                    floors.append([placement, f"POST /v1/embed {method} by user_id (no encoding or forward)",
                                   f"{load(port, lookup, 1, 200, 20)['p50']:.1f}"])
                for c in args.concurrency:
                    http_ = load(port, payloads[method], c, args.requests, args.max_seconds)
                    bare = in_process(served[method], payloads[method], c)
                    rows.append([placement, method, served[method].entry.name, c, http_["n"], http_["errors"],
                                 f"{http_['p50']:.1f}", f"{http_['p99']:.1f}", f"{http_['rps']:.0f}", f"{bare['p50']:.1f}",
                                 f"{bare['rps']:.0f}", f"**{http_['p50'] / bare['p50']:.2f}×**"])
                    print(rows[-1], flush=True)
            if args.soak_seconds > 0:
                method = args.methods[0]
                got = soak(port, payloads[method], args.soak_concurrency, args.soak_seconds, replica_pids())
                memory = "; ".join([*(f"{n} {a:.0f} → {b:.0f} MB ({got['growth'][n]:+.1%})" for n, (a, b) in got["rss_mb"].items()),
                                    *(f"{n}: process gone during the soak" for n in got["replicas_gone"])])
                met = (got["5xx"] == 0 and got["no answer"] == 0 and not got["replicas_gone"]
                       and max(got["growth"].values(), default=0.0) <= 0.10)
                soaks.append([placement, method, args.soak_concurrency, f"{got['seconds']:.0f}", got["n"], got["5xx"],
                              got["no answer"], got["errors"] - got["5xx"] - got["no answer"], f"{got['p50']:.1f}",
                              f"{got['p99']:.1f}", f"{got['rps']:.0f}", memory, "yes" if met else "**no**"])
                print(soaks[-1], flush=True)
        finally:
            serve.shutdown()
    body = "\n".join([
        *common.header(args, machine, ['torch', 'ray', 'fastapi']),
        "",
        "`POST /v1/embed` with one real user's events per request (the entry's pretraining users, "
        f"{len(next(iter(payloads.values())))} distinct payloads in rotation), closed-loop clients on keep-alive loopback "
        f"connections, at most {args.requests} requests or {args.max_seconds:.0f} s per row; `@serve.batch` up to "
        f"{args.max_batch_size}; Serve access log {'off' if args.no_access_log else 'on (the default)'}. "
        "In-process: the same entry in the client's process, encoding the same c requests and "
        "running them as one batch (median of 30). Ratio = served p50 / in-process p50.",
        "",
        "Placement (`ServeArgs.placement`): *deployments* — proxy → ingress → the method's model replica (one "
        "deployment per method, the default); *ingress* — proxy → ingress, the models loaded in the ingress replica.",
        "",
        common.markdown_table(["placement", "method", "entry", "concurrency", "requests", "errors", "p50 (ms)", "p99 (ms)",
                               "req/s", "in-process p50 (ms)", "in-process req/s", "p50 ratio"], rows),
        "",
        "Fixed cost of the HTTP path, sequential requests (p50, ms) — what the served p50 at concurrency 1 pays on top "
        "of the encoding and forward:",
        "",
        common.markdown_table(["placement", "request", "p50 (ms)"], floors),
        "",
        _reading(rows, floors),
        "",
        *([f"Soak: {args.soak_concurrency} requests in flight for {args.soak_seconds:.0f} s on loopback, the first method; "
           "replica memory (RSS) from its first sample after a minute's warm-up to its last (target: zero 5xx, every "
           "request answered, no replica process lost, growth ≤ 10 %):", "",
           common.markdown_table(["placement", "method", "concurrency", "seconds", "requests", "5xx", "no answer", "other errors",
                                  "p50 (ms)", "p99 (ms)", "req/s", "replica memory", "target met"], soaks), ""] if soaks else []),
        "Client threads, the HTTP proxy, the ingress and the model replica share the machine's cores, so at high "
        "concurrency the served figures include the load generator's own CPU use.",
    ])
    common.publish(args, SECTION, body)
    return 0
