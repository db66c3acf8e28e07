"""``python -m raylurm.registry`` — list, show, promote and add the registry's entries.

Examples::

    python -m raylurm.registry list                       # every entry; * marks the one served per method
    python -m raylurm.registry show lurm                  # the current LURM entry: config, metrics, provenance
    python -m raylurm.registry promote lurm study.a1b2c3d4_00003.e4    # serve another entry
    python -m raylurm.registry add demo-lurm              # a pretraining run's checkpoint (no sweep needed)

The registry itself (layout, promotion rule) is :mod:`raylurm.registry`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from raylurm import cli
from raylurm.registry.store import Entry, Registry, add_checkpoint


def _line(entry: Entry, current: Entry | None) -> str:
    star = "*" if current is not None and current.name == entry.name else " "
    r = entry.record
    return (f"{star} {entry.method:<9} {entry.name:<44} {entry.metric} {entry.value:.4f}  epoch {r.get('epoch', '?'):<3} "
            f"split {r.get('split')}  sweep {r.get('experiment', '?')}  {r.get('registered', '')}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raylurm.registry", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(p)
    p.add_argument("--registry", help="registry directory (default: $RAYLURM_REGISTRY, else $RAYLURM_HOME/registry)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every entry of every method; * marks the served one")
    show = sub.add_parser("show", help="one entry as JSON (default: the method's current entry)")
    show.add_argument("method")
    show.add_argument("entry", nargs="?")
    promote = sub.add_parser("promote", help="serve ENTRY for METHOD (Serve picks it up on reload)")
    promote.add_argument("method")
    promote.add_argument("entry")
    add = sub.add_parser("add", help="register a pretraining checkpoint; served if its method has no current entry")
    add.add_argument("checkpoint", help="a run name (under $RAYLURM_HOME/runs), a run directory or a checkpoint directory")
    add.add_argument("--boi", help="the BoI directory it was pretrained on (default: its split's pretraining BoI)")
    add.add_argument("--name", help="entry name (default: <run>.e<epoch>)")
    add.add_argument("--promote", action="store_true", help="serve it even if its method has a current entry")
    return p


def run(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    if args.command == "list":
        methods = registry.methods()
        if not methods:
            print(f"registry {registry.root} is empty: run a sweep (python -m raylurm.tune tune_configs/study.py)")
            return 0
        for method in methods:
            current = registry.current(method)
            for entry in registry.entries(method):
                print(_line(entry, current))
        return 0
    if args.command == "show":
        entry = registry.get(args.method, args.entry) if args.entry else registry.current(args.method)
        if entry is None:
            raise FileNotFoundError(f"registry {registry.root}: no current {args.method} entry")
        print(json.dumps({"path": str(entry.path), **entry.record}, indent=2))
        return 0
    if args.command == "add":
        entry, served = add_checkpoint(registry, args.checkpoint, args.boi, args.name, args.promote)
        print(_line(entry, entry if served else registry.current(entry.method)))
        return 0
    entry = registry.promote(args.method, args.entry)
    print(_line(entry, entry))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.execute(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
