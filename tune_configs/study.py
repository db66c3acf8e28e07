"""Cross-method study on ml-1m: the papers' ablations as grids, every arm trained the same budget (FIFO).

* LURM — scales {month, year, both} × anchors M ∈ {1, 4} × per-anchor width H ∈ {32, 128}: multi-scale vs
  one scale, and M = 4 anchors of H = 32 vs one anchor of H = 128 (equal total width 128);
* DSS — the λ curve: sample-selection fraction λ ∈ {0, 0.25, 0.5, 1} (0 = seq2item only), K = 4;
* AdaptSSR — per-sample adaptive λ_i vs the code's batch-mean λ vs a fixed λ = 0.5;
* ATRank — one semantic space vs eight.

FIFO, not ASHA: an ablation arm stopped early would be compared at a shorter budget. Budget per trial:
3 epochs of at most 24 steps (2 cores; every method undertrained against RESULTS.md's 10 full epochs —
the directions are what this study measures). Everything else at the paper defaults.
"""

from ray import tune

METHODS = {
    "lurm": {"scales": tune.grid_search(["month", "year", "both"]), "num_anchors": tune.grid_search([1, 4]),
             "hidden_dim": tune.grid_search([32, 128])},
    "dss": {"selection_fraction": tune.grid_search([0.0, 0.25, 0.5, 1.0])},
    "adaptssr": {"lambda_mode": tune.grid_search(["per_sample", "batch_mean", "fixed"]), "fixed_lambda": 0.5},
    "atrank": {"num_spaces": tune.grid_search([1, 8])},
}
TRAIN = {"epochs": 3, "max_steps_per_epoch": 24}
SEARCH = {"num_samples": 1, "scheduler": "fifo"}  # grids give the arms; one sample of each
