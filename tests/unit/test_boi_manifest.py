"""A BoI directory finds its dataset after the directory holding both is renamed (a split's temp dir)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raylurm.boi.manifest import boi_dataset_dir, relative_dataset
from raylurm.train.batch import DataInfo

ITEMS = ["a", "b", "c", "d"]
CATEGORIES = [["Drama"], ["Comedy", "Drama"], [], ["Action"]]


def _build(root: Path, with_relative: bool = True) -> tuple[Path, Path]:
    dataset, boi = root / "datasets" / "pretrain", root / "boi" / "pretrain"
    dataset.mkdir(parents=True)
    (boi / "vocabulary").mkdir(parents=True)
    pq.write_table(pa.table({"item_id": ITEMS, "category": CATEGORIES}), dataset / "items.parquet")
    pq.write_table(pa.table({"item_id": ITEMS[::-1]}), boi / "vocabulary" / "items.parquet")  # vocabulary order != item order
    manifest = {"dataset": str(dataset.resolve()), "num_interests": 3, "num_items": 4, "behaviors": ["rate"],
                "config": {"boi": {"scales": ["month", "year"], "max_sequence_length": 8}}, "vocabulary_hash": "h"}
    if with_relative:
        manifest["dataset_relative"] = relative_dataset(dataset, boi)
    (boi / "manifest.json").write_text(json.dumps(manifest))
    return dataset, boi


def test_categories_survive_a_rename_of_the_build_directory(tmp_path: Path) -> None:
    _build(tmp_path / "tmp-123")
    (tmp_path / "tmp-123").rename(tmp_path / "split")
    boi = tmp_path / "split" / "boi" / "pretrain"
    assert boi_dataset_dir(boi) == (tmp_path / "split" / "datasets" / "pretrain").resolve()
    info = DataInfo.from_boi(boi)
    # codes: Action 1, Comedy 2, Drama 3 (sorted first categories), 0 = none; in vocabulary order d, c, b, a
    assert info.num_categories == 4 and info.item_category == (1, 0, 2, 3)


def test_without_a_relative_path_the_absolute_one_is_used(tmp_path: Path) -> None:
    dataset, boi = _build(tmp_path / "built", with_relative=False)
    assert boi_dataset_dir(boi) == dataset.resolve()
    assert DataInfo.from_boi(boi).num_categories == 4
    (tmp_path / "built").rename(tmp_path / "moved")  # the old manifests' failure, kept visible: no categories
    assert DataInfo.from_boi(tmp_path / "moved" / "boi" / "pretrain").num_categories == 1
