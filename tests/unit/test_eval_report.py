"""The verdicts behind RESULTS.md: ``report.comparison`` and ``report.findings`` on hand-built results.

Summaries are built the way the harness builds them: long-format rows (one per task, target,
model, metric and seed) through ``report.summarise``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from raylurm.evaluate import report

GROUPS = {"lurm": "pretrained", "lurm (random init)": "random init", "raw BoI": "baseline", "TF-IDF": "baseline",
          "popularity": "baseline", "dss": "pretrained", "dss (random init)": "random init"}
HEADLINE = [("profiling", "gender", "AUC"), ("category", "mean", "AUC"), ("next_item", "full", "NDCG@10")]


def rows_of(values: dict[str, dict[tuple[str, str, str], float | list[float]]]) -> list[dict]:
    """{model: {(task, target, metric): value or per-seed values}} -> the harness's long-format rows."""
    out = []
    for model, metrics in values.items():
        for (task, target, metric), seeds in metrics.items():
            for seed, value in enumerate(seeds if isinstance(seeds, list) else [seeds]):
                out.append({"task": task, "target": target, "model": model, "group": GROUPS[model], "metric": metric,
                            "seed": seed, "value": value, "users": 100})
    return out


def summary_of(values) -> pd.DataFrame:
    return report.summarise(rows_of(values))


def verdict_lines(table: str) -> dict[str, str]:
    """Metric name -> verdict cell of a comparison table."""
    lines = table.strip().splitlines()[2:]
    return {cells[1].strip(): cells[5].strip() for cells in (line.split("|") for line in lines)}


# ------------------------------------------------------------------------------------- summarise


def test_summarise_means_sample_std_and_seed_counts():
    summary = summary_of({"lurm": {("profiling", "gender", "AUC"): [0.6, 0.7, 0.8], ("category", "mean", "AUC"): 0.5}})
    gender = summary[summary.target == "gender"].iloc[0]
    assert gender["mean"] == pytest.approx(0.7) and gender["std"] == pytest.approx(0.1) and gender["seeds"] == 3
    category = summary[summary.task == "category"].iloc[0]
    assert (category["mean"], category["std"], category["seeds"], category["users"]) == (0.5, 0.0, 1, 100)
    assert list(summary.columns) == ["task", "target", "model", "group", "metric", "mean", "std", "seeds", "users"]


# ------------------------------------------------------------------------------------ comparison


def test_better_similar_and_worse_by_metric():
    summary = summary_of({
        "lurm": {("profiling", "gender", "AUC"): 0.75, ("category", "mean", "AUC"): 0.60, ("next_item", "full", "NDCG@10"): 0.10},
        "TF-IDF": {("profiling", "gender", "AUC"): 0.50, ("category", "mean", "AUC"): 0.60, ("next_item", "full", "NDCG@10"): 0.20},
    })
    table, counts = report.comparison(summary, "lurm", "TF-IDF")
    assert counts == {">": 1, "≈": 1, "<": 1}
    assert table.splitlines()[:2] == ["| metric | lurm | TF-IDF | Δ | verdict |", "|---|---|---|---|---|"]
    assert "| profiling gender AUC | 0.7500 | 0.5000 | +0.2500 | lurm > TF-IDF |" in table.splitlines()
    assert "| category AUC | 0.6000 | 0.6000 | +0.0000 | lurm ≈ TF-IDF |" in table.splitlines()  # a tie
    assert "| next item full NDCG@10 | 0.1000 | 0.2000 | -0.1000 | lurm < TF-IDF |" in table.splitlines()
    _, reverse = report.comparison(summary, "TF-IDF", "lurm")  # the verdict is antisymmetric
    assert reverse == {">": 1, "≈": 1, "<": 1}


