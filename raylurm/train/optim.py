"""The training loop's optimiser: Adam, with its lazy variant on parameters whose gradients are sparse.

A parameter with a row-sparse gradient (an ``nn.Embedding(..., sparse=True)``, e.g. LURM's interest
table W^e with ``sparse_gradients``) cannot go to ``torch.optim.Adam``; ``torch.optim.SparseAdam``
updates it instead — the "lazy Adam" of large embedding tables: only the rows a batch touches move,
and their moments advance only then. Every other parameter keeps plain Adam. The two share one
learning rate and checkpoint as one state dict.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that receive sparse gradients: the weights of embeddings built with ``sparse=True``."""
    found = []
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse:
            found.append(module.weight)
    return found


class Adam:
    """``torch.optim.Adam`` over the dense parameters and ``torch.optim.SparseAdam`` over the sparse ones."""

    def __init__(self, model: nn.Module, lr: float):
        sparse = sparse_parameters(model)
        ids = {id(p) for p in sparse}
        dense = [p for p in model.parameters() if id(p) not in ids]
        self.dense = torch.optim.Adam(dense, lr=lr) if dense else None
        self.sparse = torch.optim.SparseAdam(sparse, lr=lr) if sparse else None

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.dense, self.sparse) if o is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict:
        """Plain Adam's state dict when every parameter is dense (what checkpoints always held), else both."""
        if self.sparse is None:
            return self.dense.state_dict()
        return {"dense": self.dense.state_dict() if self.dense is not None else None, "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.sparse is None:
            self.dense.load_state_dict(state)
            return
        if set(state) != {"dense", "sparse"}:
            raise ValueError("this optimiser state was saved without sparse parameters; the model now has some "
                             "(resume it with the option that built it, e.g. --set sparse_gradients=false)")
        if self.dense is not None:
            self.dense.load_state_dict(state["dense"])
        self.sparse.load_state_dict(state["sparse"])
