"""Validation of event-log tables against the contract, with an explicit bad-row policy.

``error`` (default): the first bad row raises :class:`DataError` naming file, row and column.
``quarantine``: bad rows are written, with their reason, to ``<dir>/<table>.parquet`` and
counted; everything else goes on. Nothing is ever dropped silently.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raylurm.data import convert
from raylurm.data.errors import DataError
from raylurm.data.readers import Chunk, MalformedLine, iter_chunks
from raylurm.data.schema import DEFAULT_BEHAVIOR, EVENTS, TableSpec

log = logging.getLogger(__name__)

POLICIES = ("error", "quarantine")
QUARANTINE_SCHEMA = pa.schema(
    [("_file", pa.string()), ("_row", pa.int64()), ("_line", pa.int64()), ("_column", pa.string()),
     ("_reason", pa.string()), ("_raw", pa.string())]
)
Transform = Callable[[Chunk], Chunk]


def _hint(bad_rows: int) -> str:
    more = f"{bad_rows - 1} more bad row(s) follow in this batch. " if bad_rows > 1 else ""
    return more + "Fix the input, or pass --on-bad-rows quarantine to set bad rows aside with their reasons"


class Quarantine:
    """Side files of rejected rows, one Parquet file per table, each row with its reason."""

    def __init__(self, directory: Path | None, policy: str):
        if policy not in POLICIES:
            raise ValueError(f"on_bad_rows must be one of {POLICIES}, got {policy!r}")
        self.directory, self.policy = directory, policy
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self._writers: dict[str, pq.ParquetWriter] = {}

    def reject(self, table: str, rows: list[dict]) -> None:
        """Raise for the first row (policy ``error``) or append all rows to the side file."""
        if not rows:
            return
        if self.policy == "error":
            r = rows[0]
            raise DataError(r["_reason"], file=r["_file"], row=r["_row"], line=r["_line"], column=r["_column"], value=r.pop("_value", None),
                            hint=_hint(len(rows)))
        for r in rows:
            r.pop("_value", None)
            self.counts[table][r["_reason"].split(" (")[0]] += 1
        self._writer(table).write_table(pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA))

    def _writer(self, table: str) -> pq.ParquetWriter:
        if table not in self._writers:
            if self.directory is None:
                raise ValueError("quarantine policy needs a quarantine directory")
            self.directory.mkdir(parents=True, exist_ok=True)
            self._writers[table] = pq.ParquetWriter(self.directory / f"{table}.parquet", QUARANTINE_SCHEMA)
        return self._writers[table]

    def close(self) -> dict[str, dict[str, int]]:
        for w in self._writers.values():
            w.close()
        return {t: dict(c) for t, c in self.counts.items()}

    def reject_malformed(self, table: str, lines: list[MalformedLine]) -> None:
        self.reject(table, [dict(_file=m.file, _row=m.line - 1, _line=m.line, _column=m.column,
                                 _reason=f"malformed line: {m.reason}", _raw=m.text, _value=m.text[:200]) for m in lines])


@dataclasses.dataclass
class TableConverter:
    """Converts raw chunks of one table to canonical Arrow, sending bad rows to the quarantine."""

    spec: TableSpec
    quarantine: Quarantine
    id_types: dict[str, pa.DataType] = dataclasses.field(default_factory=dict)
    known_items: pa.Array | None = None  # events only: the item ids of the items table
    track_rows: bool = False  # add __file/__row/__line columns (for duplicate-key reports)

    def __call__(self, chunk: Chunk) -> pa.Table:
        batch = chunk.batch
        self._check_columns(chunk)
        n = batch.num_rows
        bad_reason, bad_column = np.full(n, None, dtype=object), np.full(n, None, dtype=object)
        columns = {}
        for col in self.spec.columns:
            if col.name in batch.schema.names:
                columns[col.name] = self._convert(chunk, col.name, col.kind, bad_reason, bad_column)
        if self.spec is EVENTS:
            self._check_items(columns, bad_reason, bad_column)
            columns.setdefault("behavior", pa.array([DEFAULT_BEHAVIOR] * n, pa.string()))
        if self.spec.keep_extra_columns:
            columns.update({name: batch.column(name) for name in batch.schema.names if name not in columns})
        if self.track_rows:
            rows, lines = chunk.locate(np.arange(n))
            columns.update(__file=pa.array([chunk.file] * n, pa.string()), __row=pa.array(rows),
                           __line=pa.array(lines if lines is not None else [None] * n, pa.int64()))
        table = pa.table(columns)
        bad = np.not_equal(bad_reason, None)
        if bad.any():
            self.quarantine.reject(self.spec.name, self._rejected_rows(chunk, np.flatnonzero(bad), bad_reason, bad_column))
            table = table.filter(pa.array(~bad))
        return table

    def _check_columns(self, chunk: Chunk) -> None:
        names = chunk.batch.schema.names
        missing = [c for c in self.spec.required if c not in names]
        if missing:
            raise DataError(
                f"missing required column(s) {missing} for the {self.spec.name} table (found {names})",
                file=chunk.file, column=missing[0], hint="See the data contract in the README")

    def _convert(self, chunk: Chunk, name: str, kind: str, bad_reason: np.ndarray, bad_column: np.ndarray) -> pa.Array:
        arr = chunk.batch.column(name)
        try:
            if kind == "id":
                target = self.id_types.setdefault(name, convert.infer_id_type(arr))
                out, bad = convert.convert_id(arr, target)
            elif kind == "timestamp":
                out, bad = convert.convert_timestamp(arr)
            elif kind == "category":
                return convert.convert_category(arr, chunk.list_separator)
            else:
                return convert.convert_string(arr, DEFAULT_BEHAVIOR if name == "behavior" else None)
        except convert.ColumnTypeError as err:
            raise DataError(f"column {err}", file=chunk.file, column=name) from None
        fresh = np.not_equal(bad, None) & np.equal(bad_reason, None)
        bad_reason[fresh], bad_column[fresh] = bad[fresh], name
        return out

    def _check_items(self, columns: dict, bad_reason: np.ndarray, bad_column: np.ndarray) -> None:
        if self.known_items is None:
            return
        ids = columns["item_id"]
        present = pc.is_in(ids, value_set=self.known_items).fill_null(True).to_numpy(zero_copy_only=False)
        fresh = ~present & np.equal(bad_reason, None)
        bad_reason[fresh], bad_column[fresh] = "item_id not found in the items table", "item_id"

    def _rejected_rows(self, chunk: Chunk, index: np.ndarray, bad_reason: np.ndarray, bad_column: np.ndarray) -> list[dict]:
        rows, lines = chunk.locate(index)
        raw = chunk.batch.take(pa.array(index)).to_pylist()
        out = []
        for i, row, line, values in zip(index, rows, lines if lines is not None else [None] * len(index), raw):
            column = bad_column[i]
            out.append(dict(_file=chunk.file, _row=int(row), _line=None if line is None else int(line), _column=column,
                            _reason=bad_reason[i], _raw=json.dumps(values, default=str), _value=values.get(column)))
        return out


def iter_tables(path, converter: TableConverter, quarantine: Quarantine, transform: Transform | None = None,
                batch_rows: int = 1 << 18) -> Iterator[pa.Table]:
    """Stream canonical tables from ``path``; malformed text lines follow the policy too."""
    malformed: list[MalformedLine] | None = [] if quarantine.policy == "quarantine" else None
    for chunk in iter_chunks(path, batch_rows, malformed):
        yield converter(transform(chunk) if transform else chunk)
    if malformed:
        quarantine.reject_malformed(converter.spec.name, malformed)


def load_keyed_table(path, converter: TableConverter, quarantine: Quarantine, transform: Transform | None = None) -> pa.Table:
    """Read a small table whole (items, users) and reject rows whose key repeats an earlier row."""
    converter.track_rows = True
    tables = list(iter_tables(path, converter, quarantine, transform))
    if not tables or sum(t.num_rows for t in tables) == 0:
        raise DataError(f"the {converter.spec.name} table has no valid rows", file=str(path))
    table = _drop_duplicate_keys(pa.concat_tables(tables, promote_options="permissive"), converter.spec, quarantine)
    return table.drop_columns(["__file", "__row", "__line"])


def _drop_duplicate_keys(table: pa.Table, spec: TableSpec, quarantine: Quarantine) -> pa.Table:
    keys = table.column(spec.key).to_pandas()
    dup = keys.duplicated(keep="first").to_numpy()
    if not dup.any():
        return table
    first = keys[~dup]
    first_row = dict(zip(first, table.column("__row").to_numpy()[~dup]))
    files, rows, lines = (table.column(c).to_pylist() for c in ("__file", "__row", "__line"))
    clean = table.drop_columns(["__file", "__row", "__line"])
    rejected = [dict(_file=files[i], _row=rows[i], _line=lines[i], _column=spec.key,
                     _reason=f"duplicate {spec.key} (first seen at row {first_row[keys[i]]})",
                     _raw=json.dumps(clean.slice(i, 1).to_pylist()[0], default=str), _value=keys[i])
                for i in np.flatnonzero(dup)]
    quarantine.reject(spec.name, rejected)
    return table.filter(pa.array(~dup))
