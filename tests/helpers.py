"""Small writers for test tables in every supported format."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_text(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    lines = [delimiter.join(header)] + [delimiter.join("" if v is None else str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, columns: dict[str, list], schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def training_batch(model, table, seed: int = 0) -> dict:
    """``collate(table)`` plus what the training loop adds for ``model`` (LURM's event-level views)."""
    from raylurm.train.batch import collate
    from raylurm.train.views import synthetic_views

    batch = collate(table)
    config = getattr(model, "config", None)
    if getattr(config, "views", None) == "events":
        batch.update(synthetic_views(table, model.anchors.interest.num_embeddings, model.scales, config.min_window_fraction, seed))
    return batch


def train_steps(model, batch: dict, steps: int, lr: float) -> list[float]:
    """Adam on one fixed batch for ``steps`` steps; the loss of every step (for overfit tests)."""
    from raylurm.train.optim import Adam

    optimizer = Adam(model, lr=lr)  # the training loop's: lazy Adam on sparse-gradient tables
    losses = []
    for _ in range(steps):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


SMALL_CONFIGS = {  # tiny model configs (seconds on CPU) for serving and registry tests
    "lurm": {"num_anchors": 3, "hidden_dim": 8},
    "atrank": {"item_dim": 8, "category_dim": 8, "hidden_dim": 16, "num_spaces": 2, "ffn_dim": 32},
    "dss": {"hidden_dim": 8, "num_intentions": 2},
    "adaptssr": {"dim": 8, "num_heads": 2},
    "sasrec": {"hidden_dim": 8},
}


def register_model(registry, method: str, boi_dir: Path, info, name: str, seed: int = 0, value: float = 0.5,
                   split: str = "s1", **record):
    """A randomly initialised ``method`` model saved as a checkpoint and registered as ``name`` (with boi/)."""
    import tempfile

    import torch

    from raylurm.methods import METHODS
    from raylurm.train import checkpoint

    cls = METHODS[method]
    torch.manual_seed(seed)
    config = cls.Config(**SMALL_CONFIGS[method])
    model = cls(config, info)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint.save(tmp, model, None, checkpoint.meta_for(method, config, info))
        return registry.register(tmp, {"method": method, "metric": "val_auc", "metrics": {"val_auc": value},
                                       "epoch": 1, "split": split, "config": SMALL_CONFIGS[method], **record},
                                 name=name, boi_dir=boi_dir)
