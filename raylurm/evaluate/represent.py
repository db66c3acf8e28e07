"""Frozen user representations: checkpoints through Ray Data batch inference, and the baselines.

* :func:`encode` — one ``read_parquet([<part>/users …], include_paths=True).map_batches(Encoder,
  compute=ActorPoolStrategy)`` pass over every input part:
  each actor rebuilds the model from the checkpoint once (or initialises it randomly with a
  seed: the *random-init* baseline of the same architecture) and returns ``embed(batch)`` and,
  for methods with an item scorer of their own (ATRank, DSS), the next-item scores of every
  vocabulary item.
* :func:`raw_boi` — the LURM paper's *BoI* row: the user's whole-history bag
  ``log(1 + Σ_t count_t)`` per interest, a sparse D-dimensional vector (never densified).
* :func:`item_counts` / :func:`tfidf` — the user × item count matrix of a dataset part and the
  TF-IDF of the user's item texts (term counts of the concatenated texts; IDF and
  normalisation from scikit-learn, fitted on the probe-training users only).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

from raylurm.train.batch import collate
from raylurm.train.checkpoint import build_model, load_model, read_meta

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Representation:
    """Rows aligned with ``user_ids``: dense (n, d) or sparse CSR features; optional (n, items) scores."""

    user_ids: np.ndarray
    features: np.ndarray | sp.csr_matrix
    scores: np.ndarray | None = None


class Encoder:
    """Ray Data actor: BoI rows (pyarrow, with their file ``path``) -> user_id, path, embedding, scores.

    ``scores`` (list<float32>, one per vocabulary item) is filled only for rows read from a path
    containing one of ``score_paths`` (and only for models with ``score_items``); empty otherwise."""

    def __init__(self, checkpoint: str, random_init_seed: int | None = None, score_paths: tuple[str, ...] = (),
                 score_users: list | None = None):
        torch.set_num_threads(max(1, int(os.environ.get("RAYLURM_INFERENCE_THREADS", "1"))))
        if random_init_seed is None:
            self.model, meta = load_model(checkpoint)
        else:
            meta = read_meta(checkpoint)
            torch.manual_seed(random_init_seed)
            self.model = build_model(meta).eval()
        self.scales = tuple(meta["info"]["scales"])
        self.num_items = int(meta["info"]["num_items"])
        self.score_paths = tuple(score_paths) if hasattr(self.model, "score_items") else ()
        self.score_users = None if score_users is None else set(score_users)

    @torch.no_grad()
    def __call__(self, table: pa.Table) -> pa.Table:
        batch = collate(table, self.scales)
        z = self.model.embed(batch).float().numpy()
        paths = table["path"].to_pylist()
        wanted = np.array([any(m in p for m in self.score_paths) for p in paths], dtype=bool)
        if self.score_users is not None and wanted.any():
            wanted &= np.array([u in self.score_users for u in table["user_id"].to_pylist()], dtype=bool)
        sizes = np.where(wanted, self.num_items, 0)
        values = np.zeros(0, np.float32)
        if wanted.any():
            sub = batch if wanted.all() else collate(table.take(pa.array(np.flatnonzero(wanted))), self.scales)
            values = self.model.score_items(sub, torch.arange(self.num_items)).float().numpy().reshape(-1)
        offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
        return pa.table({"user_id": table["user_id"], "path": table["path"], "embedding": _fixed(z),
                         "scores": pa.ListArray.from_arrays(offsets, pa.array(values, pa.float32()))})


def _fixed(matrix: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(matrix, np.float32).reshape(-1)), matrix.shape[1])


def _matrix(column: pa.ChunkedArray | pa.Array, width: int | None = None) -> np.ndarray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = width if width is not None else array.type.list_size
    return array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), width)


def encode(checkpoint: str | os.PathLike, parts: dict[str, Path], random_init_seed: int | None = None,
           score_parts: tuple[str, ...] = (), score_users: list | None = None, batch_size: int = 256) -> dict[str, Representation]:
    """Ray Data batch inference of a checkpoint (or its random-init twin) over BoI directories, in one pass.

    ``parts`` maps a name to a BoI directory; ``score_parts`` names the parts that also need item
    scores, for ``score_users`` only when given (scoring every item is the expensive part).
    A part's ``scores`` rows are aligned with its users; users without scores get a row of NaN."""
    import ray  # lazy: Ray's import costs seconds; only runs that use it pay

    marker = {part: f"/{Path(boi).parent.name}/{Path(boi).name}/users/" for part, boi in parts.items()}
    if len(set(marker.values())) != len(marker):
        raise ValueError(f"BoI directories need distinct names to be told apart: {sorted(parts.values())}")
    workers = max(1, int(ray.available_resources().get("CPU", 1)) - 1)
    ds = ray.data.read_parquet([str(Path(boi) / "users") for boi in parts.values()], include_paths=True)
    ds = ds.map_batches(Encoder, fn_constructor_kwargs={"checkpoint": str(checkpoint), "random_init_seed": random_init_seed,
                                                        "score_paths": tuple(marker[p] for p in score_parts),
                                                        "score_users": None if score_users is None else list(score_users)},
                        batch_size=batch_size, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers))
    table = pa.concat_tables([t for t in ray.get(ds.to_arrow_refs()) if t.num_rows])
    paths = table["path"].to_pylist()
    out = {}
    for part in parts:
        rows = pa.array(np.flatnonzero([marker[part] in p for p in paths]), pa.int64())
        sub = table.take(rows)
        scores = sub["scores"].combine_chunks()
        sizes = pc.list_value_length(scores).to_numpy(zero_copy_only=False)
        matrix = None
        if len(sub) and sizes.max() > 0:
            width = int(sizes.max())
            matrix = np.full((len(sub), width), np.nan, dtype=np.float32)
            matrix[sizes > 0] = scores.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
        out[part] = Representation(sub["user_id"].to_numpy(zero_copy_only=False), _matrix(sub["embedding"]), matrix)
    return out


