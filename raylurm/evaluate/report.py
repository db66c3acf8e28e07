"""Results: long-format rows -> mean ± std tables (Markdown, CSV), PNG plots, and paired verdicts.

Tables come from the per-seed rows (``summarise``); every "A vs B" verdict of the findings comes
from the per-user table (``results_by_user.parquet``) through ``raylurm.evaluate.stats.paired``:
Δ with its paired-bootstrap interval over the same test users.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from raylurm.data.io import atomic_file
from raylurm.evaluate import recovery, stats
from raylurm.train.curves import read_curves, summarise_run

log = logging.getLogger(__name__)

GROUP_ORDER = {"pretrained": 0, "random init": 1, "baseline": 2}
RANKING = [*stats.RANKING, "coverage@10", "pop pct@10"]  # the last two describe top-10 lists, not users
UNRANKED = frozenset({"pop pct@10"})  # no better direction: no best value in bold
# public full-ranking leave-one-out anchors on ML-1M (HR@10, NDCG@10), quoted by the issue
ANCHORS = {"SASRec": (0.2853, 0.1603), "HSTU": (0.3097, 0.1720), "HSTU-large": (0.3294, 0.1893)}
SUMMARY_COLUMNS = ["task", "target", "model", "group", "metric", "mean", "std", "seeds", "users"]
CATEGORY = [("mean", "AUC"), ("mean", "accuracy")]
RECOVERY = [(recovery.TARGET, "cosine"), (recovery.TARGET, "accuracy")]
VERDICTS = (">", "≈", "<")
AT_CHANCE = "at chance"


def summarise(rows: Iterable[dict]) -> pd.DataFrame:
    """Mean and sample std over the finite values of each (task, target, model, metric); ``seeds`` counts those."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    values = pd.to_numeric(frame["value"], errors="coerce")
    frame = frame.assign(value=values.where(np.isfinite(values)))
    out = frame.groupby(["task", "target", "model", "group", "metric"], sort=False).agg(
        mean=("value", "mean"), std=("value", "std"), seeds=("value", "count"), users=("users", "first")).reset_index()
    out["std"] = out["std"].where(out["seeds"] != 1, 0.0)  # one finite seed: no spread (all-NaN stays NaN)
    return out[SUMMARY_COLUMNS]


def _cell(mean: float, std: float, best: bool) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    text = f"{mean:.4f} ± {std:.4f}" if math.isfinite(std) else f"{mean:.4f}"
    return f"**{text}**" if best else text


