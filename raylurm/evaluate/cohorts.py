"""Which users train a probe, which choose, which are scored: one rule for Tune and every seed.

The **selection users** are a fixed share of the users, chosen by a hash of the user id alone
(not by a seed, not by the task): every choice made on labels — Tune's checkpoint selection
(``raylurm.tune.validation``), the probes' epochs and weight decays, the next-item head's
epochs — is made on them, and no probe seed ever puts one of them into its test part. Each
probe seed then permutes the remaining users into probe-train and test users.

Before this rule every seed re-drew a 60/20/20 cut, so seeds 1 and 2 tested on users whose
labels seed 0's validation part (and Tune) had chosen on; now the validation part is the same
for every seed and disjoint from every test part by construction.
"""

from __future__ import annotations

import hashlib

import numpy as np

SALT = b"raylurm-selection-v1"


def user_hash(user_ids) -> np.ndarray:
    """A uniform number in [0, 1) per user id, stable across runs, machines and tasks."""
    out = np.empty(len(user_ids), dtype=np.float64)
    for i, user in enumerate(np.asarray(user_ids, dtype=object).tolist()):
        digest = hashlib.blake2b(str(user).encode(), digest_size=8, key=SALT).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0 ** 64
    return out


def selection_mask(user_ids, share: float) -> np.ndarray:
    """True for the selection users: the ``share`` of users whose hash falls below it."""
    return user_hash(user_ids) < share


def assign(user_ids, seed: int, fractions=(0.6, 0.2, 0.2)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint probe-train / validation / test row indices into ``user_ids``.

    Validation = the selection users (``fractions[1]`` of them, by hash, the same for every
    seed); the others are permuted by ``seed`` and cut ``fractions[0] : fractions[2]``."""
    user_ids = np.asarray(user_ids, dtype=object)
    valid = np.flatnonzero(selection_mask(user_ids, fractions[1]))
    rest = np.flatnonzero(~selection_mask(user_ids, fractions[1]))
    order = np.random.default_rng(seed).permutation(rest)
    a = int(round(fractions[0] / (fractions[0] + fractions[2]) * len(rest)))
    return np.sort(order[:a]), valid, np.sort(order[a:])


def folds(num_rows: int, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of each of ``num_rows`` rows, balanced, permuted by ``seed`` (cross-fitting)."""
    fold = np.arange(num_rows) % k
    return np.random.default_rng(seed).permutation(fold)
