"""Typed configs: dataclasses built from dicts or ``key=value`` overrides; unknown keys raise."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Iterable, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """``cls(**values)`` with a clear error for unknown keys (typos fail loudly)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; valid: {sorted(names)}")
    return cls(**values)


def _parse(text: str, annotation: Any) -> Any:
    """Parse a command-line value for a field annotated as ``annotation`` (JSON for tuples/lists)."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true/false, got {text!r}")
        return text.lower() in ("true", "1")
    if annotation in (int, float, str):
        return annotation(text)
    if origin in (tuple, list):
        items = text.split(",") if not text.startswith("[") else json.loads(text)
        inner = typing.get_args(annotation)[0] if typing.get_args(annotation) else str
        parsed = [_parse(str(i).strip(), inner) for i in items]
        return tuple(parsed) if origin is tuple else parsed
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and text.lower() in ("none", "null"):
        return None
    return _parse(text, args[0]) if args else json.loads(text)


def apply_overrides(config: T, overrides: Iterable[str]) -> T:
    """Return ``config`` with ``["num_anchors=4", "scales=month,year"]`` applied (typed, validated)."""
    hints = typing.get_type_hints(type(config))
    changes = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in hints:
            raise ValueError(f"bad override {item!r}: expected key=value with key in {sorted(hints)}")
        try:
            changes[key] = _parse(text.strip(), hints[key])
        except (ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"bad value for {key}: {err}") from None
    return dataclasses.replace(config, **changes)


def to_dict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))
