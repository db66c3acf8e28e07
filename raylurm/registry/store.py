"""The registry on disk: :class:`Registry` (entries per method, ``CURRENT``), :func:`add_checkpoint`.

See :mod:`raylurm.registry` for the layout and the promotion rule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from raylurm.data.io import atomic_dir, atomic_file
from raylurm.data.prepare import data_home
from raylurm.train.checkpoint import default_storage, resolve_checkpoint

log = logging.getLogger("raylurm.registry")

CURRENT = "CURRENT"
ENTRY = "entry.json"
FILES = ("model.pt", "meta.json")


def default_root() -> Path:
    """``$RAYLURM_REGISTRY``, else ``$RAYLURM_HOME/registry``."""
    return Path(os.environ.get("RAYLURM_REGISTRY") or data_home() / "registry")


@dataclasses.dataclass(frozen=True)
class Entry:
    method: str
    name: str
    path: Path  # the checkpoint directory (model.pt, meta.json, entry.json)
    record: dict[str, Any]

    @property
    def metric(self) -> str:
        return self.record.get("metric", "val_auc")

    @property
    def value(self) -> float:
        return float(self.record.get("metrics", {}).get(self.metric, math.nan))

    @property
    def split(self) -> str | None:
        return self.record.get("split")


class Registry:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    # ----------------------------------------------------------------------------------- reading
    def methods(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def entries(self, method: str) -> list[Entry]:
        directory = self.root / method
        found = [self._entry(method, p.name) for p in directory.iterdir() if (p / ENTRY).exists()] if directory.is_dir() else []
        return sorted(found, key=lambda e: e.record.get("registered", ""))

    def get(self, method: str, name: str) -> Entry:
        if not (self.root / method / name / ENTRY).exists():
            known = [e.name for e in self.entries(method)]
            raise FileNotFoundError(f"registry {self.root}: no {method} entry {name!r}; entries: {known or 'none'}")
        return self._entry(method, name)

    def current(self, method: str) -> Entry | None:
        marker = self.root / method / CURRENT
        if not marker.exists():
            return None
        return self.get(method, marker.read_text().strip())

    def _entry(self, method: str, name: str) -> Entry:
        path = self.root / method / name
        return Entry(method, name, path, json.loads((path / ENTRY).read_text()))

    # ----------------------------------------------------------------------------------- writing
    def register(self, checkpoint: str, record: dict[str, Any], name: str, boi_dir: str | os.PathLike | None = None) -> Entry:
        """Copy the checkpoint (a local path or a storage URI) and its record in as entry ``name``.

        ``boi_dir`` (the BoI the model was pretrained on) adds its ``manifest.json`` and ``vocabulary/``
        as ``boi/``, so the entry alone turns raw events into model inputs (what Serve needs)."""
        method = record["method"]
        name = re.sub(r"[^A-Za-z0-9_.=-]+", "-", name)
        target = self.root / method / name
        if (target / ENTRY).exists():
            log.info("%s: %s is already registered", method, name)
            return self._entry(method, name)
        with atomic_dir(target) as tmp:
            _fetch(checkpoint, tmp)
            if boi_dir is not None and (Path(boi_dir) / "manifest.json").exists():
                (tmp / "boi").mkdir()
                shutil.copy2(Path(boi_dir) / "manifest.json", tmp / "boi" / "manifest.json")
                shutil.copytree(Path(boi_dir) / "vocabulary", tmp / "boi" / "vocabulary")
            record = {**record, "name": name, "source_checkpoint": checkpoint,
                      "registered": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            (tmp / ENTRY).write_text(json.dumps(record, indent=2, default=_json_default))
        return self._entry(method, name)

    def promote(self, method: str, name: str) -> Entry:
        entry = self.get(method, name)
        with atomic_file(self.root / method / CURRENT) as tmp:
            tmp.write_text(name + "\n")
        log.info("%s: now serving %s (%s %.4f)", method, name, entry.metric, entry.value)
        return entry

    def offer(self, entry: Entry) -> bool:
        """Promote ``entry`` if its method has none, or it beats the current one on the same split and metric."""
        current = self.current(entry.method)
        if current is None or (current.split == entry.split and current.metric == entry.metric
                               and (math.isnan(current.value) or entry.value > current.value)):
            self.promote(entry.method, entry.name)
            return True
        why = ("a different split or metric" if (current.split, current.metric) != (entry.split, entry.metric)
               else f"{current.metric} {current.value:.4f} >= {entry.value:.4f}")
        log.info("%s: registered %s but kept serving %s (%s); to serve it: python -m raylurm.registry promote %s %s",
                 entry.method, entry.name, current.name, why, entry.method, entry.name)
        return False


def _fetch(checkpoint: str, into: Path) -> None:
    """The serving files of a checkpoint directory (local, or a URI via Ray's storage layer)."""
    if "://" in checkpoint:
        import ray.train  # lazy: only remote (URI) checkpoints need Ray

        ray.train.Checkpoint(checkpoint).to_directory(str(into))
        (into / "optimizer.pt").unlink(missing_ok=True)
        return
    for name in FILES:
        source = Path(checkpoint) / name
        if not source.exists():
            raise FileNotFoundError(f"{checkpoint} is not a complete checkpoint (no {name})")
        shutil.copy2(source, into / name)


def add_checkpoint(registry: Registry, value: str, boi: str | None = None, name: str | None = None,
                   promote: bool = False) -> tuple[Entry, bool]:
    """Register a pretraining checkpoint (a run name under $RAYLURM_HOME/runs, a run dir or a checkpoint
    dir) with the BoI it was pretrained on (default: its split's pretraining BoI); offer it for serving.

    It carries no validation metric, so it is served only when its method has no current entry (or
    with ``promote``)."""
    checkpoint = resolve_checkpoint(value, default_storage())
    meta = json.loads((checkpoint / "meta.json").read_text())
    if boi is None:
        found = sorted(data_home().glob(f"splits/*-{meta.get('split')}/boi/pretrain")) if meta.get("split") else []
        if not found:
            raise FileNotFoundError(f"{checkpoint}: say which BoI directory it was pretrained on (--boi); "
                                    "only checkpoints pretrained with --split are found automatically")
        boi = str(found[0])
    manifest = json.loads((Path(boi) / "manifest.json").read_text())
    if manifest.get("vocabulary_hash") != meta.get("vocabulary_hash"):
        raise ValueError(f"{boi}: its vocabulary {manifest.get('vocabulary_hash')} is not the checkpoint's "
                         f"{meta.get('vocabulary_hash')}; pass the BoI directory it was pretrained on")
    run = checkpoint.parent.name if checkpoint.name.startswith("checkpoint_") else checkpoint.name
    entry = registry.register(str(checkpoint), {
        "method": meta["method"], "metric": "val_auc", "metrics": {}, "epoch": meta.get("epoch"), "step": meta.get("step"),
        "config": meta.get("method_config", {}), "train": meta.get("train"), "split": meta.get("split"),
        "experiment": run, "users_dir": str(Path(boi) / "users") if (Path(boi) / "users").exists() else None,
    }, name=name or f"{run}.e{meta.get('epoch', 0)}", boi_dir=boi)
    if promote:
        registry.promote(entry.method, entry.name)
        return entry, True
    return entry, registry.offer(entry)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
