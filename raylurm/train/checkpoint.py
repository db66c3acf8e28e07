"""Checkpoints that carry their own config: method name, method config, data sizes, vocabulary hash.

A checkpoint directory holds ``model.pt`` (weights), ``optimizer.pt`` (to resume) and
``meta.json``. :func:`load_model` rebuilds the model from the directory alone, loading weights
with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from raylurm.config import from_dict, to_dict
from raylurm.data.prepare import data_home
from raylurm.methods import METHODS
from raylurm.train.batch import DataInfo

META = "meta.json"


def save(directory: str | os.PathLike, model: torch.nn.Module, optimizer, meta: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "model.pt")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    (directory / META).write_text(json.dumps(meta, indent=2))
    return directory


def meta_for(method: str, model_config: Any, info: DataInfo, **extra: Any) -> dict:
    return {"method": method, "method_config": to_dict(model_config), "info": dataclasses.asdict(info),
            "vocabulary_hash": info.vocabulary_hash, **extra}


def read_meta(directory: str | os.PathLike) -> dict:
    path = Path(directory) / META
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a raylurm checkpoint (no {META})")
    return json.loads(path.read_text())


def build_model(meta: dict) -> torch.nn.Module:
    cls = METHODS[meta["method"]]
    # options added after checkpoints were written, with the values that rebuild those checkpoints' model exactly
    # (a checkpoint's ``method_config`` lacks the key; a new default must not change an old model)
    options = {**getattr(cls, "legacy_options", {}), **meta["method_config"]}
    return cls(from_dict(cls.Config, options), from_dict(DataInfo, meta["info"]))


def load_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model from ``meta.json`` and load its weights (safely) — in eval mode."""
    meta = read_meta(directory)
    model = build_model(meta)
    model.load_state_dict(torch.load(Path(directory) / "model.pt", map_location=map_location, weights_only=True))
    return model.eval(), meta


def default_storage() -> Path:
    """Where pretraining runs go by default: ``$RAYLURM_HOME/runs``."""
    return data_home() / "runs"


def resolve_checkpoint(value: str, storage: Path) -> Path:
    """A checkpoint dir, a run dir or a run name under ``storage``; a run means its result (:func:`best_in_run`:
    the best validation epoch, else the latest)."""
    for candidate in (Path(value), Path(storage) / value):
        if (candidate / META).exists():
            return candidate
        found = best_in_run(candidate) if candidate.is_dir() else None
        if found is not None:
            return found
    raise FileNotFoundError(f"no checkpoint at {value!r} (looked for a checkpoint dir, a run dir and a run name under {storage})")


def run_checkpoints(run_dir: str | os.PathLike, split: str | None = None) -> list[tuple[Path, dict]]:
    """Every checkpoint of a run (``<storage>/<name>``) with its meta, oldest epoch first; only ``split``'s when given."""
    found = []
    for path in Path(run_dir).glob("checkpoint_*/" + META):
        meta = read_meta(path.parent)
        if split is None or meta.get("split") == split:
            found.append((path.parent, meta))
    return sorted(found, key=lambda pm: (pm[1].get("epoch", 0), pm[0].stat().st_mtime))


def best_in_run(run_dir: str | os.PathLike, split: str | None = None) -> Path | None:
    """The run's result: the checkpoint with the best validation metric (the earliest on a tie), else the latest epoch."""
    found = run_checkpoints(run_dir, split)
    scored = [(float(m["validation"][m["validation_metric"]]), -m.get("epoch", 0), p) for p, m in found
              if m.get("validation_metric") and _finite(m.get("validation", {}).get(m["validation_metric"]))]
    if scored:
        return max(scored, key=lambda s: s[:2])[2]
    return found[-1][0] if found else None


def run_finished(run_dir: str | os.PathLike, epochs: int, split: str | None = None) -> bool:
    """Whether the run trained ``epochs`` epochs or stopped early (its validation metric stopped improving)."""
    found = run_checkpoints(run_dir, split)
    return any(m.get("stopped_early") for _, m in found) or max((m.get("epoch", 0) for _, m in found), default=0) >= epochs


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
