"""Embedding every item of a dataset (:func:`train_item_embeddings`) and the saved result (:class:`ItemEmbeddings`).

The layout and the two methods are described in :mod:`raylurm.boi.embeddings`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raylurm.boi.embeddings.config import ItemEmbeddingConfig
from raylurm.boi.embeddings.cooccurrence import fit_cooccurrence
from raylurm.boi.embeddings.pairs import SECONDS_PER_DAY, EventLog, load_events, window_bounds
from raylurm.boi.embeddings.text import TextItemEncoder, embed_bags, encode_texts, fit_text
from raylurm.data.errors import DataError
from raylurm.data.io import atomic_dir

logger = logging.getLogger(__name__)


def _coverage(log: EventLog, num_items: int) -> dict:
    return {"events": int(log.item.size), "items_without_events": num_items - int(np.unique(log.item).size)}


def _record(config: ItemEmbeddingConfig, metrics: dict) -> dict:
    return {**dataclasses.asdict(config), "metrics": metrics}


def _read_items(dataset_dir: Path, method: str) -> pa.Table:
    path = dataset_dir / "items.parquet"
    if not path.exists():
        raise DataError("the dataset has no items table (items.parquet); item embeddings need one",
                        file=str(dataset_dir))
    table = pq.read_table(path)
    if table.num_rows == 0:
        raise DataError("the items table is empty", file=str(path))
    no_text = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    text = table["text"] if "text" in table.column_names else no_text
    if method == "text" and text.null_count == table.num_rows:
        raise DataError("no item has text; use ItemEmbeddingConfig(method='cooccurrence')", file=str(path))
    if method == "text" and text.null_count:
        logger.warning("%d of %d item(s) have no text: they embed as <empty>", text.null_count, table.num_rows)
    return pa.table({"item_id": table["item_id"].combine_chunks(), "text": text.combine_chunks()})


def train_item_embeddings(dataset_dir: str | os.PathLike, config: ItemEmbeddingConfig, progress: bool = True,
                          device: str | torch.device = "cpu") -> ItemEmbeddings:
    """Embed every item of a prepared dataset (LURM §3.1.1); deterministic for ``config.seed``."""
    started = time.perf_counter()
    dataset_dir = Path(dataset_dir)
    items = _read_items(dataset_dir, config.method)
    rng = np.random.default_rng(config.seed)
    log = load_events(dataset_dir, items["item_id"], config.max_events, rng)
    bounds = window_bounds(log, config.window_days * SECONDS_PER_DAY)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.method == "text":
            fitted = fit_text(items, log, bounds, config, rng, progress, device)
            vectors, metrics, state, words = fitted.vectors, fitted.metrics, fitted.model_state, fitted.words
        else:
            (vectors, metrics), state, words = fit_cooccurrence(items, log, bounds, config, rng), None, None
    record = _record(config, {**metrics, **_coverage(log, items.num_rows)})
    result = ItemEmbeddings(items["item_id"].combine_chunks(), vectors, record, state, words)
    logger.info("embedded %d items (%s) from %d events in %.1f s", items.num_rows, config.method, log.item.size,
                time.perf_counter() - started)
    return result


@dataclasses.dataclass
class ItemEmbeddings:
    """Unit item vectors aligned with ``item_ids``; the text method also keeps its encoder."""

    item_ids: pa.Array  # (N,) ids as in items.parquet (int64 or string)
    vectors: np.ndarray  # (N, dim) float32, L2-normalised rows (zero rows: see module docstring)
    config: dict  # ItemEmbeddingConfig fields + "metrics"
    model_state: dict[str, torch.Tensor] | None = None  # text: TextItemEncoder.state_dict()
    words: list[str] | None = None  # text: vocabulary, index = word id

    def save(self, directory: str | os.PathLike) -> None:
        """Write the layout of the module docstring atomically (replacing ``directory``)."""
        with atomic_dir(directory) as tmp:
            pq.write_table(pa.table({"item_id": self.item_ids}), tmp / "items.parquet")
            np.save(tmp / "embeddings.npy", np.ascontiguousarray(self.vectors, np.float32))
            (tmp / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True))
            if self.model_state is not None:
                torch.save(self.model_state, tmp / "model.pt")
                (tmp / "words.json").write_text(json.dumps(self.words))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ItemEmbeddings:
        directory = Path(directory)
        if not (directory / "embeddings.npy").exists():
            raise DataError("not an item-embedding directory (no embeddings.npy)", file=str(directory))
        has_model = (directory / "model.pt").exists()
        return cls(
            item_ids=pq.read_table(directory / "items.parquet")["item_id"].combine_chunks(),
            vectors=np.load(directory / "embeddings.npy"),
            config=json.loads((directory / "config.json").read_text()),
            model_state=torch.load(directory / "model.pt", weights_only=True) if has_model else None,
            words=json.loads((directory / "words.json").read_text()) if has_model else None,
        )

    def content_hash(self) -> str:
        """sha256 of the config, the ids and the vectors; equal before and after save/load."""
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        digest.update(str(self.item_ids.type).encode())
        if pa.types.is_integer(self.item_ids.type):
            digest.update(self.item_ids.to_numpy().astype(np.int64).tobytes())
        else:
            digest.update(json.dumps(self.item_ids.to_pylist()).encode())
        vectors = np.ascontiguousarray(self.vectors, np.float32)
        digest.update(str(vectors.shape).encode())
        digest.update(vectors.tobytes())
        return digest.hexdigest()

    def encoder(self) -> TextItemEncoder:
        """The trained eq. 1 encoder (text method only), rebuilt from this checkpoint alone."""
        if self.model_state is None or self.words is None:
            raise ValueError(f"method {self.config.get('method')!r} has no text encoder")
        model = TextItemEncoder(len(self.words), self.config["dim"])
        model.load_state_dict(self.model_state)
        return model

    def embed_texts(self, texts: Sequence[str | None]) -> np.ndarray:
        """Embed new item texts with the trained encoder: (len(texts), dim) float32."""
        model = self.encoder()
        bags = encode_texts(pa.array(list(texts), pa.large_string()), self.words, self.config["max_words"])
        return embed_bags(model, bags)
