"""The ``python -m raylurm.pretrain`` command only; pretraining itself is :mod:`raylurm.train`."""