def test_within_the_tolerance_is_similar_and_the_tolerance_bound_itself_counts_as_similar():
    summary = summary_of({"lurm": {("profiling", "gender", "AUC"): 0.625, ("category", "mean", "AUC"): 0.6251},
                          "TF-IDF": {("profiling", "gender", "AUC"): 0.5, ("category", "mean", "AUC"): 0.5}})
    table, counts = report.comparison(summary, "lurm", "TF-IDF", tolerance=0.125)  # binary-exact: Δ = band exactly
    assert verdict_lines(table) == {"profiling gender AUC": "lurm ≈ TF-IDF", "category AUC": "lurm > TF-IDF"}
    small = summary_of({"lurm": {("profiling", "gender", "AUC"): 0.705}, "TF-IDF": {("profiling", "gender", "AUC"): 0.7}})
    assert report.comparison(small, "lurm", "TF-IDF")[1] == {">": 0, "≈": 1, "<": 0}  # |Δ| 0.005 <= default 0.01
    assert report.comparison(small, "lurm", "TF-IDF", tolerance=0.001)[1] == {">": 1, "≈": 0, "<": 0}


def test_noise_over_seeds_widens_the_band():
    """Δ = 0.12 beats the 0.01 tolerance, but not 2 × pooled std = 2·sqrt((0.1² + 0²)/2) ≈ 0.141."""
    noisy = {("profiling", "gender", "AUC"): [0.6, 0.7, 0.8]}
    close = summary_of({"lurm": noisy, "TF-IDF": {("profiling", "gender", "AUC"): [0.58, 0.58, 0.58]}})
    far = summary_of({"lurm": noisy, "TF-IDF": {("profiling", "gender", "AUC"): [0.55, 0.55, 0.55]}})
    assert report.comparison(close, "lurm", "TF-IDF")[1] == {">": 0, "≈": 1, "<": 0}
    assert report.comparison(far, "lurm", "TF-IDF")[1] == {">": 1, "≈": 0, "<": 0}  # Δ = 0.15 > 0.141
    steady = summary_of({"lurm": {("profiling", "gender", "AUC"): [0.7, 0.7, 0.7]},
                         "TF-IDF": {("profiling", "gender", "AUC"): [0.58, 0.58, 0.58]}})
    assert report.comparison(steady, "lurm", "TF-IDF")[1] == {">": 1, "≈": 0, "<": 0}  # same Δ, no noise


def _naive_verdicts(values, left, right, tolerance=0.01) -> dict[str, str]:
    """From the raw per-seed values: mean, sample std, Δ against max(tolerance, 2 × pooled std)."""
    out = {}
    for task, target, metric in HEADLINE:
        if (task, target, metric) not in values[left] or (task, target, metric) not in values[right]:
            continue
        a, b = (np.asarray(values[m][(task, target, metric)], dtype=float) for m in (left, right))
        sa, sb = (float(x.std(ddof=1)) if len(x) > 1 else 0.0 for x in (a, b))
        delta = a.mean() - b.mean()
        band = max(tolerance, 2 * math.sqrt((sa ** 2 + sb ** 2) / 2))
        name = {"profiling": f"profiling {target} {metric}", "category": f"category {metric}",
                "next_item": f"next item {target} {metric}"}[task]
        out[name] = f"{left} {'≈' if abs(delta) <= band else ('>' if delta > 0 else '<')} {right}"
    return out


@pytest.mark.parametrize("seed", range(8))
def test_verdicts_match_a_naive_computation_from_the_per_seed_values(seed):
    rng = np.random.default_rng(seed)
    values = {model: {key: list(rng.normal(0.5, rng.choice([0.0, 0.02, 0.1]), size=3).round(4) + rng.normal(0, 0.05))
                      for key in HEADLINE}
              for model in ("lurm", "raw BoI")}
    table, counts = report.comparison(summary_of(values), "lurm", "raw BoI")
    expected = _naive_verdicts(values, "lurm", "raw BoI")
    assert verdict_lines(table) == expected
    assert counts == {v: sum(e.split()[1] == v for e in expected.values()) for v in (">", "≈", "<")}


