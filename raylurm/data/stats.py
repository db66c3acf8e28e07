"""Summary statistics of a prepared dataset, computed by streaming its event shards."""

from __future__ import annotations

import collections
import datetime as dt
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from tqdm.auto import tqdm

from raylurm.data.prepare import load_manifest

PERCENTILES = (0, 25, 50, 75, 90, 99, 100)
_COMPACT_ROWS = 2_000_000


def dataset_stats(directory: str | os.PathLike, progress: bool = True) -> dict:
    """Users, items, events, time span and events-per-user percentiles of a prepared dataset."""
    manifest = load_manifest(directory)
    events = pads.dataset(Path(directory) / "events", format="parquet")
    per_user, items, behaviors, total, lo, hi = [], [], collections.Counter(), 0, None, None
    bar = tqdm(total=manifest["counts"]["events"], unit="ev", desc="stats", disable=not progress, leave=False)
    for batch in events.to_batches(columns=["user_id", "item_id", "timestamp", "behavior"]):
        behaviors.update({v["values"]: v["counts"] for v in pc.value_counts(batch.column("behavior")).to_pylist()})
        per_user.append(pc.value_counts(batch.column("user_id")).flatten())
        items.append(pc.unique(batch.column("item_id")))
        mn, mx = pc.min_max(batch.column("timestamp")).values()
        lo = mn.as_py() if lo is None else min(lo, mn.as_py())
        hi = mx.as_py() if hi is None else max(hi, mx.as_py())
        total += batch.num_rows
        bar.update(batch.num_rows)
        if sum(len(t) for t in per_user) > _COMPACT_ROWS:
            per_user, items = [_sum_counts(per_user)], [pc.unique(pa.chunked_array(items))]
    bar.close()
    counts = _sum_counts(per_user).column("counts").to_numpy()
    return {
        "name": manifest.get("name"),
        "events": total,
        "users": int(len(counts)),
        "items_with_events": len(pc.unique(pa.chunked_array(items))),
        "items_in_catalogue": manifest["counts"].get("items"),
        "users_in_table": manifest["counts"].get("users"),
        "time_span": [_iso(lo), _iso(hi)],
        "events_per_user": {f"p{p}": float(np.percentile(counts, p)) for p in PERCENTILES},
        "behaviors": dict(behaviors.most_common()),
        "quarantined": manifest.get("quarantined", {}),
    }


def _sum_counts(parts: list) -> pa.Table:
    arrays = [p if isinstance(p, pa.Table) else pa.Table.from_arrays(p, names=["values", "counts"]) for p in parts]
    table = pa.concat_tables(arrays)
    return table.group_by("values").aggregate([("counts", "sum")]).rename_columns(["values", "counts"])


def _iso(ts: int | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()


def format_stats(stats: dict) -> str:
    """Human-readable multi-line summary."""
    pct = "  ".join(f"{k}={v:g}" for k, v in stats["events_per_user"].items())
    lines = [
        f"dataset           {stats['name']}",
        f"events            {stats['events']:,}",
        f"users             {stats['users']:,}" + (f"  (user table: {stats['users_in_table']:,})" if stats["users_in_table"] else ""),
        f"items             {stats['items_with_events']:,} with events" + (f"  (catalogue: {stats['items_in_catalogue']:,})" if stats["items_in_catalogue"] else ""),
        f"time span         {stats['time_span'][0]} .. {stats['time_span'][1]}",
        f"events per user   {pct}",
        f"behaviors         {stats['behaviors']}",
    ]
    if stats["quarantined"]:
        lines.append(f"quarantined       {stats['quarantined']}")
    return "\n".join(lines)
