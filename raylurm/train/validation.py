"""The validation signal of a pretraining run: one metric after every epoch, for early stopping and the best epoch.

A run pretrained on a split (``fit(..., split=...)``) is validated on held-out data it never
trained on, on rank 0 inside the training loop, and the loop stops when the metric has not
improved for ``TrainConfig.patience`` epochs; the checkpoint of the best epoch is the run's result
(Ray Train keeps it by ``checkpoint_score_attribute``, and ``meta.json`` records the metric so
the evaluator and the registry pick it: :func:`raylurm.train.checkpoint.best_in_run`).

* :class:`NextItemValidation` (methods with ``score_items``: ATRank, DSS, the SASRec baseline) —
  ``val_ndcg10``: NDCG@10 of each user's **validation item** (their second-to-last event, held out
  of pretraining) ranked against every vocabulary item, the items of the user's encoded history
  masked (the row holds at most ``max_sequence_length`` of them: an early-stopping signal, not the
  evaluator's exact protocol, which masks the whole history and ranks items with events only).
* :class:`raylurm.tune.validation.ProfilingValidation` (representation-only methods: LURM, AdaptSSR)
  — ``val_auc``: the probe AUC on the selection users, the same metric Tune's sweeps select on.

Neither reads a test item or a test user's label.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from raylurm.evaluate.metrics import target_ranks
from raylurm.evaluate.split import Split
from raylurm.train.batch import collate
from raylurm.tune.validation import ProfilingValidation

log = logging.getLogger(__name__)

NEXT_ITEM_METRIC = "val_ndcg10"
PROFILING_METRIC = "val_auc"


class NextItemValidation:
    """The validation item of the split's users (or ``max_users`` of them), ranked by the model's own scorer."""

    metric = NEXT_ITEM_METRIC

    def __init__(self, boi_dir: str | os.PathLike, targets_parquet: str | os.PathLike, max_users: int | None = None,
                 batch_size: int = 256):
        boi_dir = Path(boi_dir)
        vocabulary = pq.read_table(boi_dir / "vocabulary" / "items.parquet", columns=["item_id"])["item_id"].to_pylist()
        index = {item: i for i, item in enumerate(vocabulary)}
        targets = pq.read_table(targets_parquet, columns=["user_id", "valid_item"]).to_pylist()
        valid = {r["user_id"]: index[r["valid_item"]] for r in targets if r["valid_item"] in index}
        table = pq.read_table(boi_dir / "users")
        users = sorted(u for u in table["user_id"].to_pylist() if u in valid)
        if max_users is not None and len(users) > max_users:  # a fixed sample: the same users every epoch
            users = sorted(np.random.default_rng(0).choice(np.array(users, dtype=object), max_users, replace=False).tolist())
        self.table = table.filter(pc.is_in(table["user_id"], value_set=pa.array(users, type=table.schema.field("user_id").type)))
        self.target = np.array([valid[u] for u in self.table["user_id"].to_pylist()], dtype=np.int64)
        self.num_items, self.batch_size = len(vocabulary), batch_size
        if not len(self.target):
            raise ValueError(f"{targets_parquet}: no user of {boi_dir} has a validation item in the vocabulary")
        log.info("validation: next item of %d users (%s)", len(self.target), self.metric)

    @torch.no_grad()
    def score(self, model: torch.nn.Module, scales: tuple[str, ...]) -> dict[str, float]:
        """``val_ndcg10`` and ``val_hr10`` of ``model.score_items``; leaves the model's training mode as it was."""
        was_training = model.training
        model.eval()
        ranks = []
        for start in range(0, self.table.num_rows, self.batch_size):
            batch = collate(self.table.slice(start, self.batch_size), scales)
            scores = model.score_items(batch, torch.arange(self.num_items)).float().numpy()  # (b, C)
            target = self.target[start:start + len(scores)]
            seen = np.zeros(scores.shape, dtype=bool)
            rows, cols = np.nonzero(batch["items"].numpy())
            seen[rows, batch["items"].numpy()[rows, cols] - 1] = True  # the encoded history (ids are shifted by 1)
            seen[np.arange(len(scores)), target] = False
            ranks.append(target_ranks(scores, target, seen, what="validation scores"))
        model.train(was_training)
        rank = np.concatenate(ranks)
        hit = rank < 10
        return {self.metric: float(np.mean(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0))), "val_hr10": float(hit.mean())}


def for_run(model: torch.nn.Module, boi_dir: str | os.PathLike, max_users: int | None = None):
    """The validation of a run pretrained on the split whose ``boi/pretrain`` is ``boi_dir``.

    Next item for models with ``score_items``; profiling AUC for the others when the dataset has
    user labels; None when neither is possible (the run trains for its epochs, the last one kept)."""
    split = Split.load(Path(boi_dir).parents[1])
    try:
        if hasattr(model, "score_items"):
            return NextItemValidation(boi_dir, split.targets, max_users=max_users)
        users = split.dataset("history") / "users.parquet"
        if users.exists():
            return ProfilingValidation(boi_dir, users)
    except ValueError as error:  # no validation item / no label column: nothing to validate on
        log.warning("no validation for this run (every epoch is kept, none stops it): %s", error)
    return None
