"""Shared command-line plumbing: logging set-up, flags generated from typed configs, clean exits for user mistakes."""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from raylurm.config import error_message, options, parse_value, without_none
from raylurm.data.errors import DataError

T = TypeVar("T")

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


def add_config_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                         fields: Iterable[str] | None = None, *, rename: Mapping[str, str] | None = None,
                         extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """One ``--kebab-case`` flag per field of the config class ``cls`` (all fields, or ``fields`` in that order).

    The type comes from the annotation (``X | None``: ``X``; a ``Literal``: its choices; a tuple: ``a,b``;
    a bool: a switch, ``--no-x`` too when the default is true), the default from the field and the help from
    its description, followed by the default. ``rename`` gives a field another flag (``{"concurrency":
    "--workers"}``); ``extra`` adds or replaces ``add_argument`` keywords of a field (``help``, ``type``,
    ``choices``...). :func:`config_from_args` builds the config back from the parsed arguments.
    """
    known = {option.name: option for option in options(cls)}
    names = list(known) if fields is None else list(fields)
    missing = [name for name in names if name not in known]
    if missing:
        raise ValueError(f"{cls.__name__} has no field(s) {missing}")
    for name in names:
        option, flag = known[name], _flag(name, rename)
        annotation = without_none(option.annotation)
        kwargs: dict[str, Any] = {"dest": _dest(flag), "default": option.default}
        text = (option.description or name.replace("_", " ")).replace("%", "%%")
        if annotation is bool:  # a switch; --no-x too when it is on by default
            kwargs["action"] = argparse.BooleanOptionalAction if option.default else "store_true"
            if option.default:
                text += " (default: %(default)s)"
        else:
            if typing.get_origin(annotation) in (tuple, list):
                kwargs["type"] = _sequence_type(annotation, option.choices)
                text += f" (comma-separated: {','.join(map(str, option.choices))})" if option.choices else \
                    " (comma-separated)"
            elif option.choices:
                kwargs["choices"], kwargs["type"] = list(option.choices), type(option.choices[0])
            elif annotation in (int, float, str):
                kwargs["type"] = annotation
            else:
                kwargs["type"] = _text_type(annotation)
            if option.default is not None:
                text += " (default: %(default)s)"
        kwargs["help"] = text
        kwargs.update((extra or {}).get(name, {}))
        parser.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, cls: type[T], fields: Iterable[str] | None = None, *,
                     rename: Mapping[str, str] | None = None, **values: Any) -> T:
    """``cls`` from the flags :func:`add_config_arguments` added (same ``fields`` and ``rename``) plus ``values``."""
    names = [option.name for option in options(cls)] if fields is None else list(fields)
    return cls(**{name: getattr(args, _dest(_flag(name, rename))) for name in names}, **values)


def _flag(name: str, rename: Mapping[str, str] | None) -> str:
    return (rename or {}).get(name) or "--" + name.replace("_", "-")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _sequence_type(annotation: Any, choices: tuple | None) -> Callable[[str], Any]:
    """``a,b`` (or JSON ``[a, b]``) -> a tuple of the item type; argparse reports a bad item."""
    expected = f"values from {','.join(map(str, choices))}" if choices else "values"

    def parse(text: str) -> Any:
        if not text.startswith("["):  # "month," is ("month",)
            text = ",".join(part for part in text.split(",") if part.strip())
        try:
            return parse_value(text, annotation)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {expected}, got {text!r}") from None

    return parse


def _text_type(annotation: Any) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return parse_value(text, annotation)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def execute(run: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, call ``run(args)`` and turn user errors into a one-paragraph message and exit 2."""
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        return run(args) or 0
    except USER_ERRORS as err:
        print(f"error: {error_message(err)}", file=sys.stderr)  # pydantic's multi-line errors as one line
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
