"""Running a sweep: one Ray Tune experiment per method, each trial a Ray Train run.

Layout under the storage path (``$RAYLURM_HOME/tune`` by default; ``s3://…`` passes through)::

    <storage>/<experiment>/sweep.json          the sweep as run: file, methods, TRAIN, SEARCH, split
    <storage>/<experiment>/<method>/           a Tune experiment (Tuner.restore-able)
        <trial>/                               Tune's trial dir: params.json, result.json, TensorBoard events
        <trial>/train/checkpoint_*/            the trial's Ray Train checkpoints, one per epoch

Each method gets its own experiment so that ASHA compares trials of the same method only (a
cross-method ASHA would stop a method early for being a different method) and so that a
method's sweep finishes, and is registered, before the next one starts.

The trainable is the Train V2 pattern of Ray 2.60: a function trainable (0.01 CPU of its own)
that builds a ``TorchTrainer``; the trainer's callback (:mod:`raylurm.tune.validation`) scores
every epoch's checkpoint on validation users and reports to Tune. A restarted trial (``--resume``
after the driver died) resumes its Train run from its latest checkpoint: same run name, same
storage path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import ray
import ray.data
import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.sample import Categorical, Float, Integer

from raylurm.config import to_dict
from raylurm.data.io import atomic_file
from raylurm.methods import METHODS
from raylurm.ray_internals import ReleaseStoppedTrials  # also under this name: pickled experiments refer to it
from raylurm.train.batch import DataInfo
from raylurm.train.config import TrainConfig
from raylurm.train.fit import as_windows, tensorboard_callback, training_window
from raylurm.train.loop import train_loop_per_worker
from raylurm.tune import sweeps
from raylurm.tune.results import SWEEP_JSON, prune_checkpoints
from raylurm.tune.validation import METRIC, MODE, report_callback

log = logging.getLogger(__name__)

DEFAULT_NUM_WORKERS = 1  # per trial: small models train best as many 1-worker trials side by side
TRIAL_CPU = 0.01  # the function trainable's own share (Tune refuses 0)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every trial of one method needs besides its sampled options (passed with ``tune.with_parameters``)."""

    method: str
    train: dict[str, Any]  # TrainConfig fields except method
    boi: str  # the split's pretraining BoI
    history_boi: str  # the split's history BoI (validation input)
    users_parquet: str  # label columns (validation targets)
    split: str  # split id, recorded in every checkpoint
    experiment_path: str  # <storage>/<experiment>/<method>, a URI or a local path
    windows: int | None = None  # events per training window of the method's default config (the dataset holds windows)


def trial(config: dict[str, Any], setup: Setup, dataset) -> None:
    """The function trainable: one Ray Train run of ``setup.method`` with the sampled ``config`` on ``dataset``
    (the BoI rows, materialised once per sweep by :func:`run_sweep`)."""
    train = TrainConfig(method=setup.method, **setup.train)
    model_config = sweeps.method_config(setup.method, config)
    info = DataInfo.from_boi(Path(setup.boi))
    context = tune.get_context()
    trial_dir = Path(context.get_trial_dir())
    trial_storage = _join(setup.experiment_path, trial_dir.name)
    loop_config = {"train": dataclasses.asdict(train), "windows": setup.windows, "method": setup.method, "method_config": to_dict(model_config),
                   "info": dataclasses.asdict(info), "split": setup.split, "boi_dir": setup.boi, "fault_marker": str(trial_dir / ".fault-injected")}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        # the trial's driver holds TRIAL_CPU; its workers take the rest of a CPU each, so N CPUs fit N 1-worker trials
        scaling_config=ray.train.ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,
                                               resources_per_worker={"CPU": 1.0 - TRIAL_CPU / train.num_workers,
                                                                     **({"GPU": 1} if train.use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name="train", storage_path=trial_storage,
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=setup.train.get("keep_checkpoints")),
            callbacks=[report_callback(setup.history_boi, setup.users_parquet), tensorboard_callback(trial_dir / "train-steps")],
        ),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    if result.error:
        raise result.error


def _join(base: str, *parts: str) -> str:
    """``base``/``parts``: a URI joined as text; a local path made absolute (Tune refuses a relative storage path:
    "URI has empty scheme")."""
    return "/".join([base.rstrip("/"), *parts]) if "://" in base else str(Path(base, *parts).expanduser().resolve())


class ReleaseCallback(tune.Callback):
    """The Tune side of :class:`~raylurm.ray_internals.ReleaseStoppedTrials` (pickled with the experiment, so
    restores keep it)."""

    def __init__(self):
        self.releaser = ReleaseStoppedTrials()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.releaser.trial_ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.releaser.trial_ended(trial)

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.releaser.checked > 1.0:
            self.releaser.checked = time.monotonic()
            self.releaser.release()

    def on_experiment_end(self, trials, **info):
        deadline = time.monotonic() + 30
        while self.releaser.pending and time.monotonic() < deadline:
            self.releaser.release(force_after_s=20.0)
            time.sleep(0.5)


def concurrency(num_workers: int, use_gpu: bool, cap: int | None = None) -> int:
    """Trials that fit side by side in the cluster's resources: CPUs (or GPUs) / workers per trial."""
    resources = ray.cluster_resources()
    slots = int(resources.get("GPU", 0) // num_workers) if use_gpu else int(resources.get("CPU", 1) // num_workers)
    slots = max(1, slots)
    return min(slots, cap) if cap else slots


def scheduler(search: dict[str, Any], max_t: int):
    if search["scheduler"] == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=min(search.get("grace_period", 1), max_t),
                         reduction_factor=search.get("reduction_factor", 3))


