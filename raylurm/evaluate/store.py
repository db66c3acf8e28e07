"""Each subject's evaluation kept on disk, so a long evaluation resumes and its rows pool across sessions.

Pretraining every method to early stopping and evaluating it takes hours on a laptop, longer than
one sitting. Every evaluation therefore writes one *entry* per subject under ``<out>/subjects/``:
its metric rows, its per-user results (the paired tests' input) and, for a pretrained subject, the
record of its run (the checkpoint's meta and its per-epoch curves). An entry is keyed by what
determines its result: the split, the evaluation config, the subject's label and pretraining run,
and its checkpoint (run, checkpoint directory, epoch, step) or random-init seed.

With ``python -m raylurm.evaluate ... --resume``:

* a subject whose key has an entry is read back instead of evaluated again;
* every other entry on the same split and config — a method trained and evaluated in an earlier
  session, whose run may no longer exist here — is *carried* into the report, so one RESULTS.md
  holds every method with paired verdicts over the same users. The report names each carried
  row's commit and date (:func:`raylurm.evaluate.harness.write_outputs`).

One label has one current evaluation per output directory: a subject stored by this command
replaces the entries of the same label (every pretraining run of it) that earlier commands stored
on the same split and config, whichever way they chose the checkpoint (``--all``, ``--checkpoint``,
``--registry``), so a retrained method's old rows — or old extra ``--pretrain-seeds`` runs — are
never carried beside its new ones; entries this command read back are kept. Entries are written to
a hidden temporary directory and renamed, old ones renamed away before they are deleted, and
hidden directories are never read, so a killed evaluation leaves only whole entries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raylurm.config import to_dict
from raylurm.data.io import atomic_dir
from raylurm.evaluate.protocol import USER_COLUMNS, EvalConfig, Subject
from raylurm.train.checkpoint import read_meta

log = logging.getLogger(__name__)

FORMAT = 1  # bump when an entry's layout changes: older entries are then ignored


@dataclasses.dataclass
class Entry:
    """One stored subject: its key, rows, per-user results, where and when it was evaluated, its run's record."""

    path: Path
    key: dict
    rows: list[dict]
    per_user: pd.DataFrame
    commit: str
    written: str
    record: dict | None  # pretrained subjects: {"meta": ..., "checkpoint": "run/checkpoint_…", "stopped_early": bool}
    curves: pd.DataFrame | None  # pretrained subjects: per-epoch curves of the run (raylurm.train.curves.read_curves)

    @property
    def name(self) -> str:
        return self.key["name"]

    @property
    def group(self) -> str:
        return self.key["group"]

    @property
    def run(self) -> int:
        return self.key["run"]


def checkpoint_identity(checkpoint: Path, seed: int | None = None) -> dict:
    """What identifies a checkpoint's result across machines: run and checkpoint names, epoch and step (+ the
    random-init seed of its twin)."""
    meta = read_meta(checkpoint)
    out = {"run": Path(checkpoint).parent.name, "checkpoint": Path(checkpoint).name, "epoch": meta.get("epoch"),
           "step": meta.get("step")}
    return out | ({"seed": seed} if seed is not None else {})


def subject_key(split_id: str, config: EvalConfig, subject: Subject) -> dict:
    identity = checkpoint_identity(subject.checkpoint, subject.seed) if subject.checkpoint is not None else None
    key = {"format": FORMAT, "split": split_id, "config": to_dict(config), "name": subject.name, "group": subject.group,
           "run": subject.run, "checkpoint": identity}
    # a split's BoI is rebuilt when its dataset's vocabulary is chosen anew (same split id): what reads interests
    # is keyed by its vocabulary too, so an entry made with the earlier one is not read back
    return key | ({"vocabulary": subject.vocabulary} if subject.vocabulary is not None else {})


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "subject"


