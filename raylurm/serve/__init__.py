"""The ``python -m raylurm.serve`` command only; the Serve application is :mod:`raylurm.serving`, its config file ``serve/config.yaml``."""
