"""Column conversions to the contract's canonical types, with a per-row verdict.

Each converter takes a raw Arrow array and returns ``(array, bad)`` where ``bad`` is a numpy
object array holding a reason string for rows that cannot be converted (``None`` elsewhere).
Whole-column problems (a boolean id column, a list of timestamps) raise :class:`ColumnTypeError`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from raylurm.data.schema import MAX_TIMESTAMP, MIN_TIMESTAMP

INT_PATTERN = r"^\s*[-+]?\d+\s*$"
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
OUT_OF_RANGE = ("integer id outside the int64 range [-2^63, 2^63 - 1] in a column read as integers (its type is "
                "fixed by the first file's first rows: an id there beyond int64, or any non-integer id, makes it text)")
FLOAT_PATTERN = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


class ColumnTypeError(TypeError):
    """The whole column has a type the contract cannot accept."""


def _reasons(n: int) -> np.ndarray:
    return np.full(n, None, dtype=object)


def _mark(bad: np.ndarray, mask, reason: str) -> None:
    """Record ``reason`` for rows in ``mask`` that have no reason yet."""
    mask = np.asarray(mask, dtype=bool) & np.equal(bad, None)
    bad[mask] = reason


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _null_mask(arr: pa.Array) -> np.ndarray:
    mask = arr.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_floating(arr.type):
        mask |= pc.is_nan(arr).fill_null(True).to_numpy(zero_copy_only=False)
    if _is_string(arr.type):
        mask |= pc.equal(pc.utf8_trim_whitespace(arr), "").fill_null(True).to_numpy(zero_copy_only=False)
    return mask


def infer_id_type(arr: pa.Array) -> pa.DataType:
    """int64 for integer columns or strings that all look like integers, else string."""
    if arr.type == pa.uint64() and pc.any(pc.greater(arr, pa.scalar(INT64_MAX, arr.type))).as_py():
        return pa.string()  # uint64 ids beyond int64: identifiers, kept as their decimal text
    if pa.types.is_integer(arr.type):
        return pa.int64()
    if _is_string(arr.type):
        valid = arr.filter(pc.invert(pc.equal(pc.utf8_trim_whitespace(arr), "").fill_null(True)))
        looks_int = len(valid) > 0 and pc.all(pc.match_substring_regex(valid, INT_PATTERN)).as_py()
        # integer-looking ids beyond int64 (64-bit hashes written as text) are identifiers: read the column as text
        return pa.int64() if looks_int and not _outside_int64(pc.utf8_trim_whitespace(valid)).any() else pa.string()
    raise ColumnTypeError(f"has type {arr.type}; ids must be integers or strings")


def _outside_int64(trimmed: pa.Array) -> np.ndarray:
    """Rows of integer-looking text (already trimmed) whose value is outside int64; other rows False."""
    outside = np.zeros(len(trimmed), dtype=bool)
    lengths = pc.utf8_length(trimmed).fill_null(0).to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(lengths >= 19):  # int64 has 19 digits: only those rows can overflow
        text = trimmed[i].as_py()
        unsigned = text.lstrip("+-")
        if unsigned.isdigit():  # beyond 19 significant digits: out of range unconverted (int() refuses > 4300 digits)
            outside[i] = len(unsigned.lstrip("0")) > 19 or not INT64_MIN <= int(text) <= INT64_MAX
    return outside


def convert_id(arr: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast ids to ``target`` (int64 or string); null or empty ids are bad rows."""
    if not (pa.types.is_integer(arr.type) or _is_string(arr.type)):
        raise ColumnTypeError(f"has type {arr.type}; ids must be integers or strings")
    bad = _reasons(len(arr))
    _mark(bad, _null_mask(arr), "missing id")
    if pa.types.is_integer(target) and _is_string(arr.type):
        trimmed = pc.utf8_trim_whitespace(arr)
        ok = pc.match_substring_regex(trimmed, INT_PATTERN).fill_null(False).to_numpy(zero_copy_only=False)
        _mark(bad, ~ok, "expected an integer id, like the rest of this column")
        outside = ok & _outside_int64(trimmed)
        _mark(bad, outside, OUT_OF_RANGE)
        ok &= ~outside
        arr = pc.if_else(pa.array(ok), trimmed, pa.scalar(None, pa.string())).cast(pa.int64())
    elif arr.type == pa.uint64() and pa.types.is_integer(target):  # smaller unsigned types fit int64
        ok = pc.less_equal(arr, pa.scalar(INT64_MAX, arr.type)).fill_null(True).to_numpy(zero_copy_only=False)
        _mark(bad, ~ok, OUT_OF_RANGE)
        arr = pc.if_else(pa.array(ok), arr, pa.scalar(None, arr.type)).cast(pa.int64())
    else:
        arr = pc.utf8_trim_whitespace(arr.cast(pa.string())) if _is_string(target) else arr.cast(pa.int64())
    return arr, bad


