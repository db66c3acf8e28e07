"""ATRank: number of semantic spaces (attention heads), width, blocks, learning rate, batch size."""

from ray import tune

METHODS = {
    "atrank": {
        "num_spaces": tune.choice([1, 2, 4, 8]),  # paper default 8
        "hidden_dim": tune.choice([64, 128]),  # must divide by num_spaces: all choices do
        "num_blocks": tune.choice([1, 2]),
        "dropout": tune.uniform(0.0, 0.3),
        "lr": tune.loguniform(1e-4, 3e-3),
        "batch_size": tune.choice([64, 128, 256]),
    },
}
TRAIN = {"epochs": 10}
SEARCH = {"num_samples": 16, "scheduler": "asha", "grace_period": 2}
