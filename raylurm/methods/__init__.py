"""The pretraining methods, one file each, and :data:`METHODS`, the one list of them.

Each method is an ``nn.Module`` built as ``cls(cls.Config(...), info: DataInfo)`` with a ``name``,
``forward(batch) -> {"loss", ...}`` and ``embed(batch) -> (B, representation_dim)``; methods that
rank items also have ``score_items``. Every CLI choice, report order, evaluation and serving
deployment derives from :data:`METHODS` (in this order), so adding a method is one file here plus
one entry below (see the README's "Adding a method").
"""

from raylurm.methods.adaptssr import AdaptSSR
from raylurm.methods.atrank import ATRank
from raylurm.methods.dss import DSS
from raylurm.methods.lurm import LURM
from raylurm.methods.sasrec import SASRec

METHODS = {cls.name: cls for cls in (LURM, ATRank, DSS, AdaptSSR, SASRec)}  # SASRec: the baseline (``baseline = True``)

__all__ = ["METHODS", "LURM", "ATRank", "DSS", "AdaptSSR", "SASRec"]