def convert_timestamp(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """UTC seconds as int64. Accepts ints, floats (floored), Arrow timestamps, numeric or ISO-8601 text."""
    t = arr.type
    if pa.types.is_timestamp(t):
        secs = pc.cast(arr, pa.timestamp("s", tz=t.tz), safe=False).cast(pa.int64())
    elif pa.types.is_integer(t):
        secs = arr.cast(pa.int64())
    elif pa.types.is_floating(t):
        secs = pc.floor(pc.if_else(pc.is_nan(arr), pa.scalar(None, t), arr)).cast(pa.int64(), safe=False)
    elif _is_string(t):
        secs = _parse_timestamp_text(arr)
    else:
        raise ColumnTypeError(f"has type {t}; timestamps must be int seconds, Arrow timestamps or ISO-8601 text")
    bad = _reasons(len(arr))
    _mark(bad, _null_mask(arr), "missing timestamp")
    _mark(bad, secs.is_null().to_numpy(zero_copy_only=False), "unparsable timestamp (expected int seconds or ISO-8601)")
    values = secs.fill_null(MIN_TIMESTAMP).to_numpy()
    _mark(bad, values >= 10**11, "timestamp out of range (looks like milliseconds; timestamps are UTC seconds)")
    _mark(bad, (values < MIN_TIMESTAMP) | (values >= MAX_TIMESTAMP), "timestamp out of range (1970-01-01 .. 2100-01-01 UTC)")
    return secs, bad


def _parse_timestamp_text(arr: pa.Array) -> pa.Array:
    """Numeric strings as seconds; anything else through pandas' ISO-8601 parser (UTC if naive)."""
    trimmed = pc.utf8_trim_whitespace(arr)
    is_num = pc.match_substring_regex(trimmed, FLOAT_PATTERN).fill_null(False)
    num = pc.if_else(is_num, trimmed, pa.scalar(None, pa.string()))
    secs = pc.floor(num.cast(pa.float64())).cast(pa.int64(), safe=False)
    if pc.all(pc.or_(is_num, _as_bool(_null_mask(arr)))).as_py():
        return secs
    text = pd.Series(trimmed.to_pylist(), dtype=object).where(~is_num.to_numpy(zero_copy_only=False))
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    missing = parsed.isna().to_numpy()
    seconds = parsed.fillna(pd.Timestamp(0, tz="UTC")).dt.as_unit("s").astype("int64").to_numpy()
    iso = pa.array(seconds, mask=missing, type=pa.int64())
    return pc.coalesce(secs, iso)


def _as_bool(mask: np.ndarray) -> pa.Array:
    return pa.array(mask, type=pa.bool_())


def convert_string(arr: pa.Array, default: str | None = None) -> pa.Array:
    """Plain text; nulls (and empty cells, when a ``default`` is given) take the default."""
    if not (_is_string(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_dictionary(arr.type)):
        raise ColumnTypeError(f"has type {arr.type}; expected text")
    out = arr.cast(pa.string())
    if default is not None:
        out = pc.if_else(_as_bool(_null_mask(out)), pa.scalar(default), out)
    return out


def convert_category(arr: pa.Array, separator: str) -> pa.Array:
    """A list of category strings; text cells are split on ``separator``."""
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if not _is_string(t.value_type):
            raise ColumnTypeError(f"has type {t}; expected a list of strings")
        return arr.cast(pa.list_(pa.string()))
    if not _is_string(t):
        raise ColumnTypeError(f"has type {t}; expected a string or a list of strings")
    split = pc.split_pattern(pc.utf8_trim_whitespace(arr), separator)
    # Drop empty tokens produced by doubled separators or empty cells.
    flat = pc.utf8_trim_whitespace(pc.list_flatten(split))
    keep = pc.not_equal(flat, "")
    parents = pc.list_parent_indices(split)
    lengths = np.bincount(parents.filter(keep).to_numpy(), minlength=len(arr))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat.filter(keep))
