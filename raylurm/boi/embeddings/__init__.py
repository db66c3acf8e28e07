"""Item embeddings for the Bag of Interests (LURM §3.1.1), from item text or item co-occurrence.

Two methods, chosen by :attr:`ItemEmbeddingConfig.method`, one module each:

* ``"text"`` (eq. 1-3, :mod:`~raylurm.boi.embeddings.text`): ``e_x = proj(mean_i W_{w_i})`` over the words of item ``x``'s text,
  trained with the symmetric InfoNCE of :func:`raylurm.losses.info_nce` on positive pairs: two
  events of one user less than β apart, on different items. One refinement of eq. 2: another
  copy of the anchor's or the partner's item in the batch is not counted as a negative
  (:func:`accidental_hits`; popular items recur within a batch of 2n).
* ``"cooccurrence"`` (:mod:`~raylurm.boi.embeddings.cooccurrence`; the paper: "other methods which can be used to generate item embedding
  are feasible"), for data without useful text: the same β-window pairs counted into a sparse
  item x item matrix, weighted by PPMI, factorised by randomized SVD (``U sqrt(S)``).
  **Items that never co-occur with another item get the zero vector**; their number is logged
  as a warning and stored as ``config["metrics"]["items_without_cooccurrence"]``.

Every item of ``items.parquet`` gets a row, also items absent from the events. Saved layout
(:meth:`ItemEmbeddings.save`, written atomically)::

    <dir>/items.parquet     item_id (row i <-> embeddings.npy[i])
    <dir>/embeddings.npy    (N, dim) float32, unit rows (zero rows: see above)
    <dir>/config.json       ItemEmbeddingConfig fields + "metrics"
    <dir>/model.pt          text only: TextItemEncoder state_dict
    <dir>/words.json        text only: the word vocabulary, index = word id

Both draw positive pairs with :mod:`raylurm.boi.embeddings.pairs`; :mod:`~raylurm.boi.embeddings.item_embeddings`
runs either and holds the result.
"""

from raylurm.boi.embeddings.config import EMBEDDING_METHODS, ItemEmbeddingConfig
from raylurm.boi.embeddings.item_embeddings import ItemEmbeddings, train_item_embeddings

__all__ = ["EMBEDDING_METHODS", "ItemEmbeddingConfig", "ItemEmbeddings", "train_item_embeddings"]
