"""``python -m raylurm.boi`` — Bag-of-Interests sequences (LURM §3.1) on Ray Data.

Examples::

    python -m raylurm.boi build --events ml-1m --out boi/ml-1m
    python -m raylurm.boi build --events data/synth --out boi/synth --num-interests 100000 \\
        --scales month,year --assignment soft --embedding cooccurrence
    python -m raylurm.boi summary boi/ml-1m

``--events`` is a prepared dataset (``python -m raylurm.data prepare``) or a bundled name.
Without ``--address`` (or ``RAY_ADDRESS``) an embedded local Ray is started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Sequence

from raylurm import cli
from raylurm.boi.build import BuildConfig, build, load_boi_manifest
from raylurm.boi.embeddings import ItemEmbeddingConfig
from raylurm.boi.pipeline import SCALES, UNKNOWN_ITEM_POLICIES, BoiConfig
from raylurm.boi.vocabulary import ASSIGNMENTS, VocabularyConfig
from raylurm.data import datasets
from raylurm.runtime import init_ray


def _utc_seconds(text: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date like 2001-01-01, got {text!r}") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp())


def _scales(text: str) -> tuple[str, ...]:
    scales = tuple(s.strip() for s in text.split(",") if s.strip())
    if not scales or set(scales) - set(SCALES):
        raise argparse.ArgumentTypeError(f"scales are a comma-separated subset of {','.join(SCALES)}")
    return scales


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m raylurm.boi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="item embeddings -> interest vocabulary -> BoI sequences",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--events", required=True, help="prepared dataset directory or bundled name (ml-1m)")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    g = p.add_argument_group("item embeddings (§3.1.1)")
    g.add_argument("--embedding", choices=["text", "cooccurrence"], default="text", help="text encoder (eq. 1-3) or co-occurrence SVD")
    g.add_argument("--embedding-dim", type=int, default=ItemEmbeddingConfig.dim, help="embedding width")
    g.add_argument("--embedding-epochs", type=int, default=ItemEmbeddingConfig.epochs, help="text encoder epochs")
    g.add_argument("--window-days", type=float, default=ItemEmbeddingConfig.window_days, help="β: positive pairs are < β days apart")
    g.add_argument("--embeddings", help="reuse item embeddings from this directory instead of training")
    g = p.add_argument_group("interest vocabulary (§3.1.2)")
    g.add_argument("--num-interests", type=int, default=None, help="D (default: items // 10, clipped to 8..100000)")
    g.add_argument("--assignment", choices=ASSIGNMENTS, default="hard", help="one interest per item, or top-k weighted")
    g.add_argument("--top-k", type=int, default=VocabularyConfig.top_k, help="interests per item for soft assignment")
    g.add_argument("--vocabulary", help="reuse this vocabulary directory (skips embeddings and clustering)")
    g = p.add_argument_group("BoI sequences (eq. 4)")
    g.add_argument("--scales", type=_scales, default=SCALES, help="comma-separated: month,year")
    g.add_argument("--max-sequence-length", type=int, default=BoiConfig.max_sequence_length, help="raw sequence cap (most recent)")
    g.add_argument("--on-unknown-items", choices=UNKNOWN_ITEM_POLICIES, default="error", help="events whose item has no interest")
    g.add_argument("--since", type=_utc_seconds, help="keep events at or after this UTC date")
    g.add_argument("--until", type=_utc_seconds, help="keep events before this UTC date")
    g.add_argument("--num-partitions", type=int, help="shuffle partitions (default: from data size and CPUs)")
    g.add_argument("--workers", type=int, help="Ray Data workers per stage (default: autoscale)")
    g = p.add_argument_group("Ray")
    cli.add_ray_arguments(g)
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    s = sub.add_parser("summary", help="print the manifest summary of a BoI directory")
    s.add_argument("directory")
    return parser


def _config(args) -> BuildConfig:
    return BuildConfig(
        embedding=ItemEmbeddingConfig(method=args.embedding, dim=args.embedding_dim, epochs=args.embedding_epochs,
                                      window_days=args.window_days),
        vocabulary=VocabularyConfig(num_interests=args.num_interests, assignment=args.assignment, top_k=args.top_k),
        boi=BoiConfig(scales=args.scales, max_sequence_length=args.max_sequence_length, on_unknown_items=args.on_unknown_items,
                      since=args.since, until=args.until, num_partitions=args.num_partitions, concurrency=args.workers),
    )


def format_summary(manifest: dict) -> str:
    s = manifest["summary"]
    lines = [f"users             {s['users']:,}", f"events            {s['events']:,}  (skipped: {s['skipped_events']:,})",
             f"interests (D)     {manifest['num_interests']:,}  vocabulary hash {manifest['vocabulary_hash']}"]
    for key, value in s.items():
        if isinstance(value, dict):
            lines.append(f"{key:<26}" + "  ".join(f"{k}={v:g}" for k, v in value.items()))
    return "\n".join(lines)


def cmd_build(args) -> int:
    config = _config(args)
    dataset = datasets.resolve(args.events)
    if args.no_progress or args.quiet:
        import ray.data  # Ray only once a build runs: `summary` and `--help` stay instant

        ray.data.DataContext.get_current().enable_progress_bars = False
    init_ray(args.address, num_cpus=args.num_cpus)
    manifest = build(dataset, args.out, config, args.embeddings, args.vocabulary, progress=not (args.no_progress or args.quiet))
    print(format_summary(manifest))
    return 0


def cmd_summary(args) -> int:
    manifest = load_boi_manifest(args.directory)
    print(format_summary(manifest) if not args.verbose else json.dumps(manifest, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.execute(lambda a: {"build": cmd_build, "summary": cmd_summary}[a.command](a), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
