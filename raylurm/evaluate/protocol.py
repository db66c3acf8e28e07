"""The evaluation protocol as configuration, and what every task shares: subjects, alignment, per-user rows.

Defaults are the public full-ranking leave-one-out protocol of the ML-1M anchors (SASRec,
Kang & McAuley 2018, as re-run full-ranking by HSTU, Zhai et al. 2024): every user with a
held-out item is scored, the candidates are every item with at least one event, the user's
input history is masked and the target never is; HR/NDCG at 1, 5, 10, 20. The 100
popularity-sampled negatives of the SASRec paper are a second, clearly labelled protocol.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Callable, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from raylurm.config import typed_config
from raylurm.evaluate.probe import ProbeConfig
from raylurm.evaluate.represent import Representation

TASKS = ("profiling", "category", "next_item")  # the default tasks
# only where the dataset keeps its generating truth (synthetic data: truth.parquet; raylurm.evaluate.recovery)
OPTIONAL_TASKS = ("recovery",)
USER_COLUMNS = ("task", "target", "model", "group", "run", "seed", "user_id", "kind", "label", "score", "pred", "rank")


@typed_config
class EvalConfig:
    seeds: Annotated[tuple[int, ...], Field(
        description="probe seeds (profiling, category): each draws its own probe-train/test cut of the non-selection users")] = (
        0, 1, 2)
    fractions: Annotated[tuple[float, float, float], Field(description=(
        "probe-train / selection / test shares of the users; the selection share is fixed by a hash of the user id "
        "(raylurm.evaluate.cohorts), the same for Tune and every seed, and never a test user"))] = (0.6, 0.2, 0.2)
    probe: ProbeConfig = ProbeConfig()
    tasks: Annotated[tuple[str, ...], Field(
        description="a subset of profiling, category, next_item, recovery (synthetic data only)")] = TASKS
    # ---------------------------------------------------------------- next item (leave-one-out)
    catalogue: Annotated[Literal["events", "vocabulary"], Field(description=(
        "next item candidates: 'events' = items with at least one event in the dataset (the anchors' 3,706 on ML-1M), "
        "'vocabulary' = every item of the item table"))] = "events"
    mask_history: Annotated[bool, Field(description="next item: mask the user's input items out of the ranking (target never)")] = True
    negatives: Annotated[int, Field(ge=1, description="next item, sampled protocol: negatives per target")] = 100
    negative_sampling: Annotated[Literal["popularity", "uniform"], Field(
        description="next item, sampled protocol: negatives drawn by pretraining popularity or uniformly")] = "popularity"
    next_item_seeds: Annotated[tuple[int, ...], Field(description=(
        "next item seeds (negatives, head folds and init); every seed scores every user, so one is the default: "
        "each costs head_folds head fits per model"))] = (0,)
    head_prefixes: Annotated[int, Field(ge=1, description=(
        "next-item head: (prefix -> next item) training examples drawn per user from the pretraining events"))] = 8
    head_folds: Annotated[int, Field(ge=2, description=(
        "next-item head: K of the K-fold cross-fitting over users (each fold's users are scored by a head that never saw "
        "them; cost grows with K - 1)"))] = 2
    head: ProbeConfig = ProbeConfig(max_epochs=30, patience=3, weight_decays=(0.0,))
    own_scorer_head: Annotated[bool, Field(
        description="next item: also put the embeddings of methods with an own scorer (ATRank, DSS) through the head")] = True

    @model_validator(mode="after")
    def _rules(self) -> EvalConfig:
        if len(self.seeds) < 1 or len(self.next_item_seeds) < 1 or abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) <= 0:
            raise ValueError(f"need >= 1 seed and three positive fractions summing to 1, got seeds={self.seeds}, "
                             f"fractions={self.fractions}")
        if set(self.tasks) - set(TASKS + OPTIONAL_TASKS):
            raise ValueError(f"tasks must be a subset of {sorted(TASKS + OPTIONAL_TASKS)}, got {self.tasks}")
        return self


@dataclasses.dataclass
class Subject:
    """Something to evaluate: a representation source per dataset part (or a fixed scorer)."""

    name: str
    group: str  # "pretrained" | "random init" | "baseline"
    represent: Callable[[str], Representation] | None  # part -> representation (None: no representation)
    tfidf: bool = False  # features are user × item counts to turn into TF-IDF per fit
    popularity: bool = False  # next item only: score by popularity
    majority: bool = False  # classification only: the training users' majority class / label prior
    run: int = 0  # pretraining replica (--pretrain-seeds)
    checkpoint: Path | None = None  # the pretrained checkpoint behind it (pretrained and random-init subjects)
    seed: int | None = None  # the random-init twin's torch seed
    vocabulary: str | None = None  # the hash of the interest vocabulary it reads (raw BoI, LURM); None: reads none


def align(rep: Representation, users: np.ndarray, what: str) -> Representation:
    """``rep`` reordered to ``users`` (every user must be present)."""
    position = {u: i for i, u in enumerate(rep.user_ids.tolist())}
    missing = [u for u in users.tolist() if u not in position]
    if missing:
        raise ValueError(f"{what}: {len(missing)} users have no representation, e.g. {missing[:3]}")
    rows = np.array([position[u] for u in users.tolist()], dtype=np.int64)
    return Representation(users, rep.features[rows], None if rep.scores is None else rep.scores[rows])


def user_frame(task: str, target: str, kind: str, seed: int, users: np.ndarray, *, label=None, score=None, pred=None,
               rank=None) -> pd.DataFrame:
    """Per-user results of one (task, target, seed) in the ``results_by_user.parquet`` schema (model/group/run added later)."""
    n = len(users)
    nan = np.full(n, np.nan)
    return pd.DataFrame({
        "task": task, "target": target, "seed": seed, "user_id": [str(u) for u in users.tolist()], "kind": kind,
        "label": nan if label is None else np.asarray(label, np.float64),
        "score": nan if score is None else np.asarray(score, np.float64),
        "pred": np.full(n, -1, np.int64) if pred is None else np.asarray(pred, np.int64),
        "rank": np.full(n, -1, np.int64) if rank is None else np.asarray(rank, np.int64)})
