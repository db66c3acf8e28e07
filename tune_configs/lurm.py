"""LURM/SMEN: anchors M, scales, temperature τ, width, learning rate, batch size (LURM §4.4 ablations)."""

from ray import tune

METHODS = {
    "lurm": {
        "num_anchors": tune.choice([1, 2, 4, 8, 10, 16]),  # paper default 10
        "scales": tune.choice(["month", "year", "both"]),  # multi-scale switch vs one scale
        "temperature": tune.loguniform(0.03, 1.0),  # τ, paper 0.1
        "hidden_dim": tune.choice([64, 128, 256]),  # per-anchor width H, paper 128
        "lr": tune.loguniform(1e-4, 3e-3),
        "batch_size": tune.choice([128, 256, 512]),
    },
}
TRAIN = {"epochs": 10}
SEARCH = {"num_samples": 24, "scheduler": "asha", "grace_period": 2}
