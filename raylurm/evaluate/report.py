"""Results: long-format rows -> mean ± std tables (Markdown, CSV) and PNG plots."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from raylurm.data.io import atomic_file

log = logging.getLogger(__name__)

GROUP_ORDER = {"pretrained": 0, "random init": 1, "baseline": 2}
RANKING = ["HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR"]
# public full-ranking leave-one-out anchors on ML-1M (HR@10, NDCG@10), quoted by the issue
ANCHORS = {"SASRec": (0.2853, 0.1603), "HSTU": (0.3097, 0.1720), "HSTU-large": (0.3294, 0.1893)}


def summarise(rows: Iterable[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return pd.DataFrame(columns=["task", "target", "model", "group", "metric", "mean", "std", "seeds", "users"])
    keys = ["task", "target", "model", "group", "metric"]
    out = frame.groupby(keys, sort=False).agg(mean=("value", "mean"), std=("value", lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0),
                                               seeds=("value", "size"), users=("users", "first")).reset_index()
    return out


def _cell(mean: float, std: float, best: bool) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.4f} ± {std:.4f}"
    return f"**{text}**" if best else text


def _table(summary: pd.DataFrame, task: str, columns: list[tuple[str, str]], models: list[str]) -> str:
    part = summary[summary.task == task]
    if part.empty:
        return "_not evaluated_\n"
    header = "| model | " + " | ".join(f"{t} {m}".strip() for t, m in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    best = {}
    for target, metric in columns:
        values = part[(part.target == target) & (part.metric == metric)]
        best[(target, metric)] = values["mean"].max() if len(values) else math.nan
    for model in models:
        cells = []
        for target, metric in columns:
            row = part[(part.model == model) & (part.target == target) & (part.metric == metric)]
            if row.empty:
                cells.append("–")
                continue
            mean, std = float(row["mean"].iloc[0]), float(row["std"].iloc[0])
            cells.append(_cell(mean, std, not math.isnan(mean) and mean == best[(target, metric)]))
        if any(c != "–" for c in cells):
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def model_order(summary: pd.DataFrame) -> list[str]:
    pairs = summary[["model", "group"]].drop_duplicates()
    return [m for m, _ in sorted(pairs.itertuples(index=False), key=lambda mg: (GROUP_ORDER.get(mg[1], 9),))]


def profiling_columns(summary: pd.DataFrame) -> list[tuple[str, str]]:
    part = summary[summary.task == "profiling"]
    columns = []
    for target in dict.fromkeys(part.target):
        metrics = list(dict.fromkeys(part[part.target == target].metric))
        columns += [(target, m) for m in metrics]
    return columns


def tables(summary: pd.DataFrame) -> dict[str, str]:
    models = model_order(summary)
    return {
        "User profiling (test users; MLP probe on frozen representations)": _table(summary, "profiling", profiling_columns(summary), models),
        "Category preference (input before the cutoff, labels after; mean over categories)":
            _table(summary, "category", [("mean", "AUC"), ("mean", "accuracy")], models),
        "Next item, full ranking (all items, history masked)": _table(summary, "next_item", [("full", m) for m in RANKING], models),
        "Next item, 100 popularity-sampled negatives": _table(summary, "next_item", [("sampled", m) for m in RANKING], models),
    }


def markdown(summary: pd.DataFrame, header: str, images: list[str], footer: str = "") -> str:
    parts = [header.rstrip() + "\n"]
    for title, table in tables(summary).items():
        parts.append(f"### {title}\n\n{table}")
    if images:
        parts.append("### Plots\n\n" + "\n".join(f"![{Path(i).stem}]({i})" for i in images) + "\n")
    if footer:
        parts.append(footer.rstrip() + "\n")
    return "\n".join(parts)


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


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
        "category": [("mean", "AUC"), ("mean", "accuracy")],
        "next_item_full": [("full", m) for m in RANKING],
        "next_item_sampled": [("sampled", m) for m in RANKING],
    }
    models = model_order(summary)
    paths = []
    for name, columns in panels.items():
        task = "next_item" if name.startswith("next_item") else name
        part = summary[summary.task == task]
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
        ax.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, [f"{t} {m}" if t not in ("full", "sampled", "mean") else m for t, m in columns],
                      rotation=30, ha="right")
        ax.set_title(name.replace("_", " "))
        ax.legend(fontsize=7, ncol=2)
        ax.grid(axis="y", alpha=0.3)
        path = out / f"{name}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def training_curves(runs: dict[str, Path], path: Path) -> Path | None:
    """Pretraining loss per step from each run's TensorBoard logs (one panel per method)."""
    import matplotlib  # lazy: plotting is only needed when a report is written
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # lazy: TensorBoard

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # "No path found after ..." at the end of every file
    curves = {}
    for name, run in runs.items():
        logdir = run / "tensorboard"
        if not logdir.exists():
            continue
        acc = EventAccumulator(str(logdir))
        acc.Reload()
        if "train/loss" in acc.Tags().get("scalars", []):
            events = acc.Scalars("train/loss")
            curves[name] = ([e.step for e in events], [e.value for e in events])
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3), squeeze=False)
    for ax, (name, (steps, values)) in zip(axes[0], curves.items()):
        order = np.argsort(steps)
        ax.plot(np.asarray(steps)[order], np.asarray(values)[order], marker="o")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("epoch mean loss")
        ax.grid(alpha=0.3)
    fig.suptitle("pretraining loss", y=1.02)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _mean_std(summary: pd.DataFrame, task: str, target: str, model: str, metric: str) -> tuple[float, float]:
    row = summary[(summary.task == task) & (summary.target == target) & (summary.model == model) & (summary.metric == metric)]
    return (float(row["mean"].iloc[0]), float(row["std"].iloc[0])) if len(row) else (math.nan, math.nan)


