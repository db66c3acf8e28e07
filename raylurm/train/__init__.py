"""Pretraining on Ray Train: the one training loop, runs, checkpoints, the batch contract.

* :mod:`raylurm.train.batch` — the batch contract: BoI rows (Arrow) -> tensors, and :class:`DataInfo`
* :mod:`raylurm.train.config` — :class:`TrainConfig`, the options of a run
* :mod:`raylurm.train.loop` — ``train_loop_per_worker``, the loop every method trains with
* :mod:`raylurm.train.fit` — :func:`fit`, a ``TorchTrainer`` run of the loop (``python -m raylurm.pretrain``)
* :mod:`raylurm.train.checkpoint` — checkpoints that carry their config; finding runs' checkpoints
* :mod:`raylurm.train.distributed` — process-group helpers that also work in one process

Nothing is imported here, so the methods can import the batch contract without loading the loop.
"""
