"""Tiny smoke sweep (CI, `--smoke-test`): two methods, small models, a few steps per epoch."""

from ray import tune

METHODS = {
    "lurm": {"num_anchors": tune.choice([1, 2]), "hidden_dim": 16, "temperature": tune.choice([0.1, 0.5]), "batch_size": 8},
    "dss": {"num_intentions": tune.choice([1, 2]), "hidden_dim": 16, "selection_fraction": tune.choice([0.5, 1.0]),
            "batch_size": 8},
}
TRAIN = {"epochs": 2, "max_steps_per_epoch": 2}
SEARCH = {"num_samples": 2, "scheduler": "asha", "grace_period": 1}  # per method
