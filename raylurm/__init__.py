"""raylurm: universal user representations from lifelong behaviour logs, on Ray."""

__version__ = "0.1.0"