def _present(part: pd.DataFrame, columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    have = set(zip(part["target"], part["metric"]))
    return [c for c in columns if c in have]


def _table(summary: pd.DataFrame, task: str, columns: list[tuple[str, str]], models: list[str]) -> str:
    part = summary[summary.task == task]
    columns = _present(part, columns)
    if part.empty or not columns:
        return "_not evaluated_\n"
    header = "| model | " + " | ".join(f"{t} {m}".strip() for t, m in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    best = {}
    for target, metric in columns:
        values = part[(part.target == target) & (part.metric == metric)]["mean"]
        best[(target, metric)] = (math.nan if metric in UNRANKED else values.min() if metric in stats.LOWER_IS_BETTER
                                  else values.max())
    for model in models:
        cells = []
        for target, metric in columns:
            row = part[(part.model == model) & (part.target == target) & (part.metric == metric)]
            if row.empty:
                cells.append("–")
                continue
            mean, std = float(row["mean"].iloc[0]), float(row["std"].iloc[0])
            if int(row["seeds"].iloc[0]) < 2:  # one value: no spread to show (the paired intervals carry the uncertainty)
                std = math.nan
            cells.append(_cell(mean, std, not math.isnan(mean) and mean == best[(target, metric)]))
        if any(c != "–" for c in cells):
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def model_order(frame: pd.DataFrame) -> list[str]:
    """Models of a summary or per-user table: pretrained, random init, baselines, each in order of appearance."""
    pairs = frame[["model", "group"]].drop_duplicates("model")
    return [m for m, _ in sorted(pairs.itertuples(index=False), key=lambda mg: GROUP_ORDER.get(mg[1], 9))]


def profiling_columns(summary: pd.DataFrame) -> list[tuple[str, str]]:
    part = summary[summary.task == "profiling"]
    columns = []
    for target in dict.fromkeys(part.target):
        metrics = list(dict.fromkeys(part[part.target == target].metric))
        columns += [(target, m) for m in metrics]
    return columns


def prevalence(per_user: pd.DataFrame | None, task: str) -> str:
    """One line: each label's majority-class share among the test users (the accuracy of a constant guess)."""
    if per_user is None or per_user.empty:
        return ""
    part = per_user[(per_user.task == task) & per_user.kind.isin(["binary", "multiclass", "multilabel"])]
    if part.empty:
        return ""
    shares = {}
    for target, rows in part.groupby("target", sort=False, observed=True):  # every model has the same labels: take one's
        rows = rows[(rows.model == rows.model.iloc[0]) & (rows.run == rows.run.iloc[0])]
        shares[str(target)] = float(rows.label.value_counts(normalize=True).max())
    text = ", ".join(f"{t} {v:.3f}" for t, v in shares.items())
    if task == "category":
        text += f"; mean {np.mean(list(shares.values())):.3f}"
    return f"Majority-class share of the test users (the accuracy of a constant guess): {text}.\n"


def tables(summary: pd.DataFrame, per_user: pd.DataFrame | None = None) -> dict[str, str]:
    """Title -> Markdown table; with ``per_user``, the label prevalences under the profiling and category tables."""
    models = model_order(summary)

    def with_prevalence(table: str, task: str) -> str:
        line = prevalence(per_user, task) if not table.startswith("_not evaluated_") else ""
        return table + "\n" + line if line else table

    parts = [  # (title, task, columns); a task with no row at all was not asked for (--tasks) or cannot exist here
        ("User profiling (test users; MLP probe on frozen representations)", "profiling", profiling_columns(summary)),
        ("Category preference (input before the cutoff, labels after; mean over categories)", "category", CATEGORY),
        ("Recovery of the first year's interests (synthetic truth; MLP probe, cosine to the true topic mixture, "
         "top topic accuracy)", "recovery", RECOVERY),
        ("Next item, full ranking (every user, the items with events, history masked; one value per next-item seed)",
         "next_item", [("full", m) for m in RANKING]),
        ("Next item, sampled negatives", "next_item", [("sampled", m) for m in RANKING]),
    ]
    present = set(summary.task)
    return {title: with_prevalence(_table(summary, task, columns, models), task)
            for title, task, columns in parts if task in present}


def markdown(summary: pd.DataFrame, header: str, images: list[str], footer: str = "",
             per_user: pd.DataFrame | None = None) -> str:
    parts = [header.rstrip() + "\n"]
    for title, table in tables(summary, per_user).items():
        parts.append(f"### {title}\n\n{table}")
    if images:
        parts.append("### Plots\n\n" + "\n".join(f"![{Path(i).stem}]({i})" for i in images) + "\n")
    if footer:
        parts.append(footer.rstrip() + "\n")
    return "\n".join(parts)


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


SECTION = re.compile(r"<!-- raylurm:results (?P<name>\S+) -->\r?\n(?P<body>.*?)<!-- /raylurm:results (?P=name) -->\r?\n?", re.S)
LEGACY_TITLE = re.compile(r"^# Results — (?P<name>\S+)", re.M)


def write_section(path: Path, name: str, text: str) -> None:
    """Write ``text`` as dataset ``name``'s section of the results file ``path``, keeping the other datasets' sections.

    Sections are delimited by ``<!-- raylurm:results NAME -->`` markers and ordered by name; a file written
    before sections existed is one section, named by its ``# Results — NAME`` title."""
    name = re.sub(r"\s+", "-", name.strip()) or "unnamed"  # one token: the markers' name
    sections: dict[str, str] = {}
    preamble = ""  # text outside every section (written by hand) is kept, above the sections
    if path.exists():
        old = path.read_text()
        found = list(SECTION.finditer(old))
        if found:
            sections = {m["name"]: m["body"] for m in found}
            preamble = SECTION.sub("", old).strip()
        elif old.strip():
            title = LEGACY_TITLE.search(old)
            sections = {title["name"] if title else "unnamed": old}
    sections[name] = text if text.endswith("\n") else text + "\n"
    write_text(path, (preamble + "\n\n" if preamble else "") + "\n".join(
        f"<!-- raylurm:results {n} -->\n{body}<!-- /raylurm:results {n} -->\n" for n, body in sorted(sections.items())))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_file(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def bar_plots(summary: pd.DataFrame, out: Path) -> list[Path]:
    """One grouped-bar PNG per task: metrics on the x axis, one bar per model (error bar = std over seeds)."""
    import matplotlib  # lazy: plotting is only needed when a report is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        "profiling": profiling_columns(summary),
        "category": CATEGORY,
        "recovery": RECOVERY,
        "next_item_full": [("full", m) for m in stats.RANKING],
        "next_item_sampled": [("sampled", m) for m in stats.RANKING],
    }
    models = model_order(summary)
    paths = []
    for name, columns in panels.items():
        task = "next_item" if name.startswith("next_item") else name
        part = summary[summary.task == task]
        columns = _present(part, columns)
        present = [m for m in models if (part.model == m).any()]
        if part.empty or not columns or not present:
            continue
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(columns) * max(1, len(present)) / 4), 4))
        width = 0.8 / len(present)
        for k, model in enumerate(present):
            means, stds = [], []
            for target, metric in columns:
                row = part[(part.model == model) & (part.target == target) & (part.metric == metric)]
                means.append(float(row["mean"].iloc[0]) if len(row) else np.nan)
                stds.append(float(row["std"].iloc[0]) if len(row) else 0.0)
            group = part[part.model == model]["group"].iloc[0]
            ax.bar(np.arange(len(columns)) + k * width, means, width, yerr=stds, label=model, capsize=2,
                   hatch="//" if group == "random init" else None, alpha=0.6 if group == "baseline" else 1.0)
        labels = [f"{t} {m}" if t not in ("full", "sampled", "mean") else m for t, m in columns]
        ax.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, labels, rotation=30, ha="right")
        ax.set_title(name.replace("_", " "))
        ax.legend(fontsize=7, ncol=2)
        ax.grid(axis="y", alpha=0.3)
        path = out / f"{name}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def training_curves(runs: dict[str, "Path | pd.DataFrame"], path: Path) -> Path | None:
    """Each run's pretraining loss and validation metric per epoch (a run directory, read by
    :func:`raylurm.train.curves.read_curves`, or its curves already read): one column of two panels per method,
    the best epoch marked."""
    import matplotlib  # lazy: plotting is only needed when a report is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # "No path found after ..." at the end of every file
    curves = {name: c for name, run in runs.items()
              if "loss" in (c := run if isinstance(run, pd.DataFrame) else read_curves(run))}
    if not curves:
        return None
    fig, axes = plt.subplots(2, len(curves), figsize=(3.2 * len(curves), 5.4), squeeze=False, sharex="col")
    for k, (name, frame) in enumerate(curves.items()):
        axes[0, k].plot(frame["epoch"], frame["loss"], marker=".")
        axes[0, k].set_title(name)
        axes[0, k].set_ylabel("epoch mean loss")
        metric = next((c for c in frame.columns if c.startswith("val_") and c != "val_hr10"), None)
        if metric is not None:
            axes[1, k].plot(frame["epoch"], frame[metric], marker=".", color="tab:green")
            best = summarise_run(frame, metric)
            if best["best_epoch"] is not None:
                axes[1, k].axvline(best["best_epoch"], color="grey", linestyle="--", linewidth=0.8)
            axes[1, k].set_ylabel(metric)
        axes[1, k].set_xlabel("epoch")
        for ax in axes[:, k]:
            ax.grid(alpha=0.3)
    fig.suptitle("pretraining: loss and validation per epoch (dashed: the best epoch, the run's result)", y=1.01)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _mean(summary: pd.DataFrame, task: str, target: str, model: str, metric: str) -> float:
    row = summary[(summary.task == task) & (summary.target == target) & (summary.model == model) & (summary.metric == metric)]
    return float(row["mean"].iloc[0]) if len(row) else math.nan


