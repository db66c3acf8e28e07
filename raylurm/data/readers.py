"""Readers for event-log tables: Parquet (file or directory), CSV/TSV and RecBole atomic files.

Every reader yields :class:`Chunk` objects — an Arrow record batch plus where it came from —
so validation can name the file and row of a bad value. Text formats are read with every
column as a string; typing happens in :mod:`raylurm.data.validate`, where a bad value can be
reported per row instead of failing the whole parse.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from raylurm.data.errors import DataError

ATOMIC_SUFFIXES = (".inter", ".item", ".user")
TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
BATCH_ROWS = 1 << 18


@dataclasses.dataclass
class MalformedLine:
    """A text line the parser could not split into the header's columns."""

    file: str
    line: int
    text: str
    reason: str
    column: str


@dataclasses.dataclass
class Chunk:
    """A batch of raw rows and where they came from.

    ``first_good_row`` counts the parsed rows of ``file`` before this batch. Text files may
    have had malformed lines skipped (quarantine policy); ``skipped_lines`` (sorted physical
    line numbers) lets :meth:`locate` map a batch row back to its true row and line.
    """

    file: str
    first_good_row: int
    batch: pa.RecordBatch
    header_lines: int = 0
    list_separator: str = "|"  # how a category list is written in this file's text cells
    skipped_lines: tuple[int, ...] = ()

    def locate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """1-based data rows (and physical lines for text files) of batch rows ``index``."""
        good = self.first_good_row + np.asarray(index, dtype=np.int64)  # 0-based among parsed rows
        if not self.header_lines:
            return good + 1, None
        skipped = np.asarray(self.skipped_lines, dtype=np.int64)
        base = self.header_lines + 1
        # Parsed rows before skipped line j: skipped[j] - base - j.
        shift = np.searchsorted(skipped - base - np.arange(len(skipped)), good, side="right")
        lines = good + base + shift
        return lines - self.header_lines, lines


def list_files(path: str | os.PathLike) -> list[Path]:
    """The data files behind ``path``: the file itself, or a directory's files in sorted order."""
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or directory", file=str(path))
    if path.is_file():
        return [path]
    suffixes = (".parquet", *TEXT_SUFFIXES, *ATOMIC_SUFFIXES)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes and not p.name.startswith("."))
    if not files:
        raise DataError(f"directory holds no {', '.join(suffixes)} files", file=str(path))
    return files


def iter_chunks(
    path: str | os.PathLike, batch_rows: int = BATCH_ROWS, malformed: list[MalformedLine] | None = None
) -> Iterator[Chunk]:
    """Yield raw chunks of the table at ``path`` (a file, or a directory of same-format files).

    A text line with the wrong number of fields raises :class:`DataError`, unless ``malformed``
    is a list: then the line is skipped and recorded there (quarantine policy).
    """
    for file in list_files(path):
        if file.suffix == ".parquet":
            yield from _parquet_chunks(file, batch_rows)
        elif file.suffix in ATOMIC_SUFFIXES:
            yield from _text_chunks(file, "\t", batch_rows, True, malformed)
        elif file.suffix in TEXT_SUFFIXES:
            yield from _text_chunks(file, TEXT_SUFFIXES[file.suffix], batch_rows, False, malformed)
        else:
            raise DataError(f"unsupported file type '{file.suffix}' (use .parquet, .csv, .tsv or RecBole .inter/.item/.user)", file=str(file))


def _parquet_chunks(file: Path, batch_rows: int) -> Iterator[Chunk]:
    try:
        reader = pq.ParquetFile(file)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"not a readable Parquet file ({err})", file=str(file)) from None
    row = 0
    for batch in reader.iter_batches(batch_size=batch_rows):
        yield Chunk(str(file), row, batch)
        row += batch.num_rows


def read_header(file: Path, delimiter: str) -> list[str]:
    with open(file, encoding="utf-8-sig", newline="") as fh:  # -sig: a spreadsheet's byte-order mark is not a name
        first = fh.readline().rstrip("\r\n")
    if not first:
        raise DataError("file is empty (expected a header line with column names)", file=str(file), row=0, line=1)
    return [name.strip().strip('"') for name in first.split(delimiter)]


def atomic_column_name(name: str) -> tuple[str, str | None]:
    """RecBole atomic headers are ``name:type`` (token, float, token_seq, float_seq)."""
    base, _, kind = name.partition(":")
    return base, (kind or None)


def _text_chunks(
    file: Path, delimiter: str, batch_rows: int, atomic: bool, malformed: list[MalformedLine] | None
) -> Iterator[Chunk]:
    header = read_header(file, delimiter)
    names = [atomic_column_name(n)[0] for n in header] if atomic else header
    if len(set(names)) != len(names):
        raise DataError(f"duplicate column names in header: {header}", file=str(file), row=0, line=1)
    bad: list[MalformedLine] = []

    def on_invalid(row) -> str:
        short = row.actual_columns < row.expected_columns
        column = names[row.actual_columns] if short else names[-1]
        detail = f"no value for column '{column}'" if short else f"extra field(s) after column '{column}'"
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns} ({detail})"
        bad.append(MalformedLine(str(file), row.number, row.text, reason, column))
        return "skip" if malformed is not None else "error"

    read = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=1 << 22, use_threads=False)
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char=False if atomic else '"', invalid_row_handler=on_invalid)
    convert = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names}, strings_can_be_null=False, quoted_strings_can_be_null=False
    )
    try:
        reader = pacsv.open_csv(file, read_options=read, parse_options=parse, convert_options=convert)
        good = 0
        for batch in reader:
            for start in range(0, batch.num_rows, batch_rows):
                part = batch.slice(start, batch_rows)
                skipped = tuple(b.line for b in bad)
                yield Chunk(str(file), good, part, 1, " " if atomic else "|", skipped)
                good += part.num_rows
    except pa.ArrowInvalid as err:
        if bad and malformed is None:
            first = bad[0]
            raise DataError(
                f"malformed line: {first.reason}; delimiter is {delimiter!r}", file=str(file),
                row=first.line - 1, line=first.line, column=first.column, value=first.text[:200],
            ) from None
        raise DataError(f"cannot parse as delimited text: {err}", file=str(file)) from None
    if malformed is not None:
        malformed.extend(bad)
