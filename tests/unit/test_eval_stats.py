"""Paired bootstrap verdicts (``raylurm.evaluate.stats``) on hand-made per-user tables."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score

from raylurm.evaluate import stats


def rows(task: str, target: str, model: str, kind: str, seed: int, users, run: int = 0, *, label=None, score=None,
         pred=None, rank=None, group: str = "baseline") -> pd.DataFrame:
    """Per-user rows in the harness's schema (results_by_user.parquet)."""
    n = len(users)
    nan = np.full(n, np.nan)
    return pd.DataFrame({
        "task": task, "target": target, "model": model, "group": group, "run": run, "seed": seed,
        "user_id": [str(u) for u in users], "kind": kind,
        "label": nan if label is None else np.asarray(label, np.float64),
        "score": nan if score is None else np.asarray(score, np.float64),
        "pred": np.full(n, -1, np.int64) if pred is None else np.asarray(pred, np.int64),
        "rank": np.full(n, -1, np.int64) if rank is None else np.asarray(rank, np.int64)})


def ranking(models: dict[str, float | list[float]], n: int = 500, seeds=(0,), seed: int = 0) -> pd.DataFrame:
    """Next-item ranks ~ exponential(scale): {model: scale, or one scale per run} (smaller is better)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in seeds:
        users = [f"u{i}" for i in range(n)]
        for model, scales in models.items():
            for run, scale in enumerate(scales if isinstance(scales, list) else [scales]):
                out.append(rows("next_item", "full", model, "ranking", s, users, run,
                                rank=np.floor(rng.exponential(scale, n)).astype(np.int64)))
    return pd.concat(out, ignore_index=True)


def binary(models: dict[str, float | list[float]], n: int = 400, seeds=(0, 1, 2), seed: int = 0,
           prior: float = 0.3) -> pd.DataFrame:
    """Binary labels; score = signal · (2y − 1) + N(0, 1), rounded (ties); {model: signal or one per run}."""
    rng = np.random.default_rng(seed)
    out = []
    for s in seeds:
        users = [f"s{s}u{i}" for i in range(n)]
        y = (rng.random(n) < prior).astype(np.float64)
        for model, signals in models.items():
            for run, signal in enumerate(signals if isinstance(signals, list) else [signals]):
                score = np.round(signal * (2 * y - 1) + rng.normal(0, 1, n), 1)
                out.append(rows("profiling", "gender", model, "binary", s, users, run, label=y, score=score,
                                pred=(score > 0).astype(np.int64)))
    return pd.concat(out, ignore_index=True)


def ndcg10(rank: np.ndarray) -> float:
    return float(np.where(rank < 10, 1 / np.log2(rank + 2.0), 0.0).mean())


# ------------------------------------------------------------------------------------ verdicts


def test_a_real_ranking_difference_is_found_with_an_interval_that_excludes_zero():
    frame = ranking({"good": 5.0, "bad": 20.0})
    result = stats.paired(frame, "next_item", "full", "NDCG@10", "good", "bad")
    good, bad = (frame[frame.model == m]["rank"].to_numpy() for m in ("good", "bad"))
    assert result.a == pytest.approx(ndcg10(good)) and result.b == pytest.approx(ndcg10(bad))
    assert result.delta == pytest.approx(ndcg10(good) - ndcg10(bad)) and result.delta > 0.1
    assert 0 < result.low < result.delta < result.high and result.verdict == ">"
    assert result.p_value < 0.01 and result.users == 500 and result.higher_is_better
    reverse = stats.paired(frame, "next_item", "full", "NDCG@10", "bad", "good")
    assert reverse.verdict == "<" and reverse.delta == pytest.approx(-result.delta)
    assert (reverse.low, reverse.high) == pytest.approx((-result.high, -result.low), abs=1e-6)  # the same resamples


def test_ranking_metrics_per_user_follow_their_definitions():
    rank = np.array([0, 1, 4, 9, 10, 19, 20, 100])
    values = {m: stats.per_user_values(m, "ranking", None, None, None, rank) for m in stats.RANKING}
    assert values["HR@1"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert values["HR@10"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0] and values["HR@20"].sum() == 6
    assert values["NDCG@5"][:3] == pytest.approx([1.0, 1 / np.log2(3), 1 / np.log2(6)]) and values["NDCG@5"][3] == 0
    assert values["NDCG@20"][5] == pytest.approx(1 / np.log2(21)) and values["NDCG@20"][6] == 0
    assert values["MRR@10"][3] == pytest.approx(0.1) and values["MRR@10"][4] == 0
    assert values["MRR"][-1] == pytest.approx(1 / 101)


def test_an_identical_pair_gives_exactly_zero_and_similar():
    frame = binary({"a": 1.0, "b": 0.5})
    twin = pd.concat([frame, frame[frame.model == "a"].assign(model="a copy")], ignore_index=True)
    for metric in ("AUC", "accuracy", "balanced accuracy"):
        result = stats.paired(twin, "profiling", "gender", metric, "a", "a copy", n_boot=500)
        assert (result.delta, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
        assert result.a == result.b and result.verdict == "≈"
    assert stats.paired(twin, "profiling", "gender", "AUC", "a", "a", n_boot=200).delta == 0.0


def test_noise_only_pairs_are_mostly_similar():
    verdicts = []
    for k in range(40):
        frame = binary({"x": 0.8, "y": 0.8}, n=300, seeds=(0,), seed=100 + k)
        verdicts.append(stats.paired(frame, "profiling", "gender", "AUC", "x", "y", n_boot=400, seed=k).verdict)
    assert verdicts.count("≈") >= 34, verdicts  # ~5 % false positives expected at 95 %
    assert set(verdicts) <= {">", "≈", "<"}


def test_mae_is_lower_is_better():
    rng = np.random.default_rng(1)
    users = [f"u{i}" for i in range(400)]
    y = rng.normal(35, 10, 400)
    frame = pd.concat([rows("profiling", "age", "close", "regression", 0, users, label=y, score=y + rng.normal(0, 2, 400)),
                       rows("profiling", "age", "far", "regression", 0, users, label=y, score=y + rng.normal(0, 8, 400))])
    result = stats.paired(frame, "profiling", "age", "MAE", "close", "far")
    assert result.delta < 0 and result.high < 0 and not result.higher_is_better
    assert result.verdict == ">"  # lower MAE: close is better
    assert stats.paired(frame, "profiling", "age", "MAE", "far", "close").verdict == "<"
    assert stats.paired(frame, "profiling", "age", "R²", "close", "far").verdict == ">"
    assert stats.paired(frame, "profiling", "age", "Spearman", "close", "far").verdict == ">"
    close = frame[frame.model == "close"]
    assert result.a == pytest.approx(np.abs(close.score - close.label).mean())


def test_the_auc_point_estimate_is_sklearns_averaged_over_runs_then_seeds():
    frame = binary({"a": [1.0, 0.6], "b": 0.3})  # rounded scores: many ties
    result = stats.paired(frame, "profiling", "gender", "AUC", "a", "b", n_boot=300)
    per_seed = []
    for s in range(3):
        runs = [roc_auc_score(r.label, r.score) for _, r in frame[(frame.model == "a") & (frame.seed == s)].groupby("run")]
        per_seed.append(np.mean(runs))
    assert result.a == pytest.approx(np.mean(per_seed), abs=1e-12)
    b = frame[frame.model == "b"]
    assert result.b == pytest.approx(np.mean([roc_auc_score(r.label, r.score) for _, r in b.groupby("seed")]), abs=1e-12)
    assert stats.metric_of(b[b.seed == 0], "AUC") == pytest.approx(roc_auc_score(b[b.seed == 0].label, b[b.seed == 0].score))


def test_weighted_metrics_equal_the_metric_of_the_expanded_resample():
    rng = np.random.default_rng(3)
    n = 300
    y = (rng.random(n) < 0.4).astype(float)
    score = np.round(y + rng.normal(0, 1, n), 1)
    classes = rng.integers(0, 3, n).astype(float)
    guess = np.where(rng.random(n) < 0.5, classes, rng.integers(0, 3, n))
    target = np.round(rng.normal(30, 8, n))
    estimate = np.round(target + rng.normal(0, 6, n))
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(5)], axis=1)
    for j in range(counts.shape[1]):
        idx = np.repeat(np.arange(n), counts[:, j])
        w = counts[:, j:j + 1].astype(np.float32)
        assert stats.weighted_metric("AUC", "binary", w, y, score, None, None)[0] == pytest.approx(
            roc_auc_score(y[idx], score[idx]))
        assert stats.weighted_metric("balanced accuracy", "multiclass", w, classes, None, guess, None)[0] == pytest.approx(
            balanced_accuracy_score(classes[idx], guess[idx]))
        assert stats.weighted_metric("R²", "regression", w, target, estimate, None, None)[0] == pytest.approx(
            r2_score(target[idx], estimate[idx]))
        assert stats.weighted_metric("Spearman", "regression", w, target, estimate, None, None)[0] == pytest.approx(
            spearmanr(target[idx], estimate[idx]).statistic)
        assert stats.weighted_metric("accuracy", "multiclass", w, classes, None, guess, None)[0] == pytest.approx(
            (classes[idx] == guess[idx]).mean())


def test_category_mean_averages_the_per_category_aucs_and_skips_single_class_categories():
    rng = np.random.default_rng(4)
    users = [f"u{i}" for i in range(300)]
    parts, expected = [], {}
    for model, signal in (("a", 1.0), ("b", 0.4)):
        per_seed = []
        for s in (0, 1):
            aucs = []
            for c, prior in enumerate((0.2, 0.5, 0.0)):  # the last category: no positive at all -> skipped
                y = (rng.random(300) < prior).astype(float)
                score = signal * (2 * y - 1) + rng.normal(0, 1, 300)
                parts.append(rows("category", f"c{c}", model, "multilabel", s, users, label=y, score=score))
                if y.any():
                    aucs.append(roc_auc_score(y, score))
            per_seed.append(np.mean(aucs))
        expected[model] = np.mean(per_seed)
    frame = pd.concat(parts, ignore_index=True)
    result = stats.paired(frame, "category", "mean", "AUC", "a", "b", n_boot=500)
    assert result.a == pytest.approx(expected["a"]) and result.b == pytest.approx(expected["b"])
    assert result.verdict == ">" and math.isfinite(result.low)
    single = stats.paired(frame, "category", "c0", "AUC", "a", "b", n_boot=100)
    assert single.a != pytest.approx(result.a)  # one category is not the mean
    accuracy = stats.paired(frame, "category", "mean", "accuracy", "a", "b", n_boot=100)
    a = frame[frame.model == "a"]
    per_category = a.assign(hit=(a.score > 0) == (a.label > 0.5)).groupby(["seed", "target"]).hit.mean()
    assert accuracy.a == pytest.approx(per_category.groupby("seed").mean().mean())


def test_pretraining_runs_are_resampled_so_run_noise_widens_the_interval():
    frame = ranking({"a": [3.0, 10.0, 30.0], "b": 10.0}, n=400, seeds=(0, 1))
    many = stats.paired(frame, "next_item", "full", "HR@10", "a", "b", n_boot=1000)
    single = stats.paired(frame[(frame.model == "b") | (frame.run == 1)], "next_item", "full", "HR@10", "a", "b", n_boot=1000)
    assert many.high - many.low > 2 * (single.high - single.low)
    hr = [(frame[(frame.model == "a") & (frame.run == r)]["rank"] < 10).mean() for r in range(3)]
    assert many.a == pytest.approx(np.mean(hr))


def test_users_pair_on_seed_and_user_id_whatever_the_row_order():
    frame = ranking({"a": 5.0, "b": 8.0}, n=300, seeds=(0, 1))
    b = frame[frame.model == "b"]
    extra = b[b.seed == 0].head(20).assign(user_id=lambda f: "extra" + f.user_id)  # users only b was scored on
    shuffled = pd.concat([frame[frame.model == "a"], b.sample(frac=1.0, random_state=0), extra], ignore_index=True)
    assert stats.paired(shuffled, "next_item", "full", "MRR", "a", "b", n_boot=300) == stats.paired(
        frame, "next_item", "full", "MRR", "a", "b", n_boot=300)
    assert math.isnan(stats.paired(frame, "next_item", "full", "MRR", "a", "nobody").delta)


def test_deterministic_given_the_seed():
    frame = binary({"a": 0.8, "b": 0.7})
    first = stats.paired(frame, "profiling", "gender", "AUC", "a", "b", n_boot=300, seed=7)
    assert first == stats.paired(frame, "profiling", "gender", "AUC", "a", "b", n_boot=300, seed=7)
    assert first.low != stats.paired(frame, "profiling", "gender", "AUC", "a", "b", n_boot=300, seed=8).low


def test_a_constant_majority_predictor_marks_what_is_at_chance():
    rng = np.random.default_rng(5)
    users = [f"u{i}" for i in range(500)]
    y = rng.choice(4, 500, p=[0.5, 0.2, 0.2, 0.1]).astype(float)
    frame = pd.concat([
        rows("profiling", "age", "majority", "multiclass", 0, users, label=y, pred=np.zeros(500)),
        rows("profiling", "age", "noise", "multiclass", 0, users, label=y,  # mostly the majority class, else a guess
             pred=np.where(rng.random(500) < 0.9, 0, rng.integers(0, 4, 500))),
        rows("profiling", "age", "good", "multiclass", 0, users, label=y, pred=np.where(rng.random(500) < 0.7, y, 0))])
    assert stats.metric_of(frame[frame.model == "majority"], "balanced accuracy") == pytest.approx(0.25)
    assert stats.metric_of(frame[frame.model == "majority"], "accuracy") == pytest.approx((y == 0).mean())
    for metric in ("accuracy", "balanced accuracy"):
        assert stats.at_chance(frame, "profiling", "age", metric, "noise") is True
        assert stats.at_chance(frame, "profiling", "age", metric, "good") is False
        assert stats.at_chance(frame, "profiling", "age", metric, "majority") is True
    assert stats.at_chance(frame[frame.model != "majority"], "profiling", "age", "accuracy", "good") is None


def test_missing_seeds_or_models_give_nan_not_a_verdict():
    frame = binary({"a": 1.0, "b": 0.5})
    assert math.isnan(stats.paired(frame, "profiling", "age", "AUC", "a", "b").delta)  # no such target
    only_a = frame[(frame.model == "a") | (frame.seed != 2)]  # b lacks seed 2: seeds 0 and 1 are paired
    result = stats.paired(only_a, "profiling", "gender", "AUC", "a", "b", n_boot=200)
    both = stats.paired(frame[frame.seed != 2], "profiling", "gender", "AUC", "a", "b", n_boot=200)
    assert result == both


def test_one_auc_comparison_and_the_category_mean_are_fast():
    """~1,200 test users × 3 seeds × 2,000 replicates (the brief's budget: well under a second or two)."""
    frame = binary({"a": 1.0, "b": 0.8}, n=1200)
    start = time.perf_counter()
    stats.paired(frame, "profiling", "gender", "AUC", "a", "b")
    assert time.perf_counter() - start < 2.5  # ~0.3 s here; slack for a loaded machine
