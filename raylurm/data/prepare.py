"""Turn raw tables into a *prepared dataset* directory, validated and written atomically.

Layout (every later stage reads this)::

    <dir>/events/part-00000.parquet …   user_id, item_id, timestamp (int64 UTC s), behavior
    <dir>/items.parquet                   item_id, text, category (list<string>)
    <dir>/users.parquet                   user_id + label columns
    <dir>/quarantine/<table>.parquet      rejected rows with reasons (quarantine policy only)
    <dir>/manifest.json                   counts, id types, time span, quarantine summary
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raylurm.data.errors import DataError
from raylurm.data.io import atomic_dir
from raylurm.data.schema import EVENTS, ITEMS, SCHEMA_VERSION, USERS, canonical_events_schema
from raylurm.data.validate import Quarantine, TableConverter, Transform, iter_tables, load_keyed_table

log = logging.getLogger(__name__)

SHARD_ROWS = 5_000_000


@dataclasses.dataclass(frozen=True)
class RawSource:
    """Where the raw tables are, plus optional per-chunk transforms into the contract."""

    events: str
    items: str | None = None
    users: str | None = None
    name: str = "custom"
    transforms: dict[str, Transform] = dataclasses.field(default_factory=dict)


def data_home() -> Path:
    """Root of raylurm's prepared datasets: ``$RAYLURM_HOME`` or ``~/.cache/raylurm``."""
    return Path(os.environ.get("RAYLURM_HOME", Path.home() / ".cache" / "raylurm"))


def prepare(source: RawSource, out: str | os.PathLike, on_bad_rows: str = "error") -> dict:
    """Validate ``source`` and write it as a prepared dataset at ``out``; return the manifest."""
    with atomic_dir(out) as tmp:
        quarantine = Quarantine(tmp / "quarantine", on_bad_rows)
        try:
            items = _load_side_table(source.items, ITEMS, quarantine, source.transforms.get("items"))
            users = _load_side_table(source.users, USERS, quarantine, source.transforms.get("users"))
            events = TableConverter(EVENTS, quarantine, known_items=None if items is None else items.column("item_id"))
            if items is not None:
                events.id_types["item_id"] = items.schema.field("item_id").type
            summary = _write_events(iter_tables(source.events, events, quarantine, source.transforms.get("events")), tmp / "events")
        finally:
            quarantined = quarantine.close()
        for name, table in (("items", items), ("users", users)):
            if table is not None:
                pq.write_table(table, tmp / f"{name}.parquet")
        manifest = _manifest(source, summary, items, users, quarantined)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _load_side_table(path, spec, quarantine, transform) -> pa.Table | None:
    if path is None:
        return None
    return load_keyed_table(path, TableConverter(spec, quarantine), quarantine, transform)


def _write_events(tables, directory: Path) -> dict:
    """Stream canonical event tables into Parquet shards of at most ``SHARD_ROWS`` rows."""
    directory.mkdir()
    writer, shard, rows_in_shard, total, lo, hi, schema = None, 0, 0, 0, None, None, None
    for table in tables:
        if table.num_rows == 0:
            continue
        schema = schema or canonical_events_schema(table.schema.field("user_id").type, table.schema.field("item_id").type)
        table = table.select(schema.names).cast(schema)
        if writer is None or rows_in_shard >= SHARD_ROWS:
            if writer is not None:
                writer.close()
            writer, rows_in_shard, shard = pq.ParquetWriter(directory / f"part-{shard:05d}.parquet", schema), 0, shard + 1
        writer.write_table(table)
        rows_in_shard, total = rows_in_shard + table.num_rows, total + table.num_rows
        mn, mx = pc.min_max(table.column("timestamp")).values()
        lo, hi = min(lo, mn.as_py()) if lo is not None else mn.as_py(), max(hi, mx.as_py()) if hi is not None else mx.as_py()
    if writer is None:
        raise DataError("no valid events: every row was rejected or the table is empty")
    writer.close()
    return {"events": total, "time_span": [lo, hi], "id_types": {k: str(schema.field(k).type) for k in ("user_id", "item_id")}}


def _manifest(source: RawSource, summary: dict, items, users, quarantined) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": source.name,
        "source": {"events": str(source.events), "items": source.items and str(source.items), "users": source.users and str(source.users)},
        "counts": {"events": summary["events"], "items": None if items is None else items.num_rows,
                   "users": None if users is None else users.num_rows},
        "id_types": summary["id_types"],
        "time_span": summary["time_span"],
        "quarantined": quarantined,
    }


def log_quarantine(out, quarantined: dict) -> None:
    for table, reasons in quarantined.items():
        log.warning("quarantined %d %s row(s) into %s: %s", sum(reasons.values()), table,
                    Path(out) / "quarantine" / f"{table}.parquet", dict(reasons))


def load_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / "manifest.json"
    if not path.exists():
        raise DataError("not a prepared dataset (no manifest.json); run `python -m raylurm.data prepare` first", file=str(directory))
    return json.loads(path.read_text())
