"""Cross-method study: the four methods side by side, each around its paper defaults."""

from ray import tune

METHODS = {
    "lurm": {"num_anchors": tune.choice([1, 10]), "scales": tune.choice(["month", "both"]),
             "temperature": tune.choice([0.05, 0.1, 0.2]), "lr": tune.loguniform(3e-4, 3e-3)},
    "atrank": {"num_spaces": tune.choice([1, 8]), "lr": tune.loguniform(3e-4, 3e-3)},
    "dss": {"num_intentions": tune.choice([1, 4]), "selection_fraction": tune.choice([0.3, 0.5, 1.0]),
            "lr": tune.loguniform(3e-4, 3e-3)},
    "adaptssr": {"lambda_mode": tune.choice(["per_sample", "fixed"]), "lr": tune.loguniform(1e-4, 1e-3)},
}
TRAIN = {"epochs": 10}
SEARCH = {"num_samples": 8, "scheduler": "asha", "grace_period": 2}  # per method
