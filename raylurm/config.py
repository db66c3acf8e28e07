"""Typed configs, one style everywhere: :func:`typed_config` classes, built from dicts or ``key=value`` overrides.

Every config class is a frozen dataclass validated by pydantic::

    @typed_config
    class LURMConfig:
        num_anchors: Annotated[int, Field(ge=1, description="M, anchors of the multi-anchor module")] = 10  # §4.4

        @model_validator(mode="after")
        def _rules(self):  # cross-field rules, one validator per class
            ...
            return self

Field rules are ``Field`` constraints (``ge``, ``gt``, ``min_length``) and ``Literal`` choices; the
description is the field's ``--help`` text. ``dataclasses.fields``, ``replace`` and
``asdict`` work as on any dataclass (``replace`` validates again), and instances pickle and compare.

Types are checked strictly, as the CLI would: no ``True`` for an int, no ``"3"`` for 3, no ``2.0`` for an
int (an int is fine for a float), no NaN or infinity, no unknown field. Only the shapes JSON changes are
accepted back: a list for a tuple field and a dict for a nested config, so ``from_dict(cls, to_dict(c))``
round-trips through ``meta.json``. A bad value raises :class:`ConfigError` (a ``ValueError``) whose
message is one line naming the class, the field and the value.

:func:`from_dict`, :func:`apply_overrides` and :func:`to_dict` work on these and on plain dataclasses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Annotated, Any, Iterable, NamedTuple, TypeVar, Union

from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError, field_validator
from pydantic.dataclasses import dataclass as _pydantic_dataclass

T = TypeVar("T")

#: The pydantic settings of every typed config (see the module docstring).
PYDANTIC_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """An invalid config value; ``str(err)`` is one line, ``err.errors`` pydantic's list of errors."""

    errors: list | None = None


def typed_config(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen, validated (pydantic) dataclass with compact one-line errors."""
    hints = typing.get_type_hints(cls)  # the module's names (and the class body's: a field may hide a module)
    shapes = {name: shape for name in cls.__dict__.get("__annotations__", {})
              if (shape := _json_shape(hints[name])) is not None}
    if shapes:
        def from_json(value: Any, info) -> Any:
            """What JSON made of a field back to its type: a list to a tuple, a dict to a nested config."""
            shape = shapes[info.field_name]
            if shape is tuple:
                return tuple(value) if isinstance(value, list) else value
            return from_dict(shape, value) if isinstance(value, dict) else value

        cls._typed_config_from_json = field_validator(*shapes, mode="before")(from_json)
    cls = _pydantic_dataclass(frozen=True, config=PYDANTIC_CONFIG)(cls)
    validate = cls.__init__

    @functools.wraps(validate)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as err:
            raise _config_error(f"invalid {cls.__name__}", err) from None

    cls.__init__ = __init__
    return cls


def _json_shape(hint: Any) -> Any:
    """``tuple`` for a tuple field, the class for a nested dataclass field, else None."""
    hint = without_none(hint)
    if typing.get_origin(hint) is tuple:
        return tuple
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _config_error(title: str, err: ValidationError) -> ConfigError:
    error = ConfigError(f"{title}: {reasons(err)}")
    error.errors = err.errors(include_url=False, include_context=False)
    return error


def reasons(err: ValidationError) -> str:
    """pydantic's errors as one line: ``field=value: reason; ...`` (a rule's own message as it is)."""
    errors = err.errors(include_url=False)
    item_errors = {e["loc"][:-1] for e in errors if e["loc"] and isinstance(e["loc"][-1], int)}
    parts = []
    for e in errors:
        if e["type"] == "too_short" and e["loc"] in item_errors:  # "0 items after validation": the bad item says it
            continue
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        cause = e.get("ctx", {}).get("error")
        if e["type"] == "value_error" and cause is not None:  # a model_validator, a nested config, a text rule
            parts.append(f"{where}: {cause}" if where else str(cause))
        elif e["type"] == "missing" and e["loc"] and isinstance(e["loc"][-1], int):  # a fixed-length tuple
            parts.append(f"{where}: missing (got {len(e['input'])} items: {e['input']!r})")
        else:
            value = repr(e["input"])
            value = value if len(value) <= 80 else value[:77] + "..."
            message = e["msg"][:1].lower() + e["msg"][1:]
            parts.append(f"{where}={value}: {message}" if where else f"{value}: {message}")
    return "; ".join(parts)


def error_message(err: BaseException) -> str:
    """``str(err)``, except a pydantic ``ValidationError`` (multi-line, with URLs) becomes one line."""
    return f"invalid {err.title}: {reasons(err)}" if isinstance(err, ValidationError) else str(err)


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """``cls(**values)`` with a clear error for unknown keys (typos fail loudly).

    JSON turns tuples into lists: a list given for a field whose default is a tuple becomes a tuple
    again, so plain dataclasses round-trip through ``to_dict`` too (typed configs also do it themselves)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; valid: {sorted(defaults)}")
    return cls(**{k: tuple(v) if isinstance(v, list) and isinstance(defaults[k], tuple) else v for k, v in values.items()})


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
            changes[key] = parse_value(text.strip(), hints[key])
        except ValueError as err:
            raise ValueError(f"bad value for {key}: {err}") from None
    return dataclasses.replace(config, **changes)