def _number(value: float, digits: int = 4) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def headline_metrics(per_user: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(task, target, metric) of every representation-quality number the per-user table can test.

    Profiling: every per-user metric of each label (AUC, accuracy, balanced accuracy; MAE, R², Spearman);
    category: mean AUC and accuracy; next item: full NDCG@10 and HR@10, sampled NDCG@10."""
    if per_user is None or per_user.empty:
        return []
    out = []
    profiling = per_user[per_user.task == "profiling"].drop_duplicates("target")
    for target, kind in zip(profiling.target, profiling.kind):
        out += [("profiling", str(target), m) for m in stats.METRICS_BY_KIND.get(str(kind), ())]
    if (per_user.task == "category").any():
        out += [("category", stats.MEAN, "AUC"), ("category", stats.MEAN, "accuracy")]
    if (per_user.task == "recovery").any():
        out += [("recovery", recovery.TARGET, m) for m in stats.METRICS_BY_KIND["recovery"]]
    protocols = set(per_user[per_user.task == "next_item"].target)
    out += [("next_item", p, m) for p, m in (("full", "NDCG@10"), ("full", "HR@10"), ("sampled", "NDCG@10")) if p in protocols]
    return out


def _name(task: str, target: str, metric: str) -> str:
    return f"{task.replace('_', ' ')} {'' if target == stats.MEAN else target} {metric}".replace("  ", " ")


def _interval(result: stats.Paired) -> str:
    return f"{result.delta:+.4f} [{result.low:+.4f}, {result.high:+.4f}]"


def _p(p: float) -> str:
    return "–" if not math.isfinite(p) else f"{p:.3f}"


def _at_chance(per_user: pd.DataFrame, key: tuple[str, str, str], model: str, cache: dict, n_boot: int) -> bool:
    """Whether ``model`` is not above the constant "majority" predictor on this accuracy metric (memoised in ``cache``)."""
    if (*key, model) not in cache:
        cache[(*key, model)] = bool(stats.at_chance(per_user, *key, model, n_boot=n_boot))
    return cache[(*key, model)]


def comparison(per_user: pd.DataFrame, left: str, right: str, metrics: list[tuple[str, str, str]] | None = None, *,
               n_boot: int = 2000, level: float = 0.95, chance: dict | None = None) -> tuple[str, dict[str, int]]:
    """Markdown table of ``left`` − ``right`` per (task, target, metric) with paired-bootstrap intervals, and verdict counts.

    Counts hold ">", "≈", "<" and, apart, "at chance": accuracies where neither side beats the "majority"
    predictor (shown, not counted as a verdict). ``chance`` memoises those checks across calls."""
    chance = {} if chance is None else chance
    lines = [f"| metric | {left} | {right} | Δ [{level * 100:g} % CI] | p | verdict |", "|---|---|---|---|---|---|"]
    counts = dict.fromkeys([*VERDICTS, AT_CHANCE], 0)
    if per_user is None or per_user.empty:
        return "\n".join(lines) + "\n", counts
    for key in headline_metrics(per_user) if metrics is None else metrics:
        result = stats.paired(per_user, *key, left, right, n_boot=n_boot, level=level)
        if not math.isfinite(result.delta):
            continue
        if key[2] in stats.ACCURACY and all(_at_chance(per_user, key, m, chance, n_boot) for m in (left, right)):
            verdict, counts[AT_CHANCE] = AT_CHANCE, counts[AT_CHANCE] + 1
        else:
            verdict = f"{left} {result.verdict} {right}"
            counts[result.verdict] += 1
        lines.append(f"| {_name(*key)} | {result.a:.4f} | {result.b:.4f} | {_interval(result)} | {_p(result.p_value)} "
                     f"| {verdict} |")
    return "\n".join(lines) + "\n", counts


def method_line(n_boot: int = 2000, level: float = 0.95) -> str:
    """How every verdict is computed, in one line."""
    return (f"Verdicts: paired bootstrap over the same test users ({n_boot:,} replicates resampling every seed's test "
            f"users, and a model's pretraining runs when it has more than one); Δ = left − right with its {level * 100:g} % "
            "percentile interval and two-sided bootstrap p; > / < when the interval excludes 0 on the better / worse side "
            "(MAE: lower is better), ≈ otherwise; accuracies where neither side beats the majority-class predictor: at chance, "
            "not counted.")


def _counts_table(per_user: pd.DataFrame, pairs: list[tuple[str, str]], chance: dict, n_boot: int) -> str:
    """One row of verdict counts over the headline metrics per (method, the model it is compared with)."""
    rows = ["| method | better | ≈ | worse | at chance |", "|---|---|---|---|---|"]
    for model, other in pairs:
        counts = comparison(per_user, model, other, n_boot=n_boot, chance=chance)[1]
        rows.append(f"| {model} | {counts['>']} | {counts['≈']} | {counts['<']} | {counts[AT_CHANCE]} |")
    return "\n".join(rows) + "\n"


def _anchors(summary: pd.DataFrame, models: list[str]) -> str:
    lines = ["| model | HR@10 | NDCG@10 | HR@10 / SASRec | NDCG@10 / SASRec |", "|---|---|---|---|---|"]
    base_hr, base_ndcg = ANCHORS["SASRec"]
    for name, (hr, ndcg) in ANCHORS.items():
        lines.append(f"| {name} (published) | {hr:.4f} | {ndcg:.4f} | {hr / base_hr:.2f} | {ndcg / base_ndcg:.2f} |")
    for model in models:
        hr, ndcg = (_mean(summary, "next_item", "full", model, m) for m in ("HR@10", "NDCG@10"))
        if math.isfinite(hr):
            lines.append(f"| {model} | {hr:.4f} | {_number(ndcg)} | {hr / base_hr:.2f} | {_number(ndcg / base_ndcg, 2)} |")
    return ("### Next item against public full-ranking anchors (ML-1M, leave-one-out)\n\n" + "\n".join(lines) + "\n\n"
            "The anchors train their sequence model end to end for next-item prediction on every user and rank "
            "the full catalogue; here the representations are frozen and ranked by their own pretrained scorer "
            "(ATRank, DSS, and the `sasrec` baseline, the one row trained and scored as the anchors are) or by a softmax "
            "head fitted on other users. Same protocol for every row below the anchors, so those rows compare with each "
            "other exactly and with the anchors only roughly.\n")


def _next_item_deltas(per_user: pd.DataFrame, models: list[str], other: str, n_boot: int) -> str:
    """Δ = model − ``other`` with its paired interval and verdict on each headline next-item metric."""
    keys = [k for k in headline_metrics(per_user) if k[0] == "next_item"]
    rows = ["| model | " + " | ".join(_name(*k).removeprefix("next item ") for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for model in models:
        results = [stats.paired(per_user, *k, model, other, n_boot=n_boot) for k in keys]
        if any(math.isfinite(r.delta) for r in results):
            cells = [f"{_interval(r)} {r.verdict}" if math.isfinite(r.delta) else "–" for r in results]
            rows.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def findings(summary: pd.DataFrame, per_user: pd.DataFrame | None, dataset: str | None, *, n_boot: int = 2000) -> str:
    """Computed comparisons: public anchors (ML-1M), the LURM paper's claims, pretrained vs random init, vs SASRec and
    popularity — every verdict a paired bootstrap over the per-user results."""
    parts = ["## Findings (computed from the tables above)\n"]
    if dataset == "ml-1m" and not summary[summary.task == "next_item"].empty:
        parts.append(_anchors(summary, model_order(summary)))
    if per_user is None or per_user.empty:
        return "\n".join(parts)
    per_user = stats.compact(per_user)
    models = model_order(per_user)
    rule, chance = method_line(n_boot), {}
    if "lurm" in models:
        for other, claim in (("raw BoI", "LURM ≈ raw BoI"), ("TF-IDF", "LURM > TF-IDF")):
            if other in models:
                table, counts = comparison(per_user, "lurm", other, n_boot=n_boot, chance=chance)
                parts.append(f"### LURM paper claim: {claim}\n\n{rule}\n\n{table}\nOver {sum(counts[v] for v in VERDICTS)} "
                             f"metrics: lurm > {other} on {counts['>']}, ≈ on {counts['≈']}, < on {counts['<']}"
                             f"{f'; {counts[AT_CHANCE]} more at chance' if counts[AT_CHANCE] else ''}.\n")
    twins = [(m, f"{m} (random init)") for m in models if f"{m} (random init)" in models]
    if twins:
        parts.append("### Does pretraining help? (pretrained vs its own initial weights, headline metrics)\n\n"
                     f"{rule}\n\n{_counts_table(per_user, twins, chance, n_boot)}")
    ablations = [(m, f"{m} (paper loss)") for m in models if f"{m} (paper loss)" in models]
    if ablations:
        parts.append("### The default loss vs the paper's own loss (ablation: same budget, same early stopping)\n\n"
                     f"{rule}\n\n{_counts_table(per_user, ablations, chance, n_boot)}")
    if "sasrec" in models:
        methods = [m for m in models if m != "sasrec" and per_user.loc[per_user.model == m, "group"].iloc[0] == "pretrained"]
        if methods:
            parts.append("### Methods vs the SASRec baseline (headline metrics)\n\n"
                         f"{rule}\n\n{_counts_table(per_user, [(m, 'sasrec') for m in methods], chance, n_boot)}")
            if (per_user.task == "next_item").any():
                parts.append("### Next item vs the SASRec baseline (Δ = model − sasrec)\n\n"
                             f"{_next_item_deltas(per_user, methods, 'sasrec', n_boot)}")
    if "popularity" in models and (per_user.task == "next_item").any():
        others = [m for m in models if m not in ("popularity", stats.MAJORITY)]
        parts.append("### Next item vs popularity (Δ = model − popularity)\n\n"
                     f"{rule}\n\n{_next_item_deltas(per_user, others, 'popularity', n_boot)}")
    return "\n".join(parts)