def test_only_headline_metrics_are_compared():
    summary = summary_of({
        "lurm": {("next_item", "full", "HR@10"): 0.9, ("category", "Drama", "AUC"): 0.9, ("next_item", "sampled", "NDCG@10"): 0.9,
                 ("profiling", "age", "accuracy"): 0.9},
        "TF-IDF": {("next_item", "full", "HR@10"): 0.1, ("category", "Drama", "AUC"): 0.1, ("next_item", "sampled", "NDCG@10"): 0.1,
                   ("profiling", "age", "accuracy"): 0.1},
    })
    table, counts = report.comparison(summary, "lurm", "TF-IDF")
    assert set(verdict_lines(table)) == {"next item sampled NDCG@10", "profiling age accuracy"}
    assert counts == {">": 2, "≈": 0, "<": 0}


def test_missing_models_and_metrics_are_left_out_not_counted():
    summary = summary_of({"lurm": {("profiling", "gender", "AUC"): 0.9, ("category", "mean", "AUC"): 0.9},
                          "TF-IDF": {("profiling", "gender", "AUC"): 0.5}})
    table, counts = report.comparison(summary, "lurm", "TF-IDF")
    assert set(verdict_lines(table)) == {"profiling gender AUC"} and counts == {">": 1, "≈": 0, "<": 0}
    table, counts = report.comparison(summary, "lurm", "nobody")
    assert counts == {">": 0, "≈": 0, "<": 0} and len(table.strip().splitlines()) == 2  # the header only
    empty = report.summarise([])
    assert report.comparison(empty, "lurm", "TF-IDF")[1] == {">": 0, "≈": 0, "<": 0}


def test_nan_results_are_left_out_and_a_nan_seed_does_not_hide_the_other_seeds_noise():
    nan = float("nan")
    summary = summary_of({"lurm": {("profiling", "gender", "AUC"): [nan, nan], ("category", "mean", "AUC"): [0.6, nan, 0.8]},
                          "TF-IDF": {("profiling", "gender", "AUC"): [0.5, 0.5], ("category", "mean", "AUC"): [0.6, 0.6, 0.6]}})
    table, counts = report.comparison(summary, "lurm", "TF-IDF")
    # all-NaN: no verdict at all; one NaN seed: the mean (0.7) and the spread (std 0.141) of the two others,
    # so Δ = 0.1 is within 2 × pooled std = 0.2 rather than a "better"
    assert verdict_lines(table) == {"category AUC": "lurm ≈ TF-IDF"}
    assert "| category AUC | 0.7000 | 0.6000 | +0.1000 |" in table
    assert counts == {">": 0, "≈": 1, "<": 0}


# -------------------------------------------------------------------------------------- findings

KNOWN = {
    "lurm": {("profiling", "gender", "AUC"): 0.70, ("category", "mean", "AUC"): 0.80, ("next_item", "full", "NDCG@10"): 0.1603,
             ("next_item", "full", "HR@10"): 0.15, ("next_item", "sampled", "NDCG@10"): 0.40},
    "lurm (random init)": {("profiling", "gender", "AUC"): 0.60, ("category", "mean", "AUC"): 0.80,
                           ("next_item", "full", "NDCG@10"): 0.05, ("next_item", "sampled", "NDCG@10"): 0.30},
    "raw BoI": {("profiling", "gender", "AUC"): 0.705, ("category", "mean", "AUC"): 0.70, ("next_item", "full", "NDCG@10"): 0.10},
    "TF-IDF": {("profiling", "gender", "AUC"): 0.65, ("category", "mean", "AUC"): 0.80, ("next_item", "full", "NDCG@10"): 0.16},
    "popularity": {("next_item", "full", "HR@10"): 0.10, ("next_item", "full", "NDCG@10"): 0.05},
}