def to_dict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


# ----------------------------------------------------------------------------- text values (--set, CLI flags)

_BOOL_TEXT = {"true": True, "1": True, "false": False, "0": False}


def parse_value(text: str, annotation: Any) -> Any:
    """Command-line ``text`` as a value of type ``annotation``, by pydantic's ``TypeAdapter`` (lax: ``"3"`` -> 3).

    The command line's own rules come first: ``none``/``null`` for an optional field, a tuple or list as
    ``a,b`` or JSON ``[a, b]``, ``true``/``false``/``1``/``0`` for a bool, ``int()`` syntax for an int
    (``2.5`` and ``1.0`` are no int), a JSON object for a nested config. Raises ``ValueError``.
    """
    inner = without_none(annotation)
    if inner is not annotation and text.lower() in ("none", "null"):
        return None
    try:
        return _text_adapter(inner).validate_python(text)
    except ValidationError as err:
        raise ValueError(reasons(err)) from None


@functools.lru_cache(maxsize=None)
def _text_adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(_text_type(annotation))


def _text_type(annotation: Any) -> Any:
    """``annotation`` with the command line's text rules attached as ``BeforeValidator`` s."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return Annotated[bool, BeforeValidator(_bool_text)]
    if annotation is int:
        return Annotated[int, BeforeValidator(lambda v: int(v) if isinstance(v, str) else v)]
    if origin in (tuple, list):
        items = tuple(a if a is Ellipsis else _text_type(a) for a in args) or (str, ...)
        container = origin[items] if origin is tuple else list[items[0]]
        return Annotated[container, BeforeValidator(_items_text)]
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return Annotated[annotation, BeforeValidator(functools.partial(_config_text, annotation))]
    return annotation


def _config_text(cls: type, value: Any) -> Any:
    """A JSON object -> the nested config ``cls`` (validated by it)."""
    if not isinstance(value, str):
        return value
    values = json.loads(value)
    if not isinstance(values, dict):
        raise ValueError(f"expected a JSON object of {cls.__name__} options, got {value!r}")
    return from_dict(cls, values)


def _bool_text(value: Any) -> Any:
    if isinstance(value, str):
        if value.lower() not in _BOOL_TEXT:
            raise ValueError(f"expected true/false, got {value!r}")
        return _BOOL_TEXT[value.lower()]
    return value


def _items_text(value: Any) -> Any:
    """``a,b`` or JSON ``[a, b]`` -> item texts (each item is then parsed as its type)."""
    if not isinstance(value, str):
        return value
    items = json.loads(value) if value.startswith("[") else value.split(",")
    if not isinstance(items, list):
        raise ValueError(f"expected a JSON list, got {value!r}")
    return [str(item).strip() for item in items]


def without_none(annotation: Any) -> Any:
    """``X`` for ``X | None`` (``Optional[X]``), else ``annotation``."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = tuple(a for a in typing.get_args(annotation) if a is not type(None))
        if len(args) < len(typing.get_args(annotation)):
            return args[0] if len(args) == 1 else Union[args]
    return annotation


# ----------------------------------------------------------------------------- introspection (CLI flags)


class Option(NamedTuple):
    """One field of a config class, as a command line shows it."""

    name: str
    annotation: Any  # the type, without Annotated constraints (``int | None``, ``tuple[str, ...]``, ``Literal[...]``)
    default: Any
    description: str | None
    choices: tuple | None  # the values of a ``Literal`` field (or of a tuple of them)


def options(cls: type) -> list[Option]:
    """The fields of a dataclass config (typed or plain), in order."""
    hints = typing.get_type_hints(cls)
    info = getattr(cls, "__pydantic_fields__", {})
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        described = info.get(f.name)
        description = described.description if described is not None else f.metadata.get("help")
        out.append(Option(f.name, hints[f.name], default, description, _choices(hints[f.name])))
    return out


def _choices(annotation: Any) -> tuple | None:
    annotation = without_none(annotation)
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        annotation = args[0] if args else annotation
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else None
