"""Raw events -> the BoI rows a model was trained on, with the BoI pipeline's own stages.

A registry entry carries ``boi/manifest.json`` and ``boi/vocabulary/`` (the interest vocabulary
and the BoI settings of the data it was pretrained on). :class:`EventEncoder` runs the same
two functions the Ray Data pipeline runs on every partition — :class:`raylurm.boi.pipeline.EventMapper`
(item -> interests, time -> month/year periods) and :func:`raylurm.boi.pipeline.build_user_rows`
(eq. 4: one sparse ``log(1 + count)`` bag per period, plus the raw sequences) — so a request is
encoded exactly as the training data was, without Ray Data and without densifying.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from raylurm.boi.pipeline import BoiConfig, EventMapper, build_user_rows
from raylurm.boi.vocabulary import Vocabulary


@dataclasses.dataclass(frozen=True)
class Encoded:
    rows: pa.Table  # one BoI row per user, sorted by user_id
    unknown_items: list  # item ids of the request that have no interest (skipped, as in the pipeline's "skip")


class EventEncoder:
    def __init__(self, boi_dir: str | os.PathLike):
        boi_dir = Path(boi_dir)
        manifest_path = boi_dir / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{boi_dir}: no manifest.json (a registry entry's boi/ directory is needed)")
        manifest = json.loads(manifest_path.read_text())
        self.vocabulary = Vocabulary.load(boi_dir / "vocabulary")
        if manifest.get("vocabulary_hash") not in (None, self.vocabulary.content_hash):
            raise ValueError(f"{boi_dir}: vocabulary does not match the manifest's hash")
        boi = dict(manifest["config"]["boi"])
        self.config = BoiConfig(**{**boi, "scales": tuple(boi["scales"]), "on_unknown_items": "skip"})
        self.behaviors: list[str] = list(manifest["behaviors"])
        self.item_type = self.vocabulary.item_ids.type
        self._known = set(self.vocabulary.item_ids.to_pylist())
        self._mapper = EventMapper(self.vocabulary.table(), self.behaviors, self.config, 1)

    @property
    def scales(self) -> tuple[str, ...]:
        return self.config.scales

    def encode(self, users: Sequence[Any], events: Sequence[Sequence[dict]]) -> Encoded:
        """``events[i]`` = user ``users[i]``'s events (``item_id``, ``timestamp`` in UTC seconds, optional ``behavior``)."""
        user_ids, items, stamps, behaviors = [], [], [], []
        default = self.behaviors[0] if len(self.behaviors) == 1 else None
        for user, user_events in zip(users, events):
            for event in user_events:
                behavior = event.get("behavior")
                behavior = default if behavior is None else behavior
                if behavior not in self.behaviors:
                    raise ValueError(f"behavior {behavior!r} is not one of the model's {self.behaviors}")
                user_ids.append(str(user))
                items.append(event["item_id"])
                stamps.append(int(event["timestamp"]))
                behaviors.append(behavior)
        item_array = pa.array([_as(item, self.item_type) for item in items], self.item_type)
        table = pa.table({"user_id": pa.array(user_ids, pa.string()), "item_id": item_array,
                          "timestamp": pa.array(stamps, pa.int64()), "behavior": pa.array(behaviors, pa.string())})
        unknown = sorted({i for i in item_array.to_pylist() if i not in self._known}, key=str)
        return Encoded(build_user_rows(self._mapper(table), self.config), unknown)


def _as(item: Any, kind: pa.DataType) -> Any:
    if pa.types.is_integer(kind):
        if isinstance(item, bool) or not str(item).lstrip("-").isdigit():
            raise ValueError(f"item_id {item!r} is not an integer (this model's items are)")
        return int(item)
    return str(item)
