"""AdaptSSR's training budget on ML-1M: the learning rate, chosen on validation (issue 16).

The public code's Adam lr 2e-4 for 20 epochs is ~230k steps on its datasets; on ML-1M an epoch is
23 steps (6,040 users, 2 workers x 128), so the paper's lr over a few hundred steps leaves the
representation within noise of its random init. Each arm is scored after every epoch on
validation (``val_auc``: profiling AUC on the selection users, never test users); ASHA keeps the
best third of the arms at each rung (10, 30, 90 epochs) and stops the others. The winner's lr
becomes the method's default, its curve the one RESULTS.md shows beside the random init.

    python -m raylurm.tune tune_configs/adaptssr_budget.py --name adaptssr-budget
"""

from ray import tune

METHODS = {"adaptssr": {"lr": tune.grid_search([2e-4, 1e-3, 3e-3])}}  # the code's 2e-4, 5x, 15x
# a checkpoint is attached only when val_auc improves, so the 2 kept are each trial's best and the one before it
# (~4 MB each: the sweep directory stays small enough to commit and resume in a later sitting)
TRAIN = {"epochs": 100, "keep_checkpoints": 2}
SEARCH = {"num_samples": 1, "scheduler": "asha", "grace_period": 10}