def headline_metrics(summary: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(task, target, metric) of every representation-quality number: profiling, category mean, next item."""
    out = [("profiling", t, m) for t, m in profiling_columns(summary)]
    out += [("category", "mean", "AUC"), ("category", "mean", "accuracy")]
    out += [("next_item", "full", "NDCG@10"), ("next_item", "sampled", "NDCG@10")]
    return [k for k in out if not summary[(summary.task == k[0]) & (summary.target == k[1]) & (summary.metric == k[2])].empty]


def comparison(summary: pd.DataFrame, left: str, right: str, tolerance: float = 0.01) -> tuple[str, dict]:
    """Δ = left − right per headline metric; "≈" when |Δ| <= max(tolerance, 2 × pooled std over seeds)."""
    lines = [f"| metric | {left} | {right} | Δ | verdict |", "|---|---|---|---|---|"]
    counts = {">": 0, "≈": 0, "<": 0}
    for task, target, metric in headline_metrics(summary):
        (a, sa), (b, sb) = _mean_std(summary, task, target, left, metric), _mean_std(summary, task, target, right, metric)
        if math.isnan(a) or math.isnan(b):
            continue
        delta, band = a - b, max(tolerance, 2 * math.sqrt((sa ** 2 + sb ** 2) / 2))
        verdict = "≈" if abs(delta) <= band else (">" if delta > 0 else "<")
        counts[verdict] += 1
        name = f"{task.replace('_', ' ')} {'' if target == 'mean' else target} {metric}".replace("  ", " ")
        lines.append(f"| {name} | {a:.4f} | {b:.4f} | {delta:+.4f} | {left} {verdict} {right} |")
    return "\n".join(lines) + "\n", counts


def findings(summary: pd.DataFrame, dataset: str | None) -> str:
    """Computed comparisons: public anchors (ML-1M), the LURM paper's claims, pretrained vs random init."""
    models = model_order(summary)
    parts = ["## Findings (computed from the tables above)\n"]
    if dataset == "ml-1m" and not summary[summary.task == "next_item"].empty:
        lines = ["| model | HR@10 | NDCG@10 | HR@10 / SASRec | NDCG@10 / SASRec |", "|---|---|---|---|---|"]
        for name, (hr, ndcg) in ANCHORS.items():
            lines.append(f"| {name} (published) | {hr:.4f} | {ndcg:.4f} | {hr / ANCHORS['SASRec'][0]:.2f} | {ndcg / ANCHORS['SASRec'][1]:.2f} |")
        for model in models:
            hr, _ = _mean_std(summary, "next_item", "full", model, "HR@10")
            ndcg, _ = _mean_std(summary, "next_item", "full", model, "NDCG@10")
            if not math.isnan(hr):
                lines.append(f"| {model} | {hr:.4f} | {ndcg:.4f} | {hr / ANCHORS['SASRec'][0]:.2f} | {ndcg / ANCHORS['SASRec'][1]:.2f} |")
        parts.append("### Next item against public full-ranking anchors (ML-1M, leave-one-out)\n\n" + "\n".join(lines) + "\n\n"
                     "The anchors train their sequence model end to end for next-item prediction on every user and rank "
                     "the full catalogue; here the representations are frozen, ranked by their own pretrained scorer "
                     "(ATRank, DSS) or by a softmax head trained on 60 % of the users (everything else), and scored on "
                     "the 20 % test users. Same protocol for every row below the anchors, so those rows compare with each "
                     "other exactly and with the anchors only roughly.\n")
    if "lurm" in models:
        for other, claim in (("raw BoI", "LURM ≈ raw BoI"), ("TF-IDF", "LURM > TF-IDF")):
            if other in models:
                table, counts = comparison(summary, "lurm", other)
                parts.append(f"### LURM paper claim: {claim}\n\n{table}\nOver {sum(counts.values())} metrics: "
                             f"lurm > {other} on {counts['>']}, ≈ on {counts['≈']}, < on {counts['<']} "
                             "(≈: |Δ| ≤ max(0.01, 2 × pooled std over seeds)).\n")
    rows = []
    for model in models:
        twin = f"{model} (random init)"
        if twin in models:
            _, counts = comparison(summary, model, twin)
            rows.append(f"| {model} | {counts['>']} | {counts['≈']} | {counts['<']} |")
    if rows:
        parts.append("### Does pretraining help? (pretrained vs its own initial weights, headline metrics)\n\n"
                     "| method | better | ≈ | worse |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)
