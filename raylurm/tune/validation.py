"""The sweep's validation metric: user profiling on validation users, every epoch, never test users.

``val_auc`` is the mean, over the dataset's user label columns (ML-1M: gender, age,
occupation), of the validation AUC of a probe on the frozen representation (binary: AUC;
multi-class: macro one-vs-rest AUC). Users, probe and cut are the evaluator's
(:mod:`raylurm.evaluate.tasks`) for probe seed 0: the probe trains on seed 0's probe-train users
and is scored on seed 0's validation users; seed 0's test users are not even encoded. The
sweep report then scores the chosen checkpoints once, with the evaluator on seed 0 only, so
no test user of the report was seen while choosing (other seeds re-draw the cut and would put
validation users into their test part).

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
from raylurm.evaluate import metrics, probe
from raylurm.evaluate.tasks import assign, label_columns
from raylurm.ray_internals import report_to_tune
from raylurm.train.batch import collate
from raylurm.train.checkpoint import load_model

log = logging.getLogger(__name__)

METRIC = "val_auc"
MODE = "max"


@typed_config
class ValidationConfig:
    seed: Annotated[int, Field(
        ge=0, description="the evaluator's probe seed whose train/validation users are used")] = 0
    fractions: Annotated[tuple[float, float, float], Field(
        description="probe-train / validation / test shares of the users, as the evaluator's")] = (0.6, 0.2, 0.2)
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
    """Probe data for one split: history rows of the seed's probe-train and validation users + labels."""

    def __init__(self, history_boi: str | os.PathLike, users_parquet: str | os.PathLike, config: ValidationConfig = ValidationConfig()):
        self.config = config
        labels = label_columns(Path(users_parquet))
        if not labels:
            raise ValueError(f"{users_parquet}: no user label column with 2-50 values; the sweep's validation metric "
                             "(profiling AUC on validation users) needs one")
        table = pq.read_table(Path(history_boi) / "users")
        all_users = sorted(table["user_id"].to_pylist())
        self.columns = []  # (name, classes, train users, valid users, y_train, y_valid)
        needed: set = set()
        for column, mapping in labels.items():
            classes = mapping["__classes__"]
            users = np.array([u for u in all_users if mapping.get(u) is not None], dtype=object)
            train, valid, _test = assign(len(users), config.seed, config.fractions)
            y = np.array([classes.index(mapping[u]) for u in users.tolist()], dtype=np.int64)
            self.columns.append((column, classes, users[train], users[valid], y[train], y[valid]))
            needed.update(users[train].tolist())
            needed.update(users[valid].tolist())
        order = pa.array(sorted(needed), type=table.schema.field("user_id").type)
        self.table = table.filter(pc.is_in(table["user_id"], value_set=order))
        self.row_of = {u: i for i, u in enumerate(self.table["user_id"].to_pylist())}
        log.info("validation: %d label column(s), %d users encoded per epoch", len(self.columns), self.table.num_rows)

    @torch.no_grad()
    def embed(self, model: torch.nn.Module, scales: tuple[str, ...]) -> np.ndarray:
        model.eval()
        out = []
        for start in range(0, self.table.num_rows, self.config.batch_size):
            out.append(model.embed(collate(self.table.slice(start, self.config.batch_size), scales)).float().numpy())
        return np.concatenate(out)

    def score(self, model: torch.nn.Module, scales: tuple[str, ...]) -> dict[str, float]:
        """``val_auc`` and ``val_auc/<column>`` of ``model``'s representation."""
        z = self.embed(model, scales)
        config = probe.ProbeConfig(max_epochs=self.config.max_epochs, patience=self.config.patience,
                                   weight_decays=(self.config.weight_decay,))
        out = {}
        for column, classes, train_users, valid_users, y_train, y_valid in self.columns:
            rows = np.array([self.row_of[u] for u in np.concatenate([train_users, valid_users]).tolist()], dtype=np.int64)
            features = probe.Features(z[rows])
            train, valid = np.arange(len(train_users)), np.arange(len(train_users), len(rows))
            y = np.concatenate([y_train, y_valid])
            if len(classes) == 2:
                select = lambda p, r: metrics.auc(y[r], p.predict(r)[:, 0])  # noqa: E731
                fitted = probe.fit(features, y[:, None].astype(np.float32), train, valid, "sigmoid", 1, select,
                                   self.config.seed, config)
            else:
                select = lambda p, r: metrics.macro_ovr_auc(y[r], p.predict(r))  # noqa: E731
                fitted = probe.fit(features, y, train, valid, "softmax", len(classes), select, self.config.seed, config)
            out[f"{METRIC}/{column}"] = float(fitted.valid_score)
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
