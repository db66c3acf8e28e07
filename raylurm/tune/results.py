"""Reading a finished (or interrupted) sweep from disk: trials, their epochs, the best of each method.

Reads the files Tune writes in every trial directory (``params.json``: the sampled options;
``result.json``: one JSON line per reported epoch; ``error.txt`` if the trial failed), so a
report needs no running Ray and works on a copy of the experiment directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

from raylurm.data.prepare import data_home
from raylurm.tune.validation import METRIC

SWEEP_JSON = "sweep.json"  # written by raylurm.tune.run at the experiment's root


def default_storage() -> Path:
    """Where sweeps go by default: ``$RAYLURM_HOME/tune``."""
    return data_home() / "tune"


def resolve_experiment(value: str, storage: str | None = None) -> Path:
    """An experiment directory from a path, or from its name under ``storage`` (default :func:`default_storage`)."""
    for candidate in (Path(value), Path(storage or default_storage()) / value):
        if (candidate / SWEEP_JSON).exists():
            return candidate
    raise FileNotFoundError(f"no sweep experiment at {value!r} (looked for a path and a name under {storage or default_storage()})")


@dataclasses.dataclass
class Trial:
    method: str
    trial_id: str
    path: Path
    config: dict[str, Any]
    epochs: list[dict[str, Any]]  # reported results, in order
    error: str | None = None

    @property
    def best(self) -> dict[str, Any] | None:
        """The epoch with the highest validation metric (``None`` if no epoch was scored)."""
        scored = [r for r in self.epochs if not math.isnan(r.get(METRIC, math.nan))]
        return max(scored, key=lambda r: r[METRIC]) if scored else None

    @property
    def best_value(self) -> float:
        return self.best[METRIC] if self.best else math.nan

    @property
    def last_epoch(self) -> int:
        return int(self.epochs[-1].get("epoch", len(self.epochs))) if self.epochs else 0

    def status(self, max_epochs: int) -> str:
        if self.error:
            return "error"
        if self.last_epoch >= max_epochs:
            return "complete"
        return f"stopped at epoch {self.last_epoch}" if self.epochs else "not started"


def sweep_record(experiment: Path) -> dict[str, Any]:
    path = Path(experiment) / SWEEP_JSON
    if not path.exists():
        raise FileNotFoundError(f"{experiment} is not a raylurm sweep (no {SWEEP_JSON}); run python -m raylurm.tune first")
    return json.loads(path.read_text())


def load_trials(experiment: Path) -> dict[str, list[Trial]]:
    """``{method: [Trial, …]}`` for every method directory of the experiment, trials sorted by id."""
    experiment = Path(experiment)
    record = sweep_record(experiment)
    out: dict[str, list[Trial]] = {}
    for method in record["methods"]:
        trials = []
        for params in sorted((experiment / method).glob("*/params.json")):
            trial_dir = params.parent
            rows = []
            result = trial_dir / "result.json"
            if result.exists():
                for line in result.read_text().splitlines():
                    if line.strip():
                        rows.append(json.loads(line))
            error = trial_dir / "error.txt"
            trials.append(Trial(method, rows[0].get("trial_id", trial_dir.name) if rows else trial_dir.name, trial_dir,
                                json.loads(params.read_text()), rows, error.read_text()[-2000:] if error.exists() else None))
        if trials:
            out[method] = trials
    return out


def best_trials(trials: dict[str, list[Trial]]) -> dict[str, Trial]:
    """The trial with the best validation epoch, per method (methods with no scored epoch are left out)."""
    out = {}
    for method, group in trials.items():
        scored = [t for t in group if t.best is not None]
        if scored:
            out[method] = max(scored, key=lambda t: t.best_value)
    return out


def register_best(experiment: Path, registry) -> dict[str, tuple[Any, bool]]:
    """Export each method's best (trial, epoch) by the validation metric into ``registry``; offer it for serving."""
    experiment = Path(experiment)
    record = sweep_record(experiment)
    out = {}
    for method, trial in best_trials(load_trials(experiment)).items():
        best = trial.best
        checkpoint = best.get("checkpoint_path")
        if not checkpoint:
            continue
        epoch = int(best.get("epoch", 0))
        entry = registry.register(checkpoint, {
            "method": method, "metric": METRIC, "mode": record.get("mode", "max"),
            "metrics": {k: v for k, v in best.items() if k.startswith("val_")}, "epoch": epoch, "step": best.get("step"),
            "config": trial.config, "train": record.get("train"), "split": record.get("split"),
            "dataset": record.get("dataset"), "experiment": experiment.name, "sweep_file": record.get("file"),
            "trial_id": trial.trial_id, "trial_path": str(trial.path),
            # whose representations Serve indexes for similar-users (the pretraining users)
            "users_dir": str(Path(record["split_root"]) / "boi" / "pretrain" / "users") if record.get("split_root") else None,
        }, name=f"{experiment.name}.{trial.trial_id}.e{epoch}",
            boi_dir=Path(record["split_root"]) / "boi" / "pretrain" if record.get("split_root") else None)
        out[method] = (entry, registry.offer(entry))
    return out


def prune_checkpoints(experiment: Path, method: str) -> int:
    """Delete each finished trial's checkpoints except its best epoch's and its latest (to resume); return bytes freed.

    Every epoch is kept while trials run (the best epoch is only known at the end); afterwards a
    sweep would otherwise keep trials × epochs checkpoints with their optimizer state."""
    freed = 0
    for trial in load_trials(Path(experiment)).get(method, []):
        if not trial.epochs:
            continue
        keep = {trial.epochs[-1].get("checkpoint_path"), trial.best.get("checkpoint_path") if trial.best else None}
        for directory in (trial.path / "train").glob("checkpoint_*"):
            if directory.is_dir() and str(directory) not in keep:
                freed += sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
                shutil.rmtree(directory, ignore_errors=True)
    return freed
