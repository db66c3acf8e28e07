"""The event-log contract: the one schema every raylurm stage reads.

Three tables (README, "Data contract"):

* **events** — ``user_id``, ``item_id``, ``timestamp`` (UTC; int seconds or an Arrow
  timestamp), optional ``behavior`` (string, default ``"interact"``);
* **items** — ``item_id``, optional ``text``, optional ``category`` (a string or a list of
  strings);
* **users** — ``user_id`` plus any label columns used by downstream probes.

Ids are integers or strings. A *prepared* dataset directory holds the canonical form:
``events/part-*.parquet`` (sorted by user, then time), ``items.parquet``, ``users.parquet``
and ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa

DEFAULT_BEHAVIOR = "interact"

#: Accepted timestamp range (UTC seconds): [1970-01-01, 2100-01-01).
MIN_TIMESTAMP = 0
MAX_TIMESTAMP = int(dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc).timestamp())

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Column:
    """One contract column. ``kind`` is ``id``, ``timestamp``, ``string`` or ``category``."""

    name: str
    kind: str
    required: bool
    description: str


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    key: str | None  # column whose values must be unique, if any
    keep_extra_columns: bool

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


EVENTS = TableSpec(
    "events",
    (
        Column("user_id", "id", True, "user identifier (int or string)"),
        Column("item_id", "id", True, "item identifier (int or string); must exist in items"),
        Column("timestamp", "timestamp", True, "UTC event time: int seconds, Arrow timestamp or ISO-8601"),
        Column("behavior", "string", False, f'behaviour type, e.g. click/cart/buy (default "{DEFAULT_BEHAVIOR}")'),
    ),
    key=None,
    keep_extra_columns=False,
)

ITEMS = TableSpec(
    "items",
    (
        Column("item_id", "id", True, "item identifier, unique"),
        Column("text", "string", False, "free text (title, description) used for item embeddings"),
        Column("category", "category", False, "category or list of categories ('|'-separated in CSV)"),
    ),
    key="item_id",
    keep_extra_columns=False,
)

USERS = TableSpec(
    "users",
    (Column("user_id", "id", True, "user identifier, unique; every other column is a label"),),
    key="user_id",
    keep_extra_columns=True,
)

TABLES = {spec.name: spec for spec in (EVENTS, ITEMS, USERS)}


def canonical_events_schema(id_type: pa.DataType, item_id_type: pa.DataType) -> pa.Schema:
    """Arrow schema of ``events/part-*.parquet`` in a prepared dataset."""
    return pa.schema(
        [
            pa.field("user_id", id_type, nullable=False),
            pa.field("item_id", item_id_type, nullable=False),
            pa.field("timestamp", pa.int64(), nullable=False),
            pa.field("behavior", pa.string(), nullable=False),
        ]
    )
