"""Where a BoI directory's dataset is: the manifest records it relative to the BoI directory too.

A BoI directory is often built inside a temporary directory that is renamed when it is complete
(``data.io.atomic_dir``: a split builds ``<tmp>/datasets/pretrain`` and ``<tmp>/boi/pretrain``,
then renames ``<tmp>``), so the absolute path recorded at build time may no longer exist. The
relative path (``dataset_relative``) survives the rename; the absolute one is kept for reading and
for manifests written before it existed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def relative_dataset(dataset_dir: str | os.PathLike, boi_dir: str | os.PathLike) -> str:
    """``dataset_dir`` relative to ``boi_dir`` (both as they are while building), for the manifest."""
    return os.path.relpath(Path(dataset_dir).resolve(), Path(boi_dir).resolve())


def boi_dataset_dir(boi_dir: str | os.PathLike, manifest: dict | None = None) -> Path:
    """The dataset directory a BoI directory was built from, wherever the pair now lies."""
    boi_dir = Path(boi_dir)
    manifest = manifest if manifest is not None else json.loads((boi_dir / "manifest.json").read_text())
    if manifest.get("dataset_relative") is not None:
        moved = (boi_dir / manifest["dataset_relative"]).resolve()
        if moved.exists():
            return moved
    return Path(manifest["dataset"])
