"""``python -m raylurm.data`` — prepare, generate, validate and describe event-log datasets.

Examples::

    python -m raylurm.data prepare ml-1m                 # bundled MovieLens-1M -> ~/.cache/raylurm
    python -m raylurm.data prepare --events ev.csv --items items.csv --users users.csv --out data/mine
    python -m raylurm.data validate ev.csv --items items.csv --on-bad-rows quarantine
    python -m raylurm.data synth --users 100000 --years 5 --seed 0 --out data/synth
    python -m raylurm.data stats ml-1m
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from raylurm import cli
from raylurm.data import datasets
from raylurm.data.io import atomic_dir
from raylurm.data.prepare import RawSource, data_home, log_quarantine, prepare
from raylurm.data.stats import dataset_stats, format_stats
from raylurm.data.synth import SynthConfig, generate
from raylurm.data.validate import POLICIES

log = logging.getLogger("raylurm.data")



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m raylurm.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{prepare,synth,validate,stats}")
    _add_prepare(sub)
    _add_synth(sub)
    _add_validate(sub)
    p = sub.add_parser("stats", help="users, items, events, time span, events-per-user percentiles")
    p.add_argument("dataset", help="a bundled name (ml-1m; prepared on first use) or a prepared dataset directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _add_sources(p: argparse.ArgumentParser, events_required: bool) -> None:
    p.add_argument("--events", required=events_required, help="events: Parquet file or directory, CSV/TSV, or RecBole .inter")
    p.add_argument("--items", help="items table (item_id, text, category); events with unknown items are bad rows")
    p.add_argument("--users", help="users table (user_id + label columns)")
    p.add_argument("--on-bad-rows", choices=POLICIES, default="error",
                   help="error: stop at the first bad row (default); quarantine: set bad rows aside with their reason")


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="validate raw tables (or a bundled dataset) into a prepared dataset")
    p.add_argument("name", nargs="?", help=f"a bundled or generated dataset: {', '.join(datasets.names())}")
    _add_sources(p, events_required=False)
    p.add_argument("--out", help=f"output directory (default for bundled data: {data_home()}/datasets/NAME)")


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate synthetic lifelong logs with drifting interests and labels",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cli.add_config_arguments(p, SynthConfig)
    p.add_argument("--out", help="output directory (default: DATA_HOME/datasets/synth-u<users>-y<years>-s<seed>)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check raw tables against the data contract; writes nothing but quarantine files")
    p.add_argument("file", nargs="?", help="the events table (the same as --events)")
    _add_sources(p, events_required=False)
    p.add_argument("--quarantine-dir", default="quarantine", help="where quarantined rows go (default: ./quarantine)")


def cmd_prepare(args) -> int:
    if args.name and args.events:
        raise ValueError("give either a bundled dataset name or --events, not both")
    if args.name:
        out = datasets.prepare_bundled(args.name, args.out, args.on_bad_rows)
    elif args.events:
        if not args.out:
            raise ValueError("--out is required with --events")
        manifest = prepare(RawSource(args.events, args.items, args.users, name=Path(args.out).name), args.out, args.on_bad_rows)
        out = Path(args.out)
        log_quarantine(out, manifest["quarantined"])
    else:
        raise ValueError(f"nothing to prepare: give a dataset name ({', '.join(datasets.names())}) or --events")
    print(format_stats(dataset_stats(out, progress=not args.quiet)))
    return 0


def cmd_synth(args) -> int:
    config = cli.config_from_args(args, SynthConfig)
    out = Path(args.out or datasets.default_dir(f"synth-u{config.users}-y{config.years}-s{config.seed}"))
    manifest = generate(config, out, progress=not (args.no_progress or args.quiet))
    log.info("wrote %s events for %s users to %s", f"{manifest['counts']['events']:,}", f"{manifest['counts']['users']:,}", out)
    return 0


def cmd_validate(args) -> int:
    if args.file and args.events and Path(args.file).resolve() != Path(args.events).resolve():
        raise ValueError(f"two events tables given: {args.file!r} and --events {args.events!r}")
    args.events = args.events or args.file
    if not args.events:
        raise ValueError("nothing to validate: give the events table (python -m raylurm.data validate EVENTS "
                         "[--items ITEMS] [--users USERS])")
    with tempfile.TemporaryDirectory(prefix="raylurm-validate-") as tmp:
        manifest = prepare(RawSource(args.events, args.items, args.users), Path(tmp) / "out", args.on_bad_rows)
        quarantined = manifest["quarantined"]
        if quarantined:
            with atomic_dir(args.quarantine_dir) as target:
                shutil.copytree(Path(tmp) / "out" / "quarantine", target, dirs_exist_ok=True)
    counts = manifest["counts"]
    print(f"valid: {counts['events']:,} events" + "".join(f", {counts[k]:,} {k}" for k in ("items", "users") if counts[k] is not None))
    for table, reasons in quarantined.items():
        print(f"quarantined {sum(reasons.values()):,} {table} row(s) -> {Path(args.quarantine_dir) / (table + '.parquet')}: {reasons}")
    return 0


def cmd_stats(args) -> int:
    stats = dataset_stats(datasets.resolve(args.dataset), progress=not args.quiet)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


COMMANDS = {"prepare": cmd_prepare, "synth": cmd_synth, "validate": cmd_validate, "stats": cmd_stats}


def main(argv: Sequence[str] | None = None) -> int:
    return cli.execute(lambda args: COMMANDS[args.command](args), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
