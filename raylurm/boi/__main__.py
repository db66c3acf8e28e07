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
from raylurm.boi.pipeline import BoiConfig
from raylurm.boi.vocabulary import VocabularyConfig
from raylurm.data import datasets
from raylurm.runtime import init_ray


def _utc_seconds(text: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date like 2001-01-01, got {text!r}") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp())


# the config fields that are flags (field -> flag), and what differs from the field on the command line
EMBEDDING_FLAGS = {"method": "--embedding", "dim": "--embedding-dim", "epochs": "--embedding-epochs",
                   "window_days": "--window-days"}
VOCABULARY_FLAGS = {"num_interests": "--num-interests", "assignment": "--assignment", "top_k": "--top-k"}
BOI_FLAGS = {"scales": "--scales", "max_sequence_length": "--max-sequence-length",
             "on_unknown_items": "--on-unknown-items", "since": "--since", "until": "--until",
             "num_partitions": "--num-partitions", "concurrency": "--workers"}
FLAG_EXTRA = {
    "method": {"help": "text encoder (eq. 1-3) or co-occurrence SVD"},
    "since": {"type": _utc_seconds, "help": "keep events at or after this UTC date"},
    "until": {"type": _utc_seconds, "help": "keep events before this UTC date"},
    "concurrency": {"help": "Ray Data workers per stage (default: autoscale)"},
}


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
    cli.add_config_arguments(g, ItemEmbeddingConfig, EMBEDDING_FLAGS, rename=EMBEDDING_FLAGS, extra=FLAG_EXTRA)
    g.add_argument("--embeddings", help="reuse item embeddings from this directory instead of training")
    g = p.add_argument_group("interest vocabulary (§3.1.2)")
    cli.add_config_arguments(g, VocabularyConfig, VOCABULARY_FLAGS, rename=VOCABULARY_FLAGS, extra=FLAG_EXTRA)
    g.add_argument("--vocabulary", help="reuse this vocabulary directory (skips embeddings and clustering)")
    g = p.add_argument_group("BoI sequences (eq. 4)")
    cli.add_config_arguments(g, BoiConfig, BOI_FLAGS, rename=BOI_FLAGS, extra=FLAG_EXTRA)
    g = p.add_argument_group("Ray")
    cli.add_ray_arguments(g)
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    s = sub.add_parser("summary", help="print the manifest summary of a BoI directory")
    s.add_argument("directory")
    return parser


def _config(args) -> BuildConfig:
    return BuildConfig(
        embedding=cli.config_from_args(args, ItemEmbeddingConfig, EMBEDDING_FLAGS, rename=EMBEDDING_FLAGS),
        vocabulary=cli.config_from_args(args, VocabularyConfig, VOCABULARY_FLAGS, rename=VOCABULARY_FLAGS),
        boi=cli.config_from_args(args, BoiConfig, BOI_FLAGS, rename=BOI_FLAGS),
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
