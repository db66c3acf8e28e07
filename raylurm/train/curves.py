"""A pretraining run's learning curves, read back from its TensorBoard logs.

Every epoch's metrics (loss, ``val_*``, ``epoch_seconds``, ``validation_seconds``) are scalars
``train/<name>`` at the epoch's last optimiser step (:class:`raylurm.train.fit.TensorBoardCallback`);
a resumed run appends to the same directory and may repeat epochs it redoes, so the latest
write of each step wins. The report turns these into the "training" table and plot of RESULTS.md
(epochs to the best validation value, epochs trained, wall time).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def read_curves(run_dir: str | Path) -> pd.DataFrame:
    """-> one row per epoch (columns ``epoch``, ``step`` and each logged metric), empty if the run has no logs."""
    logdir = Path(run_dir) / "tensorboard"
    if not logdir.is_dir():
        return pd.DataFrame(columns=["epoch", "step"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # lazy: heavy import

    records = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        try:
            events.Reload()
        except Exception as error:  # a truncated file of a killed run: keep what the others hold
            log.warning("skipping unreadable TensorBoard file %s: %s", path, error)
            continue
        for tag in events.Tags().get("scalars", []):
            name = tag.split("/", 1)[-1]
            records += [(name, e.step, e.wall_time, e.value) for e in events.Scalars(tag)]
    if not records:
        return pd.DataFrame(columns=["epoch", "step"])
    frame = pd.DataFrame(records, columns=["metric", "step", "wall_time", "value"])
    frame = frame.sort_values("wall_time", kind="stable").drop_duplicates(["metric", "step"], keep="last")
    wide = frame.pivot(index="step", columns="metric", values="value").sort_index().reset_index()
    wide.columns.name = None
    wide.insert(0, "epoch", range(1, len(wide) + 1))
    return wide


def summarise_run(curves: pd.DataFrame, metric: str | None) -> dict:
    """Epochs trained, the best epoch and value of ``metric`` (``val_*``), wall time (training + validation), in seconds."""
    if curves.empty:
        return {"epochs": 0, "best_epoch": None, "best_value": None, "seconds": None}
    seconds = sum(curves[c].fillna(0.0).sum() for c in ("epoch_seconds", "validation_seconds") if c in curves)
    out = {"epochs": int(curves["epoch"].max()), "best_epoch": None, "best_value": None, "seconds": float(seconds)}
    if metric and metric in curves and curves[metric].notna().any():
        best = curves.loc[curves[metric].idxmax()]
        out.update(best_epoch=int(best["epoch"]), best_value=float(best[metric]))
    return out
