"""``python -m raylurm.serve``: serve the registry's current checkpoints over HTTP (Ray Serve).

Starts (or joins, with ``--address``/``RAY_ADDRESS``) Ray, binds Serve's HTTP proxy to
``--host``/``--port`` (127.0.0.1:8000 by default: loopback only unless asked), deploys the
application of :mod:`raylurm.serving.app` (the library behind this command) and serves until interrupted. The same application
runs from a Serve config file: ``serve run serve/config.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Sequence

from ray import serve

from raylurm import cli
from raylurm.runtime import init_ray
from raylurm.serving.app import deploy
from raylurm.serving.schemas import ServeArgs

log = logging.getLogger("raylurm.serve")


def build_parser() -> argparse.ArgumentParser:
    fields = ServeArgs.model_fields
    p = argparse.ArgumentParser(
        prog="python -m raylurm.serve", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve the best checkpoint of each method (the registry's current entries) over HTTP: "
                    "POST /v1/embed, /v1/similar-users, /v1/recommend; GET /v1/models, /healthz; OpenAPI at /docs.",
        epilog="Swap a model while serving: python -m raylurm.registry promote METHOD ENTRY "
               "(picked up within --reload-interval-s, or at once with POST /v1/reload).")
    p.add_argument("--host", default="127.0.0.1", help="address the HTTP proxy binds (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port")
    p.add_argument("--registry", help=fields["registry"].description)
    p.add_argument("--methods", nargs="+", help=fields["methods"].description)
    p.add_argument("--users", help=fields["users"].description)
    p.add_argument("--placement", default=fields["placement"].default, choices=["deployments", "ingress"],
                   help=fields["placement"].description)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=fields["device"].description)
    for name in ("num_replicas", "max_batch_size", "max_ongoing_requests", "max_events", "max_k", "max_body_bytes"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=fields[name].default, help=fields[name].description)
    for name in ("num_gpus", "batch_wait_timeout_s", "reload_interval_s"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=fields[name].default, help=fields[name].description)
    p.add_argument("--replica-cpus", type=float, default=fields["num_cpus"].default, help=fields["num_cpus"].description)
    p.add_argument("--index-factory", default=fields["index_factory"].default, help=fields["index_factory"].description)
    p.add_argument("--no-access-log", action="store_true", help="no per-request access log lines")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard with an embedded Ray (Serve's page)")
    cli.add_common_arguments(p)
    cli.add_ray_arguments(p)
    return p


def serve_args(args: argparse.Namespace) -> ServeArgs:
    """The application's typed arguments from the parsed command line."""
    return ServeArgs(registry=args.registry, methods=args.methods, users=args.users, placement=args.placement, device=args.device,
                     num_cpus=args.replica_cpus, num_gpus=args.num_gpus, num_replicas=args.num_replicas,
                     max_batch_size=args.max_batch_size, max_ongoing_requests=args.max_ongoing_requests,
                     access_log=not args.no_access_log, batch_wait_timeout_s=args.batch_wait_timeout_s,
                     max_events=args.max_events, max_k=args.max_k, max_body_bytes=args.max_body_bytes,
                     reload_interval_s=args.reload_interval_s, index_factory=args.index_factory)


def run(args: argparse.Namespace) -> int:
    """Start Ray and Serve, deploy the application, serve until SIGTERM or Ctrl-C."""
    app_args = serve_args(args)
    init_ray(args.address, num_cpus=args.num_cpus, include_dashboard=args.dashboard)
    deploy(app_args, args.host, args.port)
    log.info("serving %s on http://%s:%d (OpenAPI: /docs); Ctrl-C stops", app_args.methods or "every current entry",
             args.host, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    log.info("shutting down")
    serve.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.execute(run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
