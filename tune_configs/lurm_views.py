"""LURM's positive views on ML-1M: how much of each user's history a view holds, and τ (issue 17).

With event-level views (``views="events"``) the contrastive loss falls from ln(2N − 1) = 6.93 to
~0.5 within 25 epochs while validation ``val_auc`` plateaus at ~0.667 — below raw BoI with the same
vocabulary (0.714): two windows of at least half of a user's events share most of its rare
interests, so any fingerprint of them solves the task. Shorter windows (a smaller
``min_window_fraction``, the shortest view as a fraction of the user's events) make the two views
share fewer interests, which only features of the user's taste can match; a larger τ weighs the
hard negatives less. Each arm is scored after every epoch on validation (``val_auc``: profiling AUC
on the selection users, never test users); ASHA keeps the best third at each rung.

    python -m raylurm.tune tune_configs/lurm_views.py --name lurm-views
"""

from ray import tune

METHODS = {"lurm": {"min_window_fraction": tune.grid_search([0.1, 0.25, 0.5]),  # 0.5: the default
                    "temperature": tune.grid_search([0.1, 0.3])}}  # 0.1: the paper's τ
TRAIN = {"epochs": 60, "num_workers": 1}  # two 1-worker trials side by side on 2 cores
SEARCH = {"num_samples": 1, "scheduler": "asha", "grace_period": 10}
