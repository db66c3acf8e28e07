"""Dataset names: bundled datasets by name, prepared datasets by path."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from raylurm.data import movielens
from raylurm.data.errors import DataError
from raylurm.data.prepare import data_home, prepare

log = logging.getLogger(__name__)

BUNDLED = {movielens.NAME: movielens.source}


def default_dir(name: str) -> Path:
    return data_home() / "datasets" / name


def prepare_bundled(name: str, out: str | os.PathLike | None = None, on_bad_rows: str = "error") -> Path:
    if name not in BUNDLED:
        raise DataError(f"unknown bundled dataset {name!r}; bundled: {sorted(BUNDLED)}")
    out = Path(out) if out else default_dir(name)
    log.info("preparing %s into %s", name, out)
    prepare(BUNDLED[name](), out, on_bad_rows)
    return out


def resolve(name_or_path: str | os.PathLike, prepare_missing: bool = True) -> Path:
    """A prepared dataset directory from a path, or from a bundled name (prepared on first use)."""
    path = Path(name_or_path)
    if (path / "manifest.json").exists():
        return path
    name = str(name_or_path)
    if name in BUNDLED:
        target = default_dir(name)
        if (target / "manifest.json").exists():
            return target
        if prepare_missing:
            return prepare_bundled(name, target)
    if path.exists():
        raise DataError("not a prepared dataset (no manifest.json); run `python -m raylurm.data prepare` on it", file=str(path))
    raise DataError(f"no prepared dataset at {name!r} and no bundled dataset of that name (bundled: {sorted(BUNDLED)})")
