"""RESULTS.md's tables and verdicts: ``report.summarise``, ``comparison``, ``findings``, ``markdown`` on hand-built results.

Per-user tables are built in the harness's schema (``results_by_user.parquet``); the per-seed rows
of the summary are computed from them with ``stats.metric_of``, as the harness's tasks would.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from raylurm.evaluate import report, stats

N_BOOT = 300
USERS, SEEDS = 300, (0, 1)
# model: (group, pretraining runs, signal) — the signal drives every task; None: a constant baseline
MODELS = {
    "lurm": ("pretrained", 2, 1.0),
    "dss": ("pretrained", 1, 0.7),
    "sasrec": ("pretrained", 1, 1.2),
    "lurm (random init)": ("random init", 2, 0.0),
    "dss (random init)": ("random init", 1, 0.0),
    "raw BoI": ("baseline", 1, 1.0),
    "TF-IDF": ("baseline", 1, 0.3),
    "majority": ("baseline", 1, None),
    "popularity": ("baseline", 1, None),
}
AGE_PRIOR, GENDER_PRIOR, CATEGORY_PRIORS = [0.5, 0.3, 0.2], 0.3, {"Action": 0.2, "Comedy": 0.4, "Drama": 0.65}


def user_rows(task, target, kind, model, run, seed, users, **columns) -> pd.DataFrame:
    n = len(users)
    frame = pd.DataFrame({"task": task, "target": target, "model": model, "group": MODELS[model][0], "run": run, "seed": seed,
                          "user_id": users, "kind": kind, "label": np.full(n, np.nan), "score": np.full(n, np.nan),
                          "pred": np.full(n, -1, np.int64), "rank": np.full(n, -1, np.int64)})
    for name, values in columns.items():
        frame[name] = np.asarray(values, dtype=frame[name].dtype)
    return frame


def build_per_user(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for s in SEEDS:
        users = [f"s{s}u{i}" for i in range(USERS)]
        gender = (rng.random(USERS) < GENDER_PRIOR).astype(float)
        age = rng.choice(3, USERS, p=AGE_PRIOR).astype(float)
        income = rng.normal(40, 10, USERS)
        categories = {c: (rng.random(USERS) < p).astype(float) for c, p in CATEGORY_PRIORS.items()}
        for model, (_, runs, signal) in MODELS.items():
            for run in range(runs):
                def add(task, target, kind, **columns):
                    parts.append(user_rows(task, target, kind, model, run, s, users, **columns))

                if model == "popularity":
                    add("next_item", "full", "ranking", rank=np.floor(rng.exponential(40, USERS)))
                    add("next_item", "sampled", "ranking", rank=np.floor(rng.exponential(8, USERS)))
                    continue
                if signal is None:  # majority: the label prior, constant
                    add("profiling", "gender", "binary", label=gender, score=np.full(USERS, -0.85), pred=np.zeros(USERS))
                    add("profiling", "age", "multiclass", label=age, pred=np.zeros(USERS))
                    add("profiling", "income", "regression", label=income, score=np.full(USERS, 40.0))
                    for c, y in categories.items():
                        add("category", c, "multilabel", label=y, score=np.full(USERS, 1.0 if CATEGORY_PRIORS[c] > 0.5 else -1.0))
                    continue
                score = np.round(signal * (2 * gender - 1) + rng.normal(0, 1, USERS), 2)
                add("profiling", "gender", "binary", label=gender, score=score, pred=score > 0)
                add("profiling", "age", "multiclass", label=age, pred=np.where(rng.random(USERS) < 0.6 * signal, age, 0))
                add("profiling", "income", "regression", label=income, score=income + rng.normal(0, 12 / (1 + 2 * signal), USERS))
                for c, y in categories.items():
                    add("category", c, "multilabel", label=y, score=signal * (2 * y - 1) + rng.normal(0, 1, USERS))
                add("next_item", "full", "ranking", rank=np.floor(rng.exponential(40 / (1 + 3 * signal), USERS)))
                add("next_item", "sampled", "ranking", rank=np.floor(rng.exponential(8 / (1 + 3 * signal), USERS)))
    return pd.concat(parts, ignore_index=True)


def seed_rows(per_user: pd.DataFrame) -> list[dict]:
    """The harness's long-format rows (one per task, target, model, metric, seed) from the per-user table."""
    out = []
    keys = ["task", "target", "model", "group", "run", "seed"]
    for (task, target, model, group, run, seed), rows in per_user.groupby(keys, sort=False):
        for metric in stats.METRICS_BY_KIND[rows.kind.iloc[0]]:
            out.append({"task": task, "target": target, "model": model, "group": group, "metric": metric, "seed": seed,
                        "run": run, "value": stats.metric_of(rows, metric), "users": len(rows)})
    category = pd.DataFrame([r for r in out if r["task"] == "category"])
    for (model, group, run, seed, metric), rows in category.groupby(["model", "group", "run", "seed", "metric"], sort=False):
        out.append({"task": "category", "target": "mean", "model": model, "group": group, "metric": metric, "seed": seed,
                    "run": run, "value": float(np.nanmean(rows.value)), "users": int(rows.users.iloc[0])})
    for model in per_user[per_user.task == "next_item"].model.unique():  # a list property, not per user
        out.append({"task": "next_item", "target": "full", "model": model, "group": MODELS[model][0], "metric": "coverage@10",
                    "seed": 0, "run": 0, "value": 0.5, "users": USERS})
    return out