def _plain(value: Any) -> Any:
    """A JSON-serialisable value of a metric row (numpy scalars and arrays to Python)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metric row value of type {type(value).__name__} is not storable")


class SubjectStore:
    """The entries under ``root`` for one split and evaluation config (see the module docstring)."""

    def __init__(self, root: str | Path, split_id: str, config: EvalConfig, commit: str, resume: bool = False,
                 vocabulary: str | None = None):
        self.root, self.split_id, self.config, self.commit, self.resume = Path(root), split_id, config, commit, resume
        self.vocabulary = vocabulary  # the split's interest vocabulary now: entries that read another are not carried
        self._config = to_dict(config)
        self._labels: set[str] = set()  # labels evaluated (or read back) by this command: never carried
        self._session = uuid.uuid4().hex  # entries this command writes
        self.reused: list[Entry] = []  # entries read back by get(), for the report's note

    def _matches(self, key: dict) -> bool:
        return key.get("format") == FORMAT and key.get("split") == self.split_id and key.get("config") == self._config

    def _entries(self) -> list[Path]:
        # "[!.]*": never a hidden temporary directory of atomic_dir (a killed write) or an entry renamed away to be deleted
        return sorted(p.parent for p in self.root.glob("[!.]*/entry.json")) if self.root.is_dir() else []

    def _read(self, path: Path) -> Entry:
        head = json.loads((path / "entry.json").read_text())
        curves = pd.read_csv(path / "curves.csv") if (path / "curves.csv").exists() else None
        return Entry(path, head["key"], json.loads((path / "rows.json").read_text()), pd.read_parquet(path / "per_user.parquet"),
                     head["commit"], head["written"], head.get("record"), curves)

    def get(self, subject: Subject) -> Entry | None:
        """The stored entry of ``subject`` (only with ``resume``), else None; either way the subject counts as evaluated
        here, so it is never also carried."""
        self._labels.add(subject.name)
        if not self.resume:
            return None
        path = self.root / self._dirname(subject_key(self.split_id, self.config, subject))
        if not (path / "entry.json").exists():
            return None
        entry = self._read(path)
        self.reused.append(entry)
        log.info("reusing %s (run %d) evaluated at commit %s on %s", subject.name, subject.run, entry.commit, entry.written)
        return entry

    def put(self, subject: Subject, rows: list[dict], per_user: pd.DataFrame) -> Path:
        """Store ``subject``'s results, then drop the label's entries that earlier commands stored on this split and
        config (all its runs; not the entries this command read back)."""
        key = subject_key(self.split_id, self.config, subject)
        record, curves = None, None
        if subject.checkpoint is not None and subject.group == "pretrained":
            record, curves = run_record(subject.checkpoint)
        head = {"key": key, "commit": self.commit, "written": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
                "record": record, "session": self._session}
        path = self.root / self._dirname(key)
        with atomic_dir(path) as tmp:
            (tmp / "entry.json").write_text(json.dumps(head, indent=1, default=_plain))
            (tmp / "rows.json").write_text(json.dumps(rows, default=_plain))
            per_user[list(USER_COLUMNS)].to_parquet(tmp / "per_user.parquet", index=False)
            if curves is not None and not curves.empty:
                curves.to_csv(tmp / "curves.csv", index=False)
        self._labels.add(subject.name)
        kept = {e.path for e in self.reused}
        for old in self._entries():  # the label's entries of earlier commands, after the new one is in place
            other = json.loads((old / "entry.json").read_text())
            if (old != path and old not in kept and other.get("session") != self._session and self._matches(other["key"])
                    and other["key"]["name"] == subject.name):
                log.info("dropping the stored %s (run %d) of an earlier evaluation: %s", subject.name, other["key"]["run"], old.name)
                gone = old.with_name(f".{old.name}.drop-{self._session[:8]}")
                os.replace(old, gone)
                shutil.rmtree(gone, ignore_errors=True)
        return path

    def carried(self) -> list[Entry]:
        """With ``resume``: every entry on this split and config whose label was not evaluated (or read back) here."""
        if not self.resume:
            return []
        out = []
        for path in self._entries():
            head = json.loads((path / "entry.json").read_text())
            key = head["key"]
            if self._matches(key) and key["name"] not in self._labels:
                if self._stale_vocabulary(key):
                    log.info("not carrying %s (run %d): it read the split's earlier interest vocabulary %s", key["name"],
                             key["run"], key.get("vocabulary"))
                    continue
                out.append(self._read(path))
        for entry in out:
            log.info("carrying %s (run %d) from commit %s (%s)", entry.name, entry.run, entry.commit, entry.written)
        return out

    def _stale_vocabulary(self, key: dict) -> bool:
        """An entry that read interests with a vocabulary the split has replaced since (``vocabulary`` in its key)."""
        return self.vocabulary is not None and key.get("vocabulary") not in (None, self.vocabulary)

    @staticmethod
    def _dirname(key: dict) -> str:
        return f"{_slug(key['name'])}-{key['run']}-{_digest(key)}"


def run_record(checkpoint: Path) -> tuple[dict, pd.DataFrame]:
    """The run behind a pretrained checkpoint, as the report's training table and plot need it once the run is gone."""
    from raylurm.train.curves import read_curves  # lazy: TensorBoard's reader is a heavy import

    checkpoint = Path(checkpoint)
    meta = read_meta(checkpoint)
    metas = sorted(checkpoint.parent.glob("checkpoint_*/meta.json"))
    stopped = bool(metas) and bool(read_meta(metas[-1].parent).get("stopped_early"))
    return ({"meta": meta, "checkpoint": f"{checkpoint.parent.name}/{checkpoint.name}", "stopped_early": stopped},
            read_curves(checkpoint.parent))
