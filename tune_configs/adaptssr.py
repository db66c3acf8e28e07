"""AdaptSSR: λ mode (per-sample adaptive, batch, fixed values), augmentation ratios, width, lr, batch size."""

from ray import tune

METHODS = {
    "adaptssr": {
        "lambda_mode": tune.choice(["per_sample", "batch_mean", "fixed"]),  # adaptive vs fixed λ ablation
        "fixed_lambda": tune.choice([0.1, 0.3, 0.5, 0.7, 0.9]),  # used by lambda_mode="fixed"
        "mask_ratio": tune.uniform(0.2, 0.8),
        "crop_ratio": tune.uniform(0.2, 0.8),
        "reorder_ratio": tune.uniform(0.2, 0.8),
        "dim": tune.choice([32, 64, 128]),
        "lr": tune.loguniform(5e-5, 1e-3),
        "batch_size": tune.choice([64, 128, 256]),
    },
}
TRAIN = {"epochs": 10}
SEARCH = {"num_samples": 20, "scheduler": "asha", "grace_period": 2}