@pytest.fixture(scope="module")
def per_user() -> pd.DataFrame:
    return build_per_user()


@pytest.fixture(scope="module")
def summary(per_user) -> pd.DataFrame:
    return report.summarise(seed_rows(per_user))


@pytest.fixture(scope="module")
def findings(summary, per_user) -> str:
    return report.findings(summary, per_user, "ml-1m", n_boot=N_BOOT)


def table_rows(table: str) -> dict[str, list[str]]:
    """Metric name -> the other cells of a comparison table's rows."""
    lines = table.strip().splitlines()[2:]
    return {cells[1].strip(): [c.strip() for c in cells[2:-1]] for cells in (line.split("|") for line in lines)}


def section(text: str, title: str) -> list[str]:
    """The lines of the ``### title`` section."""
    lines = text.splitlines()
    start = lines.index(f"### {title}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[start + 1:end]


# ------------------------------------------------------------------------------------- summarise


def test_summarise_means_sample_std_and_seed_counts():
    rows = [{"task": "profiling", "target": "gender", "model": "lurm", "group": "pretrained", "metric": "AUC", "seed": s,
             "value": v, "users": 100} for s, v in enumerate([0.6, 0.7, 0.8])]
    summary = report.summarise(rows)
    assert list(summary.columns) == report.SUMMARY_COLUMNS
    row = summary.iloc[0]
    assert (row["mean"], row["std"], row["seeds"], row["users"]) == (pytest.approx(0.7), pytest.approx(0.1), 3, 100)
    assert report.summarise([]).empty and list(report.summarise([]).columns) == report.SUMMARY_COLUMNS


def test_a_nan_seed_is_left_out_of_mean_std_and_count_and_all_nan_shows_a_dash():
    nan = float("nan")
    values = {"AUC": [0.6, nan, 0.8], "accuracy": [nan, nan, nan], "balanced accuracy": [nan, 0.55, nan]}
    rows = [{"task": "profiling", "target": "gender", "model": "lurm", "group": "pretrained", "metric": m, "seed": s,
             "value": v, "users": 100} for m, vs in values.items() for s, v in enumerate(vs)]
    summary = report.summarise(rows).set_index("metric")
    assert summary.loc["AUC", "mean"] == pytest.approx(0.7) and summary.loc["AUC", "std"] == pytest.approx(math.sqrt(0.02))
    assert summary.loc["AUC", "seeds"] == 2
    assert math.isnan(summary.loc["accuracy", "mean"]) and summary.loc["accuracy", "seeds"] == 0
    assert summary.loc["balanced accuracy", "std"] == 0.0 and summary.loc["balanced accuracy", "seeds"] == 1
    table = report.tables(summary.reset_index())["User profiling (test users; MLP probe on frozen representations)"]
    assert "| lurm | **0.7000 ± 0.1414** | – | **0.5500** |" in table  # one finite seed: no spread shown
    assert "nan" not in table.lower()


# ----------------------------------------------------------------------------------- comparison


def test_headline_metrics_come_from_the_per_user_table(per_user):
    assert report.headline_metrics(per_user) == [
        ("profiling", "gender", "AUC"), ("profiling", "gender", "accuracy"), ("profiling", "gender", "balanced accuracy"),
        ("profiling", "age", "accuracy"), ("profiling", "age", "balanced accuracy"),
        ("profiling", "income", "MAE"), ("profiling", "income", "R²"), ("profiling", "income", "Spearman"),
        ("category", "mean", "AUC"), ("category", "mean", "accuracy"),
        ("next_item", "full", "NDCG@10"), ("next_item", "full", "HR@10"), ("next_item", "sampled", "NDCG@10")]
    no_sampled = per_user[(per_user.task != "next_item") | (per_user.target == "full")]
    assert ("next_item", "sampled", "NDCG@10") not in report.headline_metrics(no_sampled)
    only_category = per_user[per_user.task == "category"]
    assert report.headline_metrics(only_category) == [("category", "mean", "AUC"), ("category", "mean", "accuracy")]


def test_comparison_rows_are_paired_bootstrap_results(per_user):
    table, counts = report.comparison(per_user, "lurm", "TF-IDF", n_boot=N_BOOT)
    lines = table.splitlines()
    assert lines[:2] == ["| metric | lurm | TF-IDF | Δ [95 % CI] | p | verdict |", "|---|---|---|---|---|---|"]
    rows = table_rows(table)
    assert list(rows) == [report._name(*k) for k in report.headline_metrics(per_user)]
    for key in (("next_item", "full", "NDCG@10"), ("profiling", "income", "MAE"), ("category", "mean", "AUC")):
        r = stats.paired(per_user, *key, "lurm", "TF-IDF", n_boot=N_BOOT)
        assert rows[report._name(*key)] == [f"{r.a:.4f}", f"{r.b:.4f}", f"{r.delta:+.4f} [{r.low:+.4f}, {r.high:+.4f}]",
                                            f"{r.p_value:.3f}", f"lurm {r.verdict} TF-IDF"]
    assert rows["next item full NDCG@10"][-1] == "lurm > TF-IDF" and rows["category AUC"][-1] == "lurm > TF-IDF"
    mae = rows["profiling income MAE"]
    assert mae[2].startswith("-") and mae[-1] == "lurm > TF-IDF"  # lower MAE is the better side
    assert sum(counts[v] for v in report.VERDICTS) + counts["at chance"] == len(rows)
    assert counts == {v: sum(r[-1] == f"lurm {v} TF-IDF" for r in rows.values()) for v in report.VERDICTS} | {"at chance": 0}
    assert counts[">"] >= 10


def test_comparison_is_antisymmetric(per_user):
    _, forward = report.comparison(per_user, "dss", "TF-IDF", n_boot=N_BOOT)
    _, reverse = report.comparison(per_user, "TF-IDF", "dss", n_boot=N_BOOT)
    assert (reverse[">"], reverse["≈"], reverse["<"]) == (forward["<"], forward["≈"], forward[">"])


def test_accuracies_at_chance_on_both_sides_are_shown_but_not_counted(per_user):
    table, counts = report.comparison(per_user, "lurm (random init)", "dss (random init)", n_boot=N_BOOT)
    rows = table_rows(table)
    at_chance = [name for name, cells in rows.items() if cells[-1] == "at chance"]
    assert at_chance == ["profiling gender accuracy", "profiling gender balanced accuracy", "profiling age accuracy",
                         "profiling age balanced accuracy", "category accuracy"]
    assert counts["at chance"] == 5 and sum(counts[v] for v in report.VERDICTS) == len(rows) - 5
    assert rows["profiling age accuracy"][:3] == [rows["profiling age accuracy"][0]] * 2 + ["+0.0000 [+0.0000, +0.0000]"]
    _, lurm = report.comparison(per_user, "lurm", "lurm (random init)", n_boot=N_BOOT)
    assert lurm["at chance"] == 0  # one side above chance: a real verdict


def test_missing_models_and_metrics_are_left_out_not_counted(per_user):
    table, counts = report.comparison(per_user, "lurm", "nobody", n_boot=N_BOOT)
    assert counts == {">": 0, "≈": 0, "<": 0, "at chance": 0} and len(table.strip().splitlines()) == 2
    table, counts = report.comparison(per_user, "lurm", "popularity", n_boot=N_BOOT)  # popularity: next item only
    assert list(table_rows(table)) == ["next item full NDCG@10", "next item full HR@10", "next item sampled NDCG@10"]
    assert counts[">"] == 3
    only = report.comparison(per_user, "lurm", "TF-IDF", [("profiling", "gender", "AUC"), ("profiling", "gender", "macro AUC")],
                             n_boot=N_BOOT)[0]
    assert list(table_rows(only)) == ["profiling gender AUC"]  # no per-user formula for macro AUC: left out
    assert report.comparison(pd.DataFrame(columns=per_user.columns), "lurm", "TF-IDF")[1][">"] == 0


# ------------------------------------------------------------------------------------- findings


def test_findings_sections_say_how_verdicts_are_computed_and_give_intervals(findings, per_user):
    assert findings.startswith("## Findings (computed from the tables above)\n")
    rule = report.method_line(N_BOOT)
    assert "paired bootstrap over the same test users (300 replicates" in rule and "95 % percentile interval" in rule
    for title in ("LURM paper claim: LURM ≈ raw BoI", "LURM paper claim: LURM > TF-IDF",
                  "Does pretraining help? (pretrained vs its own initial weights, headline metrics)",
                  "Methods vs the SASRec baseline (headline metrics)", "Next item vs popularity (Δ = model − popularity)"):
        assert rule in section(findings, title), title
    tfidf = section(findings, "LURM paper claim: LURM > TF-IDF")
    interval = r"[+-]\d\.\d{4} \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]"
    row = next(line for line in tfidf if line.startswith("| next item full NDCG@10 |"))
    number = r"\d\.\d{4}"
    pattern = rf"\| next item full NDCG@10 \| {number} \| {number} \| {interval} \| \d\.\d{{3}} \| lurm > TF-IDF \|"
    assert re.fullmatch(pattern, row)
    _, counts = report.comparison(per_user, "lurm", "TF-IDF", n_boot=N_BOOT)
    assert (f"Over {sum(counts[v] for v in report.VERDICTS)} metrics: lurm > TF-IDF on {counts['>']}, ≈ on {counts['≈']}, "
            f"< on {counts['<']}.") in tfidf
    assert "nan" not in findings.lower()


def test_pretraining_sasrec_and_popularity_tables(findings, per_user):
    title = "Does pretraining help? (pretrained vs its own initial weights, headline metrics)"
    pretraining = [line for line in section(findings, title) if line.startswith("|")]
    assert pretraining[0] == "| method | better | ≈ | worse | at chance |"
    assert [r.split("|")[1].strip() for r in pretraining[2:]] == ["lurm", "dss"]
    _, counts = report.comparison(per_user, "lurm", "lurm (random init)", n_boot=N_BOOT)
    assert pretraining[2] == f"| lurm | {counts['>']} | {counts['≈']} | {counts['<']} | {counts['at chance']} |"
    assert counts[">"] >= 11 and counts["<"] == 0
    sasrec = [line for line in section(findings, "Methods vs the SASRec baseline (headline metrics)") if line.startswith("|")]
    assert [r.split("|")[1].strip() for r in sasrec[2:]] == ["lurm", "dss"]
    deltas = [line for line in section(findings, "Next item vs the SASRec baseline (Δ = model − sasrec)") if line.startswith("|")]
    assert deltas[0] == "| model | full NDCG@10 | full HR@10 | sampled NDCG@10 |"
    dss = next(row for row in deltas if row.startswith("| dss |"))
    r = stats.paired(per_user, "next_item", "full", "HR@10", "dss", "sasrec", n_boot=N_BOOT)
    assert dss.split("|")[3].strip() == f"{r.delta:+.4f} [{r.low:+.4f}, {r.high:+.4f}] {r.verdict}"
    popularity = [line for line in section(findings, "Next item vs popularity (Δ = model − popularity)")
                  if line.startswith("|")]
    assert popularity[0] == "| model | full NDCG@10 | full HR@10 | sampled NDCG@10 |"
    lurm = next(r for r in popularity if r.startswith("| lurm |"))
    r = stats.paired(per_user, "next_item", "full", "NDCG@10", "lurm", "popularity", n_boot=N_BOOT)
    assert lurm.split("|")[2].strip() == f"{r.delta:+.4f} [{r.low:+.4f}, {r.high:+.4f}] >"
    assert not any(row.startswith(("| majority |", "| popularity |")) for row in popularity)


def test_anchor_rows_show_a_dash_for_a_missing_ndcg(summary, per_user):
    cut = summary[~((summary.model == "dss") & (summary.metric == "NDCG@10"))]
    text = report.findings(cut, None, "ml-1m")
    table = [line for line in section(text, "Next item against public full-ranking anchors (ML-1M, leave-one-out)")
             if line.startswith("|")]
    assert table[2] == "| SASRec (published) | 0.2853 | 0.1603 | 1.00 | 1.00 |"
    dss = next(line for line in table if line.startswith("| dss |"))
    hr = summary[(summary.model == "dss") & (summary.target == "full") & (summary.metric == "HR@10")]["mean"].iloc[0]
    assert dss == f"| dss | {hr:.4f} | – | {hr / 0.2853:.2f} | – |"
    assert "majority" not in "\n".join(table)  # no next-item result
    assert "LURM paper claim" not in text  # no per-user table: no verdicts


def test_findings_leaves_out_what_it_cannot_compute(summary, per_user):
    small = per_user[per_user.task == "next_item"]
    text = report.findings(summary, small[small.model.isin(["dss", "TF-IDF", "popularity"])], "synthetic", n_boot=100)
    assert "anchors" not in text and "LURM paper claim" not in text and "Does pretraining help" not in text
    assert "SASRec baseline" not in text and "Next item vs popularity" in text
    only_tfidf = report.findings(summary, small[small.model.isin(["lurm", "TF-IDF"])], None, n_boot=100)
    assert "LURM > TF-IDF" in only_tfidf and "raw BoI" not in only_tfidf and "vs popularity" not in only_tfidf
    assert "anchors" not in report.findings(summary[summary.task != "next_item"], None, "ml-1m")


# --------------------------------------------------------------------------------------- tables


def test_tables_show_balanced_accuracy_prevalences_and_the_ranking_columns(summary, per_user):
    out = report.tables(summary, per_user)
    profiling = out["User profiling (test users; MLP probe on frozen representations)"]
    assert profiling.splitlines()[0] == ("| model | gender AUC | gender accuracy | gender balanced accuracy | age accuracy | "
                                         "age balanced accuracy | income MAE | income R² | income Spearman |")
    majority = per_user[(per_user.model == "majority") & (per_user.task == "profiling")]
    gender = majority[majority.target == "gender"].label.value_counts(normalize=True).max()
    age = majority[majority.target == "age"].label.value_counts(normalize=True).max()
    assert profiling.splitlines()[-1] == (f"Majority-class share of the test users (the accuracy of a constant guess): "
                                          f"gender {gender:.3f}, age {age:.3f}.")
    category = out["Category preference (input before the cutoff, labels after; mean over categories)"]
    lurm = per_user[(per_user.model == "lurm") & (per_user.run == 0)]
    shares = [lurm[lurm.target == c].label.value_counts(normalize=True).max() for c in CATEGORY_PRIORS]
    assert category.splitlines()[-1].endswith(f"Action {shares[0]:.3f}, Comedy {shares[1]:.3f}, Drama {shares[2]:.3f}; "
                                              f"mean {np.mean(shares):.3f}.")
    full = out["Next item, full ranking (every user, the items with events, history masked; one value per next-item seed)"].splitlines()[0]
    assert full == "| model | " + " | ".join(f"full {m}" for m in stats.RANKING) + " | full coverage@10 |"
    assert report.RANKING[:9] == ["HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@10", "MRR"]
    assert report.RANKING[-2:] == ["coverage@10", "pop pct@10"]
    best_mae = summary[(summary.target == "income") & (summary.metric == "MAE")]["mean"].min()
    assert f"**{best_mae:.4f}" in profiling  # lower MAE is the best one
    without = report.tables(summary)["User profiling (test users; MLP probe on frozen representations)"]
    assert "Majority-class share" not in without


def test_markdown_with_findings_has_no_nan(summary, per_user, findings):
    text = report.markdown(summary, "# Results\n", ["plots/profiling.png"], findings, per_user=per_user)
    assert text.startswith("# Results\n") and "![profiling](plots/profiling.png)" in text and findings.strip() in text
    assert "nan" not in text.lower()


def test_one_results_file_holds_a_section_per_dataset(tmp_path):
    """--results-md RESULTS.md replaces this dataset's section and keeps the others (ordered by name); a file
    written before sections existed becomes the section its title names."""
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results — ml-1m\n\nold ml-1m rows\n")
    report.write_section(path, "synth-lifelong", "# Results — synth-lifelong\n\nlifelong rows")
    text = path.read_text()
    assert text.index("old ml-1m rows") < text.index("lifelong rows")
    report.write_section(path, "ml-1m", "# Results — ml-1m\n\nnew ml-1m rows\n")
    text = path.read_text()
    assert "old ml-1m rows" not in text and text.count("new ml-1m rows") == 1 and text.count("lifelong rows") == 1
    assert text.index("new ml-1m rows") < text.index("lifelong rows")
    report.write_section(path, "synth-lifelong", "# Results — synth-lifelong\n\nlifelong rows, again\n")
    text = path.read_text()
    assert text.count("<!-- raylurm:results ml-1m -->") == 1 and "lifelong rows, again" in text and "lifelong rows\n" not in text
    path.write_text("A note written by hand.\n\n" + text.replace("\n", "\r\n"))  # and saved with CRLF line ends
    report.write_section(path, "my data", "# Results — my data\n\nmine\n")
    text = path.read_text()
    assert text.startswith("A note written by hand.") and text.count("<!-- raylurm:results") == 3
    assert "<!-- raylurm:results my-data -->" in text and "lifelong rows, again" in text
