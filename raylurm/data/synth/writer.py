"""Writing: the background Parquet sink, the block loop, the manifest and :func:`generate`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from raylurm.data.io import atomic_dir
from raylurm.data.schema import MAX_TIMESTAMP, MIN_TIMESTAMP, SCHEMA_VERSION
from raylurm.data.synth.config import (
    _EVENTS_SCHEMA,
    BLOCK_USERS,
    TRUTH_SCHEMA,
    USERS_SCHEMA,
    SynthConfig,
    validate_config,
)
from raylurm.data.synth.users import _block
from raylurm.data.synth.world import _items_table, _World, _world

logger = logging.getLogger(__name__)

_BUFFER_BYTES = 32 << 20  # bytes buffered per output file before a write (= one row group)


# ----------------------------------------------------------------------------- writing


class _ParquetSink:
    """Buffered Parquet writer; rolls over to a new file every ``max_rows`` rows if given.

    Writes run on ``executor`` (one background thread, so generation and encoding overlap);
    at most one write per sink is in flight, which bounds memory.
    """

    def __init__(
        self,
        path_of: Callable[[int], Path],
        schema: pa.Schema,
        executor: ThreadPoolExecutor,
        max_rows: int | None = None,
    ):
        self._path_of, self._schema, self._max_rows = path_of, schema, max_rows
        self._executor = executor
        self._pending: Future | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._files = 0
        self._in_file = 0

    def write(self, table: pa.Table) -> None:
        self._buffer.append(table)
        self._buffered += table.nbytes
        if self._buffered >= _BUFFER_BYTES:
            self._submit()

    def _submit(self) -> None:
        self._wait()
        table = pa.concat_tables(self._buffer)
        self._buffer, self._buffered = [], 0
        self._pending = self._executor.submit(self._write_now, table)

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def _write_now(self, table: pa.Table) -> None:
        done = 0
        while done < table.num_rows:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._path_of(self._files), self._schema)
                self._files, self._in_file = self._files + 1, 0
            room = table.num_rows - done if self._max_rows is None else self._max_rows - self._in_file
            chunk = table.slice(done, room)
            self._writer.write_table(chunk, row_group_size=chunk.num_rows)
            done, self._in_file = done + chunk.num_rows, self._in_file + chunk.num_rows
            if self._in_file == self._max_rows:
                self._writer.close()
                self._writer = None

    def close(self) -> None:
        """Flush the buffer and close; writes an empty file if nothing was ever written."""
        if self._buffer:
            self._submit()
        self._wait()
        if self._files == 0:
            pq.write_table(self._schema.empty_table(), self._path_of(0))
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _write_blocks(config: SynthConfig, world: _World, tmp: Path, progress: bool) -> dict:
    """Generate and write all user blocks; returns event count and time span."""
    (tmp / "events").mkdir()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-writer") as executor:
        shard = lambda i: tmp / "events" / f"part-{i:05d}.parquet"  # noqa: E731
        sinks = [
            _ParquetSink(shard, _EVENTS_SCHEMA, executor, config.shard_events),
            _ParquetSink(lambda i: tmp / "users.parquet", USERS_SCHEMA, executor),
            _ParquetSink(lambda i: tmp / "truth.parquet", TRUTH_SCHEMA, executor),
        ]
        return _fill_sinks(config, world, sinks, progress)


def _fill_sinks(config: SynthConfig, world: _World, sinks: list[_ParquetSink], progress: bool) -> dict:
    n_events, lo, hi = 0, MAX_TIMESTAMP, MIN_TIMESTAMP
    blocks = -(-config.users // BLOCK_USERS)
    for block in tqdm(range(blocks), desc="synth users", unit="block", disable=not progress):
        tables = _block(config, world, block)
        for sink, table in zip(sinks, tables):
            sink.write(table)
        ts = tables[0].column("timestamp")
        n_events, lo, hi = n_events + len(ts), min(lo, pc.min(ts).as_py()), max(hi, pc.max(ts).as_py())
    for sink in sinks:
        sink.close()
    return {"events": n_events, "time_span": [lo, hi]}


def _manifest(config: SynthConfig, stats: dict, name: str) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "config": dataclasses.asdict(config),
        "counts": {"events": stats["events"], "users": config.users, "items": config.items},
        "id_types": {"user_id": "int64", "item_id": "int64"},
        "time_span": stats["time_span"],
        "quarantined": {},
    }


def generate(config: SynthConfig, out_dir: str | os.PathLike, progress: bool = True, name: str = "synth") -> dict:
    """Write a synthetic prepared dataset to ``out_dir`` (atomically) and return its manifest.

    ``name`` is the manifest's dataset name (a named benchmark's own: its splits, results section and
    chosen vocabulary are found by it).

    ``users.parquet`` lists all ``config.users`` users: every generated user has >= 1 event.
    """
    validate_config(config)
    started = time.perf_counter()
    logger.info("generating synthetic dataset in %s: %s", out_dir, config)
    items, topics = _items_table(config)
    world = _world(config, topics)
    with atomic_dir(out_dir) as tmp:
        pq.write_table(items, tmp / "items.parquet")
        stats = _write_blocks(config, world, tmp, progress)
        manifest = _manifest(config, stats, name)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    elapsed = time.perf_counter() - started
    rate = stats["events"] / max(elapsed, 1e-9)
    logger.info("wrote %d events in %.1f s (%.0f events/s)", stats["events"], elapsed, rate)
    return manifest
