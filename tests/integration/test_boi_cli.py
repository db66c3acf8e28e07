"""`python -m raylurm.boi build` end to end: embeddings -> vocabulary -> BoI, in its own embedded Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from raylurm.boi.vocabulary import Vocabulary
from raylurm.data.synth import SynthConfig, generate

pytestmark = pytest.mark.integration


def test_cli_build_writes_a_complete_boi_directory(tmp_path):
    data = tmp_path / "synth"
    generate(SynthConfig(users=40, years=2, items=300, num_topics=8, num_categories=4, seed=1), data, progress=False)
    out = tmp_path / "boi"
    cmd = [sys.executable, "-m", "raylurm.boi", "build", "--events", str(data), "--out", str(out), "--embedding", "cooccurrence",
           "--embedding-dim", "16", "--num-interests", "20", "--assignment", "soft", "--scales", "month,year",
           "--on-unknown-items", "skip", "--num-cpus", "2", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "users             40" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    vocab = Vocabulary.load(out / "vocabulary")
    assert manifest["vocabulary_hash"] == vocab.content_hash and vocab.num_interests == 20 == manifest["num_interests"]
    assert manifest["behaviors"] and set(manifest["behaviors"]) == {"click", "cart", "buy"}
    users = pq.read_table(out / "users")
    assert users.num_rows == 40 and {"month_ids", "year_values", "items", "behaviors", "timestamps"} <= set(users.column_names)
    assert (out / "item_embeddings" / "embeddings.npy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".boi.tmp")]


def test_cli_rejects_bad_arguments_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "raylurm.boi", "build", "--events", str(tmp_path / "missing"), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "error:" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "raylurm.boi", "build", "--events", "x", "--out", "o", "--scales", "week"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "scales" in proc.stderr
