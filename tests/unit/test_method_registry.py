"""``METHODS`` is the one list of methods: every CLI choice, loop and checkpoint path reads it.

A toy method registered with one ``METHODS`` entry (the README's "Adding a method" checklist)
must be accepted by the pretraining and evaluation command lines and be built by the training
loop and by checkpoints, with nothing else edited; and no raylurm module outside ``methods/``
may spell the method list out again.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import raylurm
from raylurm.config import to_dict
from raylurm.evaluate.__main__ import build_parser as evaluate_parser
from raylurm.methods import METHODS
from raylurm.pretrain.__main__ import build_parser as pretrain_parser
from raylurm.train import checkpoint as ckpt
from raylurm.train.batch import DataInfo, collate, synthetic_rows
from raylurm.train.loop import build

INFO = DataInfo(num_interests=20, num_items=15, num_behaviors=3, scales=("month", "year"), max_sequence_length=12)


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    hidden_dim: int = 8
    lr: float = 1e-3
    batch_size: int = 4


class Toy(nn.Module):
    """The smallest method the contract allows: an item-bag mean and a squared-norm loss."""

    name = "toy"
    Config = ToyConfig

    def __init__(self, config: ToyConfig, info: DataInfo):
        super().__init__()
        self.config, self.representation_dim = config, config.hidden_dim
        self.items = nn.EmbeddingBag(info.num_items + 1, config.hidden_dim, mode="mean", padding_idx=0)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.items(batch["items"])  # (B, H)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": self.embed(batch).pow(2).sum(-1).mean()}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(METHODS, "toy", Toy)
    return Toy


def test_every_entry_honours_the_contract():
    assert list(METHODS) == ["lurm", "atrank", "dss", "adaptssr", "sasrec"]  # the order every table and deployment uses
    assert [m for m, cls in METHODS.items() if getattr(cls, "baseline", False)] == ["sasrec"]
    for key, cls in METHODS.items():
        assert cls.name == key
        assert dataclasses.is_dataclass(cls.Config)
        assert callable(cls.forward) and callable(cls.embed)


def test_one_entry_makes_a_method_a_command_line_choice(toy):
    assert pretrain_parser().parse_args(["--method", "toy"]).method == "toy"
    with pytest.raises(SystemExit):
        pretrain_parser().parse_args(["--method", "nope"])
    assert "toy" in evaluate_parser().get_default("methods").split(",")


def test_one_entry_is_enough_for_the_loop_and_checkpoints(toy, tmp_path):
    model, config, info = build({"method": "toy", "method_config": {"hidden_dim": 4}, "info": dataclasses.asdict(INFO)})
    assert isinstance(model, Toy) and config.hidden_dim == 4 and info == INFO
    batch = collate(synthetic_rows(5, INFO.num_interests, INFO.num_items, seed=0))
    ckpt.save(tmp_path, model, None, ckpt.meta_for("toy", config, info, epoch=1, step=1))
    loaded, meta = ckpt.load_model(tmp_path)
    assert meta["method_config"] == to_dict(config)
    assert torch.equal(loaded.embed(batch), model.eval().embed(batch))


def _string_collections(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            yield node, {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        elif isinstance(node, ast.Dict):
            yield node, {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def test_no_module_spells_the_method_list_out_again():
    root = Path(raylurm.__file__).parent
    names = set(METHODS)
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.parent.name == "methods":
            continue
        for node, strings in _string_collections(ast.parse(path.read_text())):
            if len(strings & names) >= 2:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert not found, f"method lists written out instead of read from raylurm.methods.METHODS: {found}"