def smoke(sweep: sweeps.Sweep) -> sweeps.Sweep:
    """``--smoke-test``: the same spaces, two trials per method, two short epochs."""
    train = {**sweep.train, "epochs": 2, "max_steps_per_epoch": 2}
    search = {**sweep.search, "num_samples": min(2, sweep.search["num_samples"]), "grace_period": 1}
    return dataclasses.replace(sweep, train=train, search=search)


def experiment_dir(storage: str, name: str) -> str:
    return _join(storage, name)


def run_sweep(sweep: sweeps.Sweep, split, storage: str, name: str, resume: bool = False,
              methods: list[str] | None = None, max_concurrent: int | None = None) -> dict[str, Any]:
    """Run (or resume) every method's experiment of ``sweep``; return ``{method: ResultGrid}``."""
    root = experiment_dir(storage, name)
    if resume and "://" not in root and not (Path(root) / SWEEP_JSON).exists():
        raise FileNotFoundError(f"nothing to resume: {root} holds no sweep (check --name and --storage-path)")
    _write_sweep_json(root, sweep, split, resume)
    train = {"num_workers": DEFAULT_NUM_WORKERS, "keep_checkpoints": None, **sweep.train}
    # read once, before any trial holds a CPU; every trial of every method trains on these blocks
    dataset = ray.data.read_parquet(str(split.boi("pretrain") / "users")).materialize()
    results = {}
    for method in methods or list(sweep.methods):
        if method not in sweep.methods:
            raise ValueError(f"{sweep.path}: has no method {method!r}; it sweeps {sorted(sweep.methods)}")
        # sequence methods train on windows over the whole history, cut once here (a trial holds its CPUs, so
        # a lazy map inside it could wait forever for one); a swept max_length samples inside these windows
        window = training_window(METHODS[method], METHODS[method].Config(), DataInfo.from_boi(split.boi("pretrain")),
                                 split.boi("pretrain"))
        data = as_windows(dataset, window, train.get("seed", 0)).materialize() if window else dataset
        setup = Setup(method=method, train=train, boi=str(split.boi("pretrain")), history_boi=str(split.boi("history")),
                      users_parquet=str(split.dataset("history") / "users.parquet"), split=split.id,
                      experiment_path=_join(root, method), windows=window)
        trainable = tune.with_resources(tune.with_parameters(trial, setup=setup, dataset=data),
                                        {"CPU": TRIAL_CPU})
        path = setup.experiment_path
        if resume and tune.Tuner.can_restore(path):
            log.info("%s: restoring %s (finished trials are kept, unfinished ones resume)", method, path)
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
        else:
            if tune.Tuner.can_restore(path):
                raise FileExistsError(f"{path} already holds a sweep: pass --resume to continue it or choose another --name")
            epochs = train.get("epochs", 5)
            tuner = tune.Tuner(
                trainable, param_space=dict(sweep.methods[method]),
                tune_config=tune.TuneConfig(
                    metric=METRIC, mode=MODE, num_samples=sweep.search["num_samples"],
                    scheduler=scheduler(sweep.search, epochs),
                    max_concurrent_trials=concurrency(train["num_workers"], train.get("use_gpu", False),
                                                      max_concurrent or sweep.search.get("max_concurrent_trials")),
                ),
                run_config=tune.RunConfig(name=method, storage_path=root, callbacks=[ReleaseCallback()],
                                          failure_config=tune.FailureConfig(max_failures=0)),
            )
        log.info("%s: sweeping %d sample(s) of %s", method, sweep.search["num_samples"], sorted(sweep.methods[method]))
        results[method] = tuner.fit()
        if "://" not in root:
            freed = prune_checkpoints(Path(root), method)
            log.info("%s: kept each trial's best and latest checkpoints (%.1f MB of other epochs freed)", method, freed / 1e6)
    return results


def _write_sweep_json(root: str, sweep: sweeps.Sweep, split, resume: bool) -> None:
    record = {"sweep": sweep.name, "file": str(sweep.path), "source": sweep.path.read_text(), "train": sweep.train,
              "search": sweep.search, "methods": {m: {k: _describe(v) for k, v in s.items()} for m, s in sweep.methods.items()},
              "split": split.id, "split_root": str(split.root), "dataset": split.meta["dataset"], "metric": METRIC, "mode": MODE,
              "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if "://" in root:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(root)
        fs.create_dir(path, recursive=True)
        if not (resume and fs.get_file_info(f"{path}/{SWEEP_JSON}").type != pafs.FileType.NotFound):
            with fs.open_output_stream(f"{path}/{SWEEP_JSON}") as f:
                f.write(json.dumps(record, indent=2).encode())
        return
    path = Path(root) / SWEEP_JSON
    if resume and path.exists():
        return
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))


def _describe(value: Any) -> Any:
    """A JSON-able description of a Tune domain (or the constant)."""
    if isinstance(value, Categorical):
        return {"choice": list(value.categories)}
    if isinstance(value, (Float, Integer)):
        sampler = type(value.get_sampler()).__name__.lower()
        return {"range": [value.lower, value.upper], "sampler": "log" if "log" in sampler else sampler}
    if isinstance(value, dict) and set(value) == {"grid_search"}:
        return {"grid": list(value["grid_search"])}
    return value if isinstance(value, (int, float, str, bool, type(None))) and not (isinstance(value, float) and math.isnan(value)) \
        else repr(value)
