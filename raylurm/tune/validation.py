"""The sweep's validation metric: user profiling on selection users, every epoch, never a test user.

``val_auc`` is the mean, over the dataset's user label columns (ML-1M: gender, age,
occupation), of the validation AUC of a probe on the frozen representation (binary: AUC;
multi-class: macro one-vs-rest AUC of the class probabilities, as the evaluator selects on).

Users: only the evaluator's **selection users** (:func:`raylurm.evaluate.cohorts.assign`'s
validation part: a fixed hash-chosen share ``fractions[1]`` of the users, the same for every
probe seed and every task, and never in any seed's test part). They are cut into ``folds``
folds by ``seed``; each fold is scored by a probe trained on the other folds (cross-fitting),
and a column's ``val_auc`` is the mean over folds. No other user is even encoded: the
evaluator's probe-train users of one seed are test users of another, so a probe trained on
them would let test labels steer the choice of checkpoint. Hence the sweep report no longer
needs to restrict its test metrics to probe seed 0 to avoid a leak: no seed's test user was
seen, as input or as label, while choosing.

Representations come from the split's ``history`` part — the input the evaluator profiles
from — so a sweep needs a split (``raylurm.evaluate.split``) whose dataset has label columns.

:class:`ValidationReport` is the Ray Train callback that turns each epoch's checkpoint into
``val_*`` metrics and hands them to Tune (the Train V2 + Tune pattern: Train runs inside a
function trainable, this callback replaces ``TuneReportCallback``). Each result carries the
epoch's ``checkpoint_path``, so the best epoch of the best trial is what the registry exports.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pydantic import Field, model_validator

from raylurm.config import typed_config
from raylurm.evaluate import cohorts, metrics, probe
from raylurm.evaluate.tasks import label_columns
from raylurm.ray_internals import report_to_tune
from raylurm.train.batch import collate
from raylurm.train.checkpoint import load_model

log = logging.getLogger(__name__)

METRIC = "val_auc"
MODE = "max"


@typed_config
class ValidationConfig:
    seed: Annotated[int, Field(
        ge=0, description="seed of the folds and the probes (the selection users do not depend on it)")] = 0
    fractions: Annotated[tuple[float, float, float], Field(
        description="probe-train / validation / test shares of the users, as the evaluator's: "
                    "the selection users are the validation share")] = (0.6, 0.2, 0.2)
    folds: Annotated[int, Field(
        ge=2, description="cross-fitting folds of the selection users: each is scored by a probe trained on the others")] = 2
    max_epochs: Annotated[int, Field(
        ge=1, description="probe epochs (early stopping on validation, patience below)")] = 20
    patience: Annotated[int, Field(ge=0, description="early stopping: epochs without improvement")] = 3
    # one value: the sweep compares encoders, not probe grids
    weight_decay: Annotated[float, Field(ge=0.0, description="the probe's weight decay")] = 1e-4
    batch_size: Annotated[int, Field(ge=1, description="encoding batch")] = 256

    @model_validator(mode="after")
    def _rules(self) -> ValidationConfig:
        if abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) <= 0:
            raise ValueError(f"fractions must be three positive shares summing to 1, got {self.fractions}")
        return self


class ProfilingValidation:
    """Probe data for one split: history rows of the selection users, their labels and folds."""

    metric = METRIC

    def __init__(self, history_boi: str | os.PathLike, users_parquet: str | os.PathLike, config: ValidationConfig = ValidationConfig()):
        self.config = config
        labels = label_columns(Path(users_parquet))
        if not labels:
            raise ValueError(f"{users_parquet}: no user label column with 2-50 values; the sweep's validation metric "
                             "(profiling AUC on validation users) needs one")
        table = pq.read_table(Path(history_boi) / "users")
        all_users = sorted(table["user_id"].to_pylist())
        self.columns = []  # (name, classes, selection users, their labels, their folds)
        needed: set = set()
        for column, mapping in labels.items():
            classes = mapping["__classes__"]
            users = np.array([u for u in all_users if mapping.get(u) is not None], dtype=object)
            _train, selection, _test = cohorts.assign(users, config.seed, config.fractions)  # only the selection users
            chosen = users[selection]
            if len(chosen) < config.folds:
                raise ValueError(f"{users_parquet}: column {column!r} has {len(chosen)} selection user(s), fewer than "
                                 f"the {config.folds} folds of the sweep's validation metric")
            y = np.array([classes.index(mapping[u]) for u in chosen.tolist()], dtype=np.int64)
            self.columns.append((column, classes, chosen, y, cohorts.folds(len(chosen), config.folds, config.seed)))
            needed.update(chosen.tolist())
        order = pa.array(sorted(needed), type=table.schema.field("user_id").type)
        self.table = table.filter(pc.is_in(table["user_id"], value_set=order))
        self.row_of = {u: i for i, u in enumerate(self.table["user_id"].to_pylist())}
        log.info("validation: %d label column(s), %d selection users encoded per epoch, %d folds", len(self.columns),
                 self.table.num_rows, config.folds)

    @property
    def users(self) -> set:
        """Every user whose representation or label the metric uses (the selection users)."""
        return set(self.table["user_id"].to_pylist())

    @torch.no_grad()
    def embed(self, model: torch.nn.Module, scales: tuple[str, ...]) -> np.ndarray:
        model.eval()
        out = []
        for start in range(0, self.table.num_rows, self.config.batch_size):
            out.append(model.embed(collate(self.table.slice(start, self.config.batch_size), scales)).float().numpy())
        return np.concatenate(out)

    def score(self, model: torch.nn.Module, scales: tuple[str, ...]) -> dict[str, float]:
        """``val_auc`` and ``val_auc/<column>`` of ``model``'s representation."""
        return self.score_features(self.embed(model, scales))

    def score_features(self, z: np.ndarray) -> dict[str, float]:
        """The metrics of representations ``z``, row-aligned with :attr:`table`."""
        config = probe.ProbeConfig(max_epochs=self.config.max_epochs, patience=self.config.patience,
                                   weight_decays=(self.config.weight_decay,))
        out = {}
        for column, classes, users, y, fold in self.columns:
            features = probe.Features(z[np.array([self.row_of[u] for u in users.tolist()], dtype=np.int64)])
            scores = []
            for k in range(self.config.folds):
                train, valid = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
                if len(classes) == 2:
                    select = lambda p, r: metrics.auc(y[r], p.predict(r)[:, 0])  # noqa: E731
                    fitted = probe.fit(features, y[:, None].astype(np.float32), train, valid, "sigmoid", 1, select,
                                       self.config.seed, config)
                else:
                    select = lambda p, r: metrics.macro_ovr_auc(y[r], metrics.softmax(p.predict(r)))  # noqa: E731
                    fitted = probe.fit(features, y, train, valid, "softmax", len(classes), select, self.config.seed, config)
                scores.append(float(fitted.valid_score))
            finite = [v for v in scores if not math.isnan(v)]
            out[f"{METRIC}/{column}"] = float(np.mean(finite)) if finite else math.nan
        values = [v for v in out.values() if not math.isnan(v)]
        out[METRIC] = float(np.mean(values)) if values else math.nan
        return out

    def score_checkpoint(self, directory: str | os.PathLike) -> dict[str, float]:
        model, meta = load_model(directory)
        return self.score(model, tuple(meta["info"]["scales"]))


def report_callback(history_boi: str, users_parquet: str, config: ValidationConfig = ValidationConfig()):
    """A Ray Train ``UserCallback`` (built in the Tune session) reporting ``val_*`` metrics to Tune."""
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

    class ValidationReport(TuneReportCallback):
        def __init__(self):
            super().__init__()
            self.spec = (history_boi, users_parquet, config)
            self._validation = None

        def after_report(self, run_context, metrics, checkpoint):
            out = dict(metrics[0])
            if checkpoint is not None:
                torch.set_num_threads(1)
                if self._validation is None:
                    self._validation = ProfilingValidation(*self.spec)
                with checkpoint.as_directory() as directory:
                    out.update(self._validation.score_checkpoint(directory))
                out[CHECKPOINT_PATH_KEY] = checkpoint.path
            report_to_tune(self, out)  # what TuneReportCallback.after_report does with its metrics

    return ValidationReport()
