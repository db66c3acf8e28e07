"""DSS: intentions K, sample-selection fraction λ, seq2seq weight, width, learning rate, batch size."""

from ray import tune

METHODS = {
    "dss": {
        "num_intentions": tune.choice([1, 2, 4, 8]),  # K, paper default 4
        "selection_fraction": tune.choice([0.1, 0.3, 0.5, 0.7, 1.0]),  # λ: the paper's λ curve
        "seq2seq_weight": tune.choice([0.5, 1.0, 2.0]),
        "hidden_dim": tune.choice([32, 64, 128]),
        "lr": tune.loguniform(1e-4, 3e-3),
        "batch_size": tune.choice([64, 128, 256]),
    },
}
TRAIN = {"epochs": 10}
SEARCH = {"num_samples": 20, "scheduler": "asha", "grace_period": 2}
