"""The interest vocabulary (LURM §3.1.2): faiss k-means over item embeddings, item -> interest(s).

The paper clusters a million-item sample into D = 10^5 interests with HDSC; a standard
large-scale k-means (faiss) plays the same role here. Item embeddings are L2-normalised, so
the clustering is spherical and assignment uses inner product (cosine). Hard assignment maps
each item to its nearest centroid; soft assignment maps it to its ``top_k`` nearest with
weights ``softmax(cos / soft_temperature)`` (summing to 1, so an event still counts once).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Annotated, Literal, get_args

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from raylurm.config import typed_config
from raylurm.data.io import atomic_dir

log = logging.getLogger(__name__)

Assignment = Literal["hard", "soft"]
ASSIGNMENTS = get_args(Assignment)


@typed_config
class VocabularyConfig:
    num_interests: Annotated[Annotated[int, Field(ge=1)] | Literal["items"] | None, Field(description=(
        'D (default: items // 10, clipped to 8..100_000); "items": one interest per item with an embedding '
        "(the item itself, no clustering: the uncompressed vocabulary of a small catalogue)"))] = None
    assignment: Annotated[Assignment, Field(
        description='"hard" (one interest per item) or "soft" (top_k weighted interests)')] = "hard"
    top_k: Annotated[int, Field(ge=1, description="soft assignment: interests per item")] = 3
    soft_temperature: Annotated[float, Field(
        gt=0.0, description="soft assignment: weights = softmax(cosine / soft_temperature)")] = 0.05
    # the paper samples ~10^6
    sample_size: Annotated[int, Field(ge=1, description="items sampled to train k-means")] = 1_000_000
    niter: Annotated[int, Field(ge=1, description="k-means iterations")] = 20
    restarts: Annotated[int, Field(ge=1, description=(
        "k-means runs from seeds seed, seed+1, ...; the best mean cosine to the centroids wins"))] = 1
    seed: Annotated[int, Field(description="k-means seed")] = 0


class TooManyInterests(ValueError):
    """More interests asked for than there are items with embeddings to cluster."""


def default_num_interests(num_items: int) -> int:
    """A few hundred interests for a few thousand items, 10^5 (the paper's D) for >= 10^6 items."""
    return int(np.clip(num_items // 10, 8, 100_000))


@dataclasses.dataclass
class Vocabulary:
    """Centroids plus each item's interests. Row i of the assignment is item ``item_ids[i]``."""

    item_ids: pa.Array  # (N,) int64 or string
    interest_ids: pa.ListArray  # (N, ragged) int32: the item's interests
    interest_weights: pa.ListArray  # (N, ragged) float32: their weights (1.0 for hard)
    centroids: np.ndarray  # (D, d) float32
    config: dict

    @property
    def num_interests(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def content_hash(self) -> str:
        """sha256 over centroids, assignment and config: later checkpoints record it."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.centroids).tobytes())
        for arr in (self.item_ids, self.interest_ids.flatten(), self.interest_weights.flatten(), self.interest_ids.offsets):
            for buf in arr.buffers():
                if buf is not None:
                    h.update(buf)
        h.update(json.dumps({k: v for k, v in self.config.items() if k != "hash"}, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def table(self) -> pa.Table:
        return pa.table({"item_id": self.item_ids, "item_index": pa.array(np.arange(len(self.item_ids), dtype=np.int32)),
                         "interest_ids": self.interest_ids, "interest_weights": self.interest_weights})

    def save(self, directory: str | os.PathLike) -> None:
        with atomic_dir(directory) as tmp:
            pq.write_table(self.table(), tmp / "items.parquet")
            np.save(tmp / "centroids.npy", self.centroids)
            (tmp / "config.json").write_text(json.dumps({**self.config, "hash": self.content_hash}, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Vocabulary":
        directory = Path(directory)
        table = pq.read_table(directory / "items.parquet")
        config = json.loads((directory / "config.json").read_text())
        vocab = cls(table.column("item_id").combine_chunks(), table.column("interest_ids").combine_chunks(),
                    table.column("interest_weights").combine_chunks(), np.load(directory / "centroids.npy"), config)
        if config.get("hash") not in (None, vocab.content_hash):
            raise ValueError(f"vocabulary at {directory} does not match its recorded hash (modified or corrupt)")
        return vocab


def build_vocabulary(item_ids: pa.Array, vectors: np.ndarray, config: VocabularyConfig, source: dict | None = None) -> Vocabulary:
    """Cluster ``vectors`` (N, d) into D interests and assign every item (eq. 4's ``x_i in c_j``)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    usable = np.linalg.norm(vectors, axis=1) > 0  # co-occurrence embeddings are zero for never-seen items
    k = config.top_k if config.assignment == "soft" else 1
    if config.num_interests == "items":  # every item its own interest: the centroids are the items
        if not usable.any():
            raise TooManyInterests("no item has an embedding: no interest can be formed")
        centroids = vectors[usable].copy()
        ids, weights, _ = _assign(vectors, centroids, min(k, len(centroids)), config.soft_temperature)
        if k == 1:  # by position, not by search: items with equal vectors stay distinct interests
            ids[usable, 0] = np.arange(len(centroids), dtype=np.int32)
    else:
        centroids = _kmeans(vectors[usable], config.num_interests or default_num_interests(int(usable.sum())), config)
        ids, weights, _ = _assign(vectors, centroids, k, config.soft_temperature)
    ids[~usable], weights[~usable] = -1, 0.0
    interest_ids, interest_weights = _ragged(ids, weights, usable)
    meta = {**dataclasses.asdict(config), "num_interests": int(centroids.shape[0]), "num_items": len(item_ids),
            "items_without_embedding": int((~usable).sum()), "source": source or {}}
    log.info("interest vocabulary: %d items -> %d interests (%s assignment)", len(item_ids), centroids.shape[0], config.assignment)
    return Vocabulary(item_ids, interest_ids, interest_weights, centroids, meta)


def _kmeans(points: np.ndarray, d: int, config: VocabularyConfig) -> np.ndarray:
    """Spherical faiss k-means on a seeded sample of at most ``sample_size`` points.

    With ``restarts > 1`` the run with the highest mean cosine to the nearest centroid wins
    (scored here rather than with faiss' ``nredo``, whose objective is ambiguous for spherical runs).
    """
    if len(points) < d:
        raise TooManyInterests(f"cannot form {d} interests from {len(points)} items with embeddings; lower --num-interests "
                         f"(or --num-interests items: one interest per item)")
    rng = np.random.default_rng(config.seed)
    sample = points[rng.choice(len(points), size=min(config.sample_size, len(points)), replace=False)]
    best, best_score = None, -np.inf
    for run in range(config.restarts):
        km = faiss.Kmeans(points.shape[1], d, niter=config.niter, spherical=True, seed=config.seed + run, verbose=False,
                          max_points_per_centroid=max(256, -(-len(sample) // d)))
        km.train(sample)
        score = float(_assign(sample, km.centroids, 1, 1.0)[2].mean()) if config.restarts > 1 else 0.0
        if score > best_score:
            best, best_score = km.centroids.astype(np.float32), score
    return best


def _assign(vectors: np.ndarray, centroids: np.ndarray, k: int, temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k centroids by inner product (ids, softmax(sim / temperature) weights, sims)."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    sims, ids = index.search(vectors, k)
    logits = (sims - sims[:, :1]) / temperature
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    return ids.astype(np.int32), weights.astype(np.float32), sims


def _ragged(ids: np.ndarray, weights: np.ndarray, usable: np.ndarray) -> tuple[pa.ListArray, pa.ListArray]:
    """(N, k) arrays -> list arrays; items without an embedding get an empty list (no interest)."""
    lengths = np.where(usable, ids.shape[1], 0)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    keep = np.repeat(usable, ids.shape[1])
    return (pa.ListArray.from_arrays(offsets, pa.array(ids.reshape(-1)[keep], pa.int32())),
            pa.ListArray.from_arrays(offsets, pa.array(weights.reshape(-1)[keep], pa.float32())))
