"""``python -m raylurm.bench`` — raylurm against the tools a user would otherwise pick.

Each subcommand measures one stage, prints a Markdown table and replaces its own section of
BENCHMARKS.md (``--out``), recording the command, machine, date and versions with the figures.

Examples::

    python -m raylurm.bench boi                                  # 1e6 and 1e7 events, D = 1e5, all engines
    python -m raylurm.bench boi --events 1e5 --interests 1000 --engines polars,duckdb --no-report
    python -m raylurm.bench boi --help                           # what is measured, and how
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from raylurm import cli
from raylurm.bench.common import MachineWatch

#: Subcommand -> module. A module provides ``HELP`` (one line), ``add_arguments(parser)`` and
#: ``main(args) -> int``; registering a new benchmark is one line here. Building the parser imports
#: every benchmark module, so each imports the stages it measures (Ray, torch, raylurm's pipeline)
#: inside ``main``: ``--help`` stays instant and a child process loads only the engine it times.
SUBCOMMANDS: dict[str, str] = {
    "boi": "raylurm.bench.boi",
    "train": "raylurm.bench.train",
    "tune": "raylurm.bench.tune",
    "serve": "raylurm.bench.serve",
    "cluster": "raylurm.bench.cluster",
    "history": "raylurm.bench.history",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m raylurm.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def dispatch(args: argparse.Namespace) -> int:
        args.argv = argv  # the exact command, recorded in the report
        args.watch = MachineWatch().start()  # other processes' CPU during the run, recorded (raylurm.bench.common.publish)
        return importlib.import_module(SUBCOMMANDS[args.command]).main(args)

    return cli.execute(dispatch, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
