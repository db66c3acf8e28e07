"""Sweep definitions (``tune_configs/*.py``): loading, validation and sampling.

A sweep file is plain Python written with Ray Tune's search primitives and defines:

* ``METHODS`` — ``{method: {option: value or tune domain}}``; options are fields of the
  method's config (``python -m raylurm.pretrain --method M --list-options``);
* ``TRAIN`` — fixed :class:`raylurm.train.config.TrainConfig` fields (epochs, steps per epoch, …);
* ``SEARCH`` — ``num_samples`` (per method), ``scheduler`` and its options.

:func:`load` checks every option name against the method's config (a typo fails when the file
is loaded, not hours into a sweep on a cluster); :func:`sample` draws concrete configs from the
spaces, which the tests build and run once per file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from raylurm.config import from_dict
from raylurm.methods import METHODS
from raylurm.train.config import TrainConfig

SEARCH_KEYS = {"num_samples", "scheduler", "grace_period", "reduction_factor", "max_concurrent_trials"}
SCHEDULERS = ("asha", "fifo")


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    methods: dict[str, dict[str, Any]]
    train: dict[str, Any]
    search: dict[str, Any]


def load(path: str | os.PathLike) -> Sweep:
    """Import a sweep file and validate it; ``ValueError`` names the file and the bad key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sweep file {path} (see tune_configs/)")
    spec = importlib.util.spec_from_file_location(f"raylurm_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    methods = getattr(module, "METHODS", None)
    if not isinstance(methods, dict) or not methods:
        raise ValueError(f"{path}: defines no METHODS = {{method: {{option: space}}}}")
    for method, space in methods.items():
        if method not in METHODS:
            raise ValueError(f"{path}: unknown method {method!r}; choose from {sorted(METHODS)}")
        fields = {f.name for f in dataclasses.fields(METHODS[method].Config)}
        unknown = sorted(set(space) - fields)
        if unknown:
            raise ValueError(f"{path}: {method} has no option(s) {unknown}; valid: {sorted(fields)}")
    train = dict(getattr(module, "TRAIN", {}))
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"method", "fault_step"}
    if set(train) - train_fields:
        raise ValueError(f"{path}: TRAIN has unknown key(s) {sorted(set(train) - train_fields)}; valid: {sorted(train_fields)}")
    search = {"num_samples": 1, "scheduler": "asha", **dict(getattr(module, "SEARCH", {}))}
    if set(search) - SEARCH_KEYS:
        raise ValueError(f"{path}: SEARCH has unknown key(s) {sorted(set(search) - SEARCH_KEYS)}; valid: {sorted(SEARCH_KEYS)}")
    if search["scheduler"] not in SCHEDULERS:
        raise ValueError(f"{path}: scheduler must be one of {SCHEDULERS}")
    return Sweep(path.stem, path, methods, train, search)


def sample(space: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One concrete config from a space: Tune domains sampled, grid searches drawn, constants kept."""
    from ray.tune.search.sample import Domain  # lazy: loading a sweep file to validate it needs no Ray

    out = {}
    for key, value in space.items():
        if isinstance(value, Domain):
            drawn = value.sample(random_state=rng)
            out[key] = drawn.item() if hasattr(drawn, "item") else drawn
        elif isinstance(value, dict) and set(value) == {"grid_search"}:
            out[key] = value["grid_search"][int(rng.integers(len(value["grid_search"])))]
        else:
            out[key] = value
    return out


def method_config(method: str, values: dict[str, Any]):
    """The method's typed config from sampled values (defaults for the rest)."""
    return from_dict(METHODS[method].Config, values)