def raw_boi(boi_dir: Path) -> Representation:
    """Whole-history bag per user from the finest scale present: ``log1p(Σ_t expm1(b_t))`` — sparse (n, D)."""
    manifest = json.loads((boi_dir / "manifest.json").read_text())
    scale = manifest["config"]["boi"]["scales"][0]
    table = pq.read_table(boi_dir / "users", columns=["user_id", f"{scale}_ids", f"{scale}_values"])
    ids, values = table[f"{scale}_ids"].combine_chunks(), table[f"{scale}_values"].combine_chunks()
    per_bag = ids.flatten()
    user_of_bag = pc.list_parent_indices(ids).to_numpy()
    rows = np.repeat(user_of_bag, pc.list_value_length(per_bag).to_numpy(zero_copy_only=False))
    cols = per_bag.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.expm1(values.flatten().flatten().to_numpy(zero_copy_only=False).astype(np.float64))
    matrix = sp.csr_matrix((counts, (rows, cols)), shape=(table.num_rows, manifest["num_interests"]))  # sums duplicates
    matrix.data = np.log1p(matrix.data)
    return Representation(table["user_id"].to_numpy(zero_copy_only=False), matrix.astype(np.float32))


def item_index(boi_dir: Path) -> dict:
    """Raw item id -> vocabulary index (the item order of every checkpoint's scorer)."""
    items = pq.read_table(boi_dir / "vocabulary" / "items.parquet", columns=["item_id"])["item_id"].to_pylist()
    return {item: i for i, item in enumerate(items)}


def item_counts(dataset_dir: Path, users: np.ndarray, index: dict) -> sp.csr_matrix:
    """User × vocabulary-item event counts of a dataset part, rows aligned with ``users`` (missing users: empty)."""
    events = pads.dataset(dataset_dir / "events", format="parquet").to_table(columns=["user_id", "item_id"])
    row_of = {u: i for i, u in enumerate(users.tolist())}
    rows = np.array([row_of.get(u, -1) for u in events["user_id"].to_pylist()], dtype=np.int64)
    cols = np.array([index.get(i, -1) for i in events["item_id"].to_pylist()], dtype=np.int64)
    keep = (rows >= 0) & (cols >= 0)
    return sp.csr_matrix((np.ones(keep.sum(), np.float32), (rows[keep], cols[keep])), shape=(len(users), len(index)))


def item_popularity(dataset_dir: Path, index: dict) -> np.ndarray:
    """Events per vocabulary item in a dataset part -> (items,)."""
    events = pads.dataset(dataset_dir / "events", format="parquet").to_table(columns=["item_id"])
    counts = pc.value_counts(events["item_id"]).flatten()
    out = np.zeros(len(index), dtype=np.float64)
    for item, count in zip(counts[0].to_pylist(), counts[1].to_pylist()):
        if item in index:
            out[index[item]] = count
    return out


def item_term_counts(dataset_dir: Path, index: dict) -> tuple[sp.csr_matrix, list[str]]:
    """Vocabulary-item × term counts of the items' text (scikit-learn's tokenizer, English stop words)."""
    from sklearn.feature_extraction.text import CountVectorizer  # lazy: scikit-learn

    items = pq.read_table(dataset_dir / "items.parquet")
    text_of = dict(zip(items["item_id"].to_pylist(), items["text"].to_pylist() if "text" in items.column_names
                       else [str(i) for i in items["item_id"].to_pylist()]))
    texts = [text_of.get(item) or str(item) for item in sorted(index, key=index.get)]
    vectorizer = CountVectorizer(stop_words="english", min_df=1)
    return vectorizer.fit_transform(texts).tocsr().astype(np.float32), list(vectorizer.get_feature_names_out())


def tfidf(counts: sp.csr_matrix, item_terms: sp.csr_matrix, train_rows: np.ndarray) -> sp.csr_matrix:
    """TF-IDF of each user's concatenated item texts; IDF fitted on ``train_rows`` only; rows L2-normalised."""
    from sklearn.feature_extraction.text import TfidfTransformer  # lazy: scikit-learn

    term_counts = (counts @ item_terms).tocsr()
    transformer = TfidfTransformer(sublinear_tf=True).fit(term_counts[train_rows])
    return transformer.transform(term_counts).tocsr().astype(np.float32)
