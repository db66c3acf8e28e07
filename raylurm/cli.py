"""Shared command-line plumbing: logging set-up and clean exits for user mistakes."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from raylurm.data.errors import DataError

USER_ERRORS = (DataError, FileNotFoundError, FileExistsError, ValueError)


def setup_logging(verbose: int = 0) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose >= 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def add_ray_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--address`` and ``--num-cpus``, the same on every command that starts or joins Ray."""
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray (default: all)")


def execute(run: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, call ``run(args)`` and turn user errors into a one-paragraph message and exit 2."""
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        return run(args) or 0
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
