"""Probes on frozen representations: a small MLP trained on probe-train users only.

Dense representations are standardised with the training users' mean and std; sparse ones
(raw BoI, TF-IDF: ``scipy.sparse.csr_matrix``) enter through an ``EmbeddingBag`` whose
``per_sample_weights`` are the non-zero values — the same first layer as a ``Linear`` on the
dense vector, without densifying. Architecture: first layer -> ReLU -> dropout -> linear.

Training: Adam, mini-batches, up to ``max_epochs``; after every epoch the probe is scored on
the validation users with the task's selection metric and the best epoch's weights are kept
(early stopping after ``patience`` epochs without improvement). A small grid (weight decay) is
searched the same way: every choice is made on validation users, the test users are scored
once, by the caller, with the selected probe.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Annotated, Callable

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from raylurm.config import typed_config


@typed_config
class ProbeConfig:
    # AdaptSSR's probe is 64 wide; 128 gives the 1280-d LURM input a less narrow bottleneck
    hidden_dim: Annotated[int, Field(ge=1, description="width of the probe's hidden layer")] = 128
    dropout: Annotated[float, Field(ge=0.0, lt=1.0, description="dropout after the hidden layer")] = 0.2
    lr: Annotated[float, Field(gt=0.0, description="Adam learning rate")] = 1e-3
    batch_size: Annotated[int, Field(ge=1)] = 256
    max_epochs: Annotated[int, Field(ge=1)] = 40
    patience: Annotated[int, Field(ge=0, description="early stopping: epochs without improvement on validation")] = 5
    weight_decays: Annotated[tuple[Annotated[float, Field(ge=0.0)], ...], Field(
        min_length=1, description="the weight-decay grid, chosen on validation")] = (1e-5, 1e-3)


class Features:
    """Row-indexable dense (n, d) array or sparse CSR (n, D) matrix -> model inputs."""

    def __init__(self, x: np.ndarray | sp.csr_matrix):
        self.sparse = sp.issparse(x)
        self.x = x.tocsr().astype(np.float32) if self.sparse else np.asarray(x, dtype=np.float32)
        self.mean = self.std = None

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def __len__(self) -> int:
        return self.x.shape[0]

    def fit_scaler(self, rows: np.ndarray) -> None:
        if not self.sparse:
            self.mean = self.x[rows].mean(axis=0)
            self.std = self.x[rows].std(axis=0) + 1e-6

    def take(self, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        if self.sparse:
            block = self.x[rows]
            return (torch.from_numpy(block.indices.astype(np.int64)), torch.from_numpy(block.indptr[:-1].astype(np.int64)),
                    torch.from_numpy(block.data.astype(np.float32)))
        block = self.x[rows]
        if self.mean is not None:
            block = (block - self.mean) / self.std
        return (torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)),)


class MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, sparse: bool, config: ProbeConfig, output_bias: np.ndarray | None = None):
        super().__init__()
        self.sparse = sparse
        self.first = nn.EmbeddingBag(in_dim, config.hidden_dim, mode="sum") if sparse else nn.Linear(in_dim, config.hidden_dim)
        if sparse:
            nn.init.normal_(self.first.weight, std=1.0 / math.sqrt(config.hidden_dim))
        self.bias = nn.Parameter(torch.zeros(config.hidden_dim)) if sparse else None
        self.out = nn.Sequential(nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(config.hidden_dim, out_dim))
        if output_bias is not None:
            with torch.no_grad():
                self.out[-1].bias.copy_(torch.as_tensor(output_bias, dtype=torch.float32))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.sparse:
            indices, offsets, weights = inputs
            return self.out(self.first(indices, offsets, per_sample_weights=weights) + self.bias)
        return self.out(self.first(inputs[0]))


@dataclasses.dataclass
class FittedProbe:
    model: MLP
    features: Features
    weight_decay: float
    epoch: int
    valid_score: float

    @torch.no_grad()
    def predict(self, rows: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Raw outputs (logits) for ``rows`` -> (n, out_dim)."""
        self.model.eval()
        parts = [self.model(*self.features.take(rows[i:i + batch_size])).numpy() for i in range(0, len(rows), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.model.out[-1].out_features), np.float32)


def fit(features: Features, targets: np.ndarray, train: np.ndarray, valid: np.ndarray, loss: str,
        out_dim: int, select: Callable[[FittedProbe, np.ndarray], float], seed: int,
        config: ProbeConfig = ProbeConfig(), output_bias: np.ndarray | None = None) -> FittedProbe:
    """Train on ``train`` rows, choose weight decay and epoch by ``select(probe, valid)`` (higher is better).

    ``targets`` row-aligned with ``features``: class indices (``loss="softmax"``), a 0/1 matrix
    (``loss="sigmoid"``, multi-label; binary tasks use one column) or a standardised (n, 1) float
    matrix (``loss="mse"``, regression) or rows of class probabilities (``loss="soft"``: cross-entropy
    against a distribution, e.g. a topic mixture).
    """
    if len(np.intersect1d(train, valid)):
        raise ValueError("probe training and validation users overlap")
    features.fit_scaler(train)
    best: FittedProbe | None = None
    for weight_decay in config.weight_decays:
        candidate = _fit_one(features, targets, train, valid, loss, out_dim, select, seed, config, weight_decay, output_bias)
        if best is None or candidate.valid_score > best.valid_score:
            best = candidate
    return best


def _fit_one(features, targets, train, valid, loss, out_dim, select, seed, config, weight_decay, output_bias) -> FittedProbe:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MLP(features.dim, out_dim, features.sparse, config, output_bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=weight_decay)
    criterion = {"softmax": nn.CrossEntropyLoss, "soft": nn.CrossEntropyLoss, "sigmoid": nn.BCEWithLogitsLoss,
                 "mse": nn.MSELoss}[loss]()
    probe = FittedProbe(model, features, weight_decay, 0, -math.inf)
    best_state, since_best = copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = rng.permutation(train)
        for i in range(0, len(order), config.batch_size):
            rows = order[i:i + config.batch_size]
            y = torch.as_tensor(targets[rows], dtype=torch.int64 if loss == "softmax" else torch.float32)
            optimizer.zero_grad(set_to_none=True)
            criterion(model(*features.take(rows)), y).backward()
            optimizer.step()
        score = select(probe, valid)
        if score > probe.valid_score or math.isnan(probe.valid_score):
            probe.valid_score, probe.epoch, best_state, since_best = score, epoch, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if since_best >= config.patience:
                break
    model.load_state_dict(best_state)
    return probe
