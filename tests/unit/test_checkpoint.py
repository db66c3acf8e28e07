"""A checkpoint rebuilds its model from the directory alone and gives identical embeddings."""

from __future__ import annotations

import json

import pytest
import torch

from raylurm.methods import METHODS
from raylurm.train import checkpoint as ckpt
from raylurm.train.batch import DataInfo, synthetic_rows
from tests.helpers import training_batch

INFO = DataInfo(num_interests=50, num_items=40, num_behaviors=3, scales=("month", "year"), max_sequence_length=12,
                item_category=tuple(i % 4 for i in range(40)), num_categories=4, vocabulary_hash="abc123")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_round_trip_gives_identical_embeddings(tmp_path, method):
    torch.manual_seed(0)
    cls = METHODS[method]
    model = cls(cls.Config(), INFO)
    batch = training_batch(model, synthetic_rows(6, INFO.num_interests, INFO.num_items, seed=1))
    model.train()
    model(batch)["loss"].backward()  # a training step changes nothing about what is saved, but exercises the path
    model.eval()
    before = model.embed(batch)
    ckpt.save(tmp_path, model, torch.optim.Adam(model.parameters()), ckpt.meta_for(method, model.config, INFO, epoch=1, step=1))
    loaded, meta = ckpt.load_model(tmp_path)
    assert meta["method"] == method and meta["vocabulary_hash"] == "abc123"
    assert torch.equal(loaded.embed(batch), before)
    assert before.shape == (6, loaded.representation_dim)
    json.loads((tmp_path / "meta.json").read_text())  # plain JSON, readable without raylurm


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a raylurm checkpoint"):
        ckpt.load_model(tmp_path)
