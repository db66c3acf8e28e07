"""One registry entry, ready to serve: the model, its event encoder and an index of served users.

No Ray here (the Serve deployments in :mod:`raylurm.serving.app` wrap it), so every answer the
HTTP API gives can be checked in-process. Problems with a request raise :class:`RequestError`
with the HTTP status to answer (4xx); anything else is a bug.
"""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raylurm.data.prepare import data_home
from raylurm.registry import Entry
from raylurm.serving import incremental
from raylurm.serving.features import EventEncoder
from raylurm.train.batch import collate
from raylurm.train.checkpoint import load_model

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request this model cannot answer; ``status`` is the HTTP status (4xx) to answer with."""

    def __init__(self, detail: str, status: int = 422):
        super().__init__(detail)
        self.detail, self.status = detail, status


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    return torch.device(device)


def users_dir_for(entry: Entry, override: str | None = None) -> Path | None:
    """Whose representations the similar-users index holds: ``override``, else the BoI rows the entry
    was pretrained on (recorded at registration, or found by its split under the data home)."""
    if override:
        if not Path(override).exists():
            raise FileNotFoundError(f"served users {override}: no such directory (BoI rows, e.g. <boi>/users)")
        return Path(override)
    recorded = entry.record.get("users_dir")
    if recorded and Path(recorded).exists():
        return Path(recorded)
    if entry.split:
        found = sorted(glob.glob(str(data_home() / "splits" / f"*-{entry.split}" / "boi" / "pretrain" / "users")))
        if found:
            return Path(found[0])
    return None


class ServedModel:
    """A registry entry loaded for serving (weights with ``weights_only=True``, eval mode)."""

    def __init__(self, entry: Entry, device: str = "cpu", users_dir: str | None = None,
                 index_factory: str = "Flat", batch_size: int = 512):
        started = time.perf_counter()
        self.entry, self.device, self.batch_size = entry, resolve_device(device), batch_size
        self.model, self.meta = load_model(entry.path, map_location=self.device)
        self.model.to(self.device)
        self.encoder = EventEncoder(entry.path / "boi")
        self.scales = tuple(self.meta["info"]["scales"])
        self.item_ids = self.encoder.vocabulary.item_ids.to_pylist()
        self._item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.can_recommend = hasattr(self.model, "score_items")
        self.can_update = isinstance(self.model, incremental.LURM)
        self.users_dir = users_dir_for(entry, users_dir)
        self.user_ids: list = []
        self._user_row: dict[str, int] = {}
        self.vectors = np.zeros((0, self.dim), np.float32)
        self.index = faiss.index_factory(self.dim, index_factory, faiss.METRIC_INNER_PRODUCT)
        if self.users_dir is not None:
            self._index_users(pq.read_table(self.users_dir))
        log.info("%s/%s on %s: %d served users, loaded in %.1f s", entry.method, entry.name, self.device,
                 len(self.user_ids), time.perf_counter() - started)

    @property
    def dim(self) -> int:
        return int(self.model.representation_dim)

    def describe(self) -> dict[str, Any]:
        record = self.entry.record
        return {"method": self.entry.method, "entry": self.entry.name, "dim": self.dim, "device": str(self.device),
                "metric": self.entry.metric, "value": self.entry.value, "metrics": record.get("metrics", {}),
                "epoch": record.get("epoch"), "split": self.entry.split, "dataset": record.get("dataset"),
                "registered": record.get("registered"), "config": self.meta.get("method_config", {}),
                "served_users": len(self.user_ids), "items": len(self.item_ids),
                "behaviors": self.encoder.behaviors, "scales": list(self.scales),
                "recommend": self.can_recommend, "incremental": self.can_update}

    # ------------------------------------------------------------------------------ encoding
    def _index_users(self, rows: pa.Table) -> None:
        self.user_ids = rows["user_id"].to_pylist()  # answered in their own type (int or str)
        self._user_row = {str(u): i for i, u in enumerate(self.user_ids)}
        self.vectors = np.concatenate([self.forward([rows.slice(i, self.batch_size)])[0]
                                       for i in range(0, rows.num_rows, self.batch_size)] or [self.vectors])
        if not self.index.is_trained:
            self.index.train(_unit(self.vectors))
        self.index.add(_unit(self.vectors))

    def rows(self, events: Sequence[dict]) -> tuple[pa.Table, list]:
        """One user's request events -> (one BoI row, unknown item ids); RequestError if nothing is usable."""
        try:
            encoded = self.encoder.encode(["request"], [events])
        except ValueError as err:
            raise RequestError(str(err)) from None
        row = encoded.rows
        known = row.num_rows and row["num_events"][0].as_py() - row["num_skipped"][0].as_py()
        if not known:
            why = (f"none of the {len(events)} events has an item in the model's vocabulary "
                   f"(unknown items: {encoded.unknown_items[:10]})" if row.num_rows else
                   f"none of the {len(events)} events is inside the model's time range")
            raise RequestError(why)
        return row, encoded.unknown_items

    def forward(self, tables: Sequence[pa.Table], scores: bool = False) -> list[np.ndarray]:
        """Representations (or next-item scores) of many requests' rows in one batched forward."""
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        batch = {k: v.to(self.device) for k, v in collate(table, self.scales).items()}
        with torch.no_grad():
            if scores:
                out = self.model.score_items(batch, torch.arange(len(self.item_ids), device=self.device))
            else:
                out = self.model.embed(batch)
        out = out.float().cpu().numpy()
        sizes = np.cumsum([t.num_rows for t in tables])[:-1]
        return np.split(out, sizes)

    # ------------------------------------------------------------------------------ answers
    def lookup(self, user_id: Any) -> np.ndarray:
        row = self._user_row.get(str(user_id))
        if row is None:
            raise RequestError(f"user {user_id!r} is not among the {len(self.user_ids)} served users of "
                               f"{self.entry.method}/{self.entry.name}; send the user's events instead", status=404)
        return self.vectors[row]

    def similar(self, vector: np.ndarray, k: int, exclude: Any = None) -> list[dict]:
        if not self.user_ids:
            raise RequestError(f"{self.entry.method}/{self.entry.name} serves no users to search "
                               "(start the app with users=<BoI users directory>)", status=404)
        wanted = min(k + (exclude is not None), len(self.user_ids))
        scores, rows = self.index.search(_unit(vector[None]), wanted)
        found = [{"user_id": self.user_ids[r], "score": float(s)} for s, r in zip(scores[0], rows[0])
                 if r >= 0 and (exclude is None or str(self.user_ids[r]) != str(exclude))]
        return found[:k]

    def top_items(self, scores: np.ndarray, k: int, seen: Sequence[Any] = ()) -> list[dict]:
        scores = scores.astype(np.float64).copy()
        seen_rows = [self._item_index[i] for i in seen if i in self._item_index]
        scores[seen_rows] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [{"item_id": self.item_ids[i], "score": float(scores[i])} for i in top]

    def request_item_ids(self, events: Sequence[dict]) -> list:
        """The request's item ids in the vocabulary's type (for excluding seen items)."""
        cast = int if pa.types.is_integer(self.encoder.item_type) else str
        out = []
        for event in events:
            try:
                out.append(cast(event["item_id"]))
            except (TypeError, ValueError):
                continue
        return out

    # ------------------------------------------------------------------------------ LURM state
    def state_of(self, row: pa.Table) -> dict:
        return incremental.from_row(self.model, row.to_pylist()[0])

    def update(self, state_json: dict, events: Sequence[dict]) -> tuple[np.ndarray, dict, list]:
        """Fold one new period's events into a returned state -> (representation, new state, unknown items)."""
        try:
            state = incremental.from_json(self.model, state_json)
            encoded = self.encoder.encode(["request"], [events])
            if encoded.rows.num_rows == 0:
                raise RequestError("none of the events is inside the model's time range")
            state = incremental.advance(self.model, state, encoded.rows.to_pylist()[0])
        except (incremental.StateError, ValueError) as err:
            raise RequestError(getattr(err, "detail", str(err))) from None
        return incremental.represent(self.model, state), state, encoded.unknown_items


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)

