"""The four pretraining methods, one file each. Each exposes ``Config``, ``forward(batch) -> {"loss", ...}``,
``embed(batch) -> (B, representation_dim)``; the sequence methods also ``score_items``."""

from raylurm.methods.adaptssr import AdaptSSR
from raylurm.methods.atrank import ATRank
from raylurm.methods.dss import DSS
from raylurm.methods.lurm import LURM

METHODS = {"lurm": LURM, "atrank": ATRank, "dss": DSS, "adaptssr": AdaptSSR}

__all__ = ["METHODS", "LURM", "ATRank", "DSS", "AdaptSSR"]
