"""Loss functions: pure torch, one per file, each tested against a slow naive reference."""

from raylurm.losses.info_nce import info_nce

__all__ = ["info_nce"]