def _section(text: str, title: str) -> list[str]:
    """The lines of the ``### title`` section."""
    lines = text.splitlines()
    start = lines.index(f"### {title}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("### ")), len(lines))
    return lines[start + 1:end]


def test_findings_for_a_known_ml1m_case():
    text = report.findings(summary_of(KNOWN), "ml-1m")
    assert text.startswith("## Findings (computed from the tables above)\n")

    anchors = _section(text, "Next item against public full-ranking anchors (ML-1M, leave-one-out)")
    table = [line for line in anchors if line.startswith("|")]
    assert table[0] == "| model | HR@10 | NDCG@10 | HR@10 / SASRec | NDCG@10 / SASRec |"
    assert table[2:] == ["| SASRec (published) | 0.2853 | 0.1603 | 1.00 | 1.00 |",
                         "| HSTU (published) | 0.3097 | 0.1720 | 1.09 | 1.07 |",
                         "| HSTU-large (published) | 0.3294 | 0.1893 | 1.15 | 1.18 |",
                         "| lurm | 0.1500 | 0.1603 | 0.53 | 1.00 |",  # models without a full HR@10 are left out
                         "| popularity | 0.1000 | 0.0500 | 0.35 | 0.31 |"]

    raw = _section(text, "LURM paper claim: LURM ≈ raw BoI")
    assert "| profiling gender AUC | 0.7000 | 0.7050 | -0.0050 | lurm ≈ raw BoI |" in raw
    assert "| category AUC | 0.8000 | 0.7000 | +0.1000 | lurm > raw BoI |" in raw
    assert "| next item full NDCG@10 | 0.1603 | 0.1000 | +0.0603 | lurm > raw BoI |" in raw
    assert not any("sampled" in line for line in raw)  # raw BoI has no sampled result
    assert ("Over 3 metrics: lurm > raw BoI on 2, ≈ on 1, < on 0 "
            "(≈: |Δ| ≤ max(0.01, 2 × pooled std over seeds)).") in raw

    tfidf = _section(text, "LURM paper claim: LURM > TF-IDF")
    assert "Over 3 metrics: lurm > TF-IDF on 1, ≈ on 2, < on 0 (≈: |Δ| ≤ max(0.01, 2 × pooled std over seeds))." in tfidf

    pretraining = _section(text, "Does pretraining help? (pretrained vs its own initial weights, headline metrics)")
    rows = [line for line in pretraining if line.startswith("|")]
    assert rows == ["| method | better | ≈ | worse |", "|---|---|---|---|", "| lurm | 3 | 1 | 0 |"]


def test_findings_leaves_out_what_it_cannot_compute():
    text = report.findings(summary_of(KNOWN), "synthetic")  # anchors only for ML-1M
    assert "anchors" not in text and "LURM paper claim: LURM ≈ raw BoI" in text

    no_next_item = {m: {k: v for k, v in metrics.items() if k[0] != "next_item"} for m, metrics in KNOWN.items()}
    no_next_item = {m: v for m, v in no_next_item.items() if v}
    assert "anchors" not in report.findings(summary_of(no_next_item), "ml-1m")

    without_lurm = report.findings(summary_of({m: v for m, v in KNOWN.items() if not m.startswith("lurm")}), None)
    assert "LURM paper claim" not in without_lurm and "Does pretraining help" not in without_lurm

    only_tfidf = report.findings(summary_of({m: KNOWN[m] for m in ("lurm", "TF-IDF")}), None)
    assert "LURM > TF-IDF" in only_tfidf and "raw BoI" not in only_tfidf and "Does pretraining help" not in only_tfidf


def test_pretraining_rows_per_method_with_a_twin_and_ties_are_similar():
    same = {("profiling", "gender", "AUC"): [0.7, 0.7], ("category", "mean", "AUC"): [0.6, 0.6]}
    text = report.findings(summary_of({"dss": same, "dss (random init)": same, "lurm": same, "TF-IDF": same}), None)
    rows = [line for line in _section(text, "Does pretraining help? (pretrained vs its own initial weights, headline metrics)")
            if line.startswith("| dss") or line.startswith("| lurm")]
    assert rows == ["| dss | 0 | 2 | 0 |"]  # lurm has no random-init twin here
    assert "Over 2 metrics: lurm > TF-IDF on 0, ≈ on 2, < on 0" in text
