"""End to end: item embeddings -> interest vocabulary -> BoI sequences, into one directory.

Layout of a BoI directory (everything later stages need, written atomically)::

    <out>/item_embeddings/   items.parquet, embeddings.npy, config.json (+ model.pt, words.json)
    <out>/vocabulary/        items.parquet (item -> interests), centroids.npy, config.json (with hash)
    <out>/users/part-*.parquet   one row per user (see raylurm.boi.pipeline)
    <out>/manifest.json      dataset, vocabulary hash, scales, behaviours, summary
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from raylurm.boi.embeddings import ItemEmbeddingConfig, ItemEmbeddings, train_item_embeddings
from raylurm.boi.manifest import relative_dataset
from raylurm.boi.pipeline import BoiConfig, build_boi
from raylurm.boi.vocabulary import Vocabulary, VocabularyConfig, build_vocabulary
from raylurm.config import typed_config
from raylurm.data.errors import DataError
from raylurm.data.io import atomic_dir
from raylurm.data.prepare import load_manifest

log = logging.getLogger(__name__)


@typed_config
class BuildConfig:
    embedding: ItemEmbeddingConfig = ItemEmbeddingConfig()
    vocabulary: VocabularyConfig = VocabularyConfig()
    boi: BoiConfig = BoiConfig()


def build(dataset_dir: str | os.PathLike, out: str | os.PathLike, config: BuildConfig = BuildConfig(),
          embeddings_dir: str | os.PathLike | None = None, vocabulary_dir: str | os.PathLike | None = None,
          progress: bool = True) -> dict:
    """Build (or reuse) embeddings and vocabulary, then BoI sequences; return the manifest."""
    dataset_dir = Path(dataset_dir)
    dataset = load_manifest(dataset_dir)
    with atomic_dir(out) as tmp:
        vocab = _vocabulary(dataset_dir, tmp, config, embeddings_dir, vocabulary_dir, progress)
        summary = build_boi(dataset_dir, vocab, tmp / "users", config.boi)
        manifest = {
            "dataset": str(dataset_dir.resolve()), "dataset_relative": relative_dataset(dataset_dir, tmp),
            "dataset_name": dataset.get("name"),
            "vocabulary_hash": vocab.config["hash"], "num_interests": vocab.num_interests,
            "num_items": len(vocab.item_ids), "behaviors": summary.pop("behaviors"),
            "config": json.loads(json.dumps(dataclasses.asdict(config))), "summary": summary,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _vocabulary(dataset_dir: Path, tmp: Path, config: BuildConfig, embeddings_dir, vocabulary_dir, progress) -> Vocabulary:
    if vocabulary_dir is not None:
        shutil.copytree(vocabulary_dir, tmp / "vocabulary")
        vocab = Vocabulary.load(tmp / "vocabulary")
        log.info("reusing vocabulary %s (%d interests, hash %s)", vocabulary_dir, vocab.num_interests, vocab.config["hash"])
        return vocab
    if embeddings_dir is not None:
        embeddings = ItemEmbeddings.load(embeddings_dir)
        log.info("reusing item embeddings %s", embeddings_dir)
    else:
        embeddings = train_item_embeddings(dataset_dir, config.embedding, progress=progress)
    embeddings.save(tmp / "item_embeddings")
    _check_items_match(dataset_dir, embeddings)
    vocab = build_vocabulary(embeddings.item_ids, embeddings.vectors, config.vocabulary,
                             source={"item_embeddings_hash": embeddings.content_hash(), "method": config.embedding.method})
    vocab.save(tmp / "vocabulary")
    return Vocabulary.load(tmp / "vocabulary")


def _check_items_match(dataset_dir: Path, embeddings: ItemEmbeddings) -> None:
    items = dataset_dir / "items.parquet"
    if items.exists() and pq.read_metadata(items).num_rows != len(embeddings.item_ids):
        raise DataError(f"item embeddings cover {len(embeddings.item_ids)} items but the dataset has "
                        f"{pq.read_metadata(items).num_rows}; rebuild them for this dataset", file=str(items))


def load_boi_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / "manifest.json"
    if not path.exists() or not (Path(directory) / "users").exists():
        raise DataError("not a BoI directory (no manifest.json / users/); run `python -m raylurm.boi build` first", file=str(directory))
    return json.loads(path.read_text())
