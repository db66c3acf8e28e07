"""What a sweep found, as Markdown and PNG (``python -m raylurm.tune report <experiment>``).

* per method: the validation metric against every swept hyperparameter (each trial's best epoch)
  and the validation curves of every trial;
* the best trial of each method (chosen on validation users) with its **test** metrics, computed
  once by the evaluator on the chosen checkpoint and cached in ``<experiment>/test_metrics.json``;
* the papers' ablations, read from the trials as directions: multi-scale vs one scale and
  M anchors vs one anchor of the same total width (LURM), the λ curve (DSS), adaptive vs fixed λ
  (AdaptSSR), several semantic spaces vs one (ATRank). Each arm is the best trial of its group on
  validation; one seed per trial, so a gap under ``TOLERANCE`` is read as no difference.

Test metrics use the evaluator's probe seed 0 only: the sweep chose on seed 0's validation users,
and the other seeds re-draw the user cut, which would put those validation users into their test
parts. The report reads the experiment's files only (no Ray) except for the test metrics.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from raylurm.data.io import atomic_file
from raylurm.evaluate.harness import evaluate
from raylurm.evaluate.report import save_figure
from raylurm.evaluate.split import Split
from raylurm.evaluate.tasks import EvalConfig
from raylurm.methods import METHODS
from raylurm.runtime import init_ray
from raylurm.tune.results import Trial
from raylurm.tune.validation import METRIC

log = logging.getLogger("raylurm.tune.report")

TOLERANCE = 0.005  # validation AUC gap read as "no difference" (single seed per arm)
TEST_CACHE = "test_metrics.json"


# ------------------------------------------------------------------------------------ ablations
def _best(trials: list[Trial]) -> float:
    values = [t.best_value for t in trials if not math.isnan(t.best_value)]
    return max(values) if values else math.nan


def _groups(trials: list[Trial], key) -> dict[Any, list[Trial]]:
    out: dict[Any, list[Trial]] = {}
    for t in trials:
        k = key(t)
        if k is not None:
            out.setdefault(k, []).append(t)
    return out


def _verdict(delta: float) -> str:
    if math.isnan(delta):
        return "n/a"
    if delta > TOLERANCE:
        return "holds"
    if delta < -TOLERANCE:
        return "reversed"
    return "≈ (no difference)"


def ablations(trials: dict[str, list[Trial]]) -> list[dict[str, Any]]:
    """Each ablation: name, the paper's claim, arms [(label, best val, trials)], Δ, verdict (or why it is missing)."""
    out = []
    if trials.get("lurm"):
        out += _lurm_ablations(trials["lurm"])
    out += _other_ablations(trials)
    return out


def _lurm_ablations(lurm: list[Trial]) -> list[dict[str, Any]]:
    out = []
    scales = _groups(lurm, lambda t: t.config.get("scales", "both"))
    if len(scales) > 1 and "both" in scales:
        single = {k: v for k, v in scales.items() if k != "both"}
        arms = [(f"scales={k}", _best(v), len(v)) for k, v in sorted(scales.items())]
        delta = _best(scales["both"]) - max(_best(v) for v in single.values())
        out.append({"name": "LURM multi-scale vs one scale", "claim": "multi-scale (month + year, eq. 7) > month-only or year-only",
                    "arms": arms, "delta": delta, "verdict": _verdict(delta), "compared": "both − best single scale"})
    else:
        out.append({"name": "LURM multi-scale vs one scale", "missing": "the sweep did not vary `scales` with `both` among them"})
    width = _groups(lurm, lambda t: (t.config.get("num_anchors", 10) * t.config.get("hidden_dim", 128)))
    pairs = []
    for total, group in sorted(width.items()):
        multi = [t for t in group if t.config.get("num_anchors", 10) > 1]
        one = [t for t in group if t.config.get("num_anchors", 10) == 1]
        if multi and one:
            anchors = sorted({t.config.get("num_anchors", 10) for t in multi})
            pairs.append((total, anchors, multi, one))
    if pairs:
        for total, anchors, multi, one in pairs:
            delta = _best(multi) - _best(one)
            out.append({"name": f"LURM M anchors vs 1 anchor (total width {total})",
                        "claim": "M anchors > one anchor of the same total width",
                        "arms": [(f"M={'/'.join(map(str, anchors))} × H={total // anchors[0] if len(anchors) == 1 else '…'}", _best(multi), len(multi)),
                                 (f"M=1 × H={total}", _best(one), len(one))],
                        "delta": delta, "verdict": _verdict(delta), "compared": "M anchors − 1 anchor"})
    else:
        out.append({"name": "LURM M anchors vs 1 anchor of equal width",
                    "missing": "no pair of trials with M > 1 and M = 1 at the same M·H"})
    return out


def _other_ablations(trials: dict[str, list[Trial]]) -> list[dict[str, Any]]:
    out = []
    dss = _groups(trials.get("dss", []), lambda t: t.config.get("selection_fraction", 0.5))
    if "dss" not in trials:
        pass
    elif len(dss) > 2:
        lams = sorted(dss)
        curve = [(f"λ={lam:g}", _best(dss[lam]), len(dss[lam])) for lam in lams]
        peak = max(lams, key=lambda lam: _best(dss[lam]))
        inner = [lam for lam in lams if lam not in (lams[0], lams[-1])]
        delta = _best([t for lam in inner for t in dss[lam]]) - max(_best(dss[lams[0]]), _best(dss[lams[-1]]))
        out.append({"name": "DSS λ curve (sample selection)", "claim": "λ ∈ [0, 1] peaks in the middle",
                    "arms": curve, "delta": delta, "verdict": _verdict(delta), "compared": f"best inner λ − best end λ (peak at λ={peak:g})"})
    else:
        out.append({"name": "DSS λ curve", "missing": "fewer than three values of `selection_fraction`"})
    adapt = _groups(trials.get("adaptssr", []), lambda t: ("fixed λ=%g" % t.config.get("fixed_lambda", 0.5)
                                                          if t.config.get("lambda_mode") == "fixed" else t.config.get("lambda_mode", "per_sample")))
    fixed = {k: v for k, v in adapt.items() if k.startswith("fixed")}
    if "adaptssr" not in trials:
        pass
    elif "per_sample" in adapt and fixed:
        delta = _best(adapt["per_sample"]) - max(_best(v) for v in fixed.values())
        out.append({"name": "AdaptSSR adaptive vs fixed λ", "claim": "augmentation-adaptive λ > a constant λ",
                    "arms": [(k, _best(v), len(v)) for k, v in sorted(adapt.items())], "delta": delta, "verdict": _verdict(delta),
                    "compared": "per-sample λ_i − best fixed λ"})
    else:
        out.append({"name": "AdaptSSR adaptive vs fixed λ", "missing": "the sweep lacks per_sample or fixed `lambda_mode` trials"})
    spaces = _groups(trials.get("atrank", []), lambda t: t.config.get("num_spaces", 8))
    if 1 in spaces and len(spaces) > 1:
        delta = max(_best(v) for k, v in spaces.items() if k != 1) - _best(spaces[1])
        out.append({"name": "ATRank several semantic spaces vs one", "claim": "multi-space attention > one space",
                    "arms": [(f"spaces={k}", _best(v), len(v)) for k, v in sorted(spaces.items())], "delta": delta,
                    "verdict": _verdict(delta), "compared": "best K > 1 − K = 1"})
    return out


# ------------------------------------------------------------------------------------ test metrics
def test_metrics(experiment: Path, record: dict, best: dict[str, Trial]) -> dict[str, dict]:
    """Evaluator metrics (probe seed 0) of each method's chosen checkpoint, computed once and cached.

    Tune chose on the selection users (``raylurm.evaluate.cohorts``), which no probe seed tests on."""
    cache_path = experiment / TEST_CACHE
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    todo = {m: Path(t.best["checkpoint_path"]) for m, t in best.items()
            if t.best.get("checkpoint_path") and t.best["checkpoint_path"] not in cache}
    if todo:
        missing = [str(p) for p in todo.values() if not (p / "meta.json").exists()]
        if missing:
            raise FileNotFoundError(f"chosen checkpoint(s) not found (deleted, or the experiment was copied without them): {missing}")
        init_ray()
        split = Split.load(record["split_root"])
        log.info("test metrics (computed once) for %s", sorted(todo))
        rows, _per_user = evaluate(split, todo, EvalConfig(seeds=(0,)), baselines=False)
        for method, path in todo.items():
            cache[str(path)] = [{k: r[k] for k in ("task", "target", "metric", "value")} for r in rows if r["model"] == method]
        with atomic_file(cache_path) as tmp:
            tmp.write_text(json.dumps(cache, indent=2, default=float))
    return {m: {(r["task"], r["target"], r["metric"]): r["value"] for r in cache[t.best["checkpoint_path"]]}
            for m, t in best.items() if t.best.get("checkpoint_path") in cache}


def _headline(values: dict) -> dict[str, float]:
    """Profiling mean AUC (binary AUC / macro AUC per label), category mean AUC, next-item HR@10 and NDCG@10 (full)."""
    prof = [v for (task, _target, metric), v in values.items() if task == "profiling" and metric in ("AUC", "macro AUC")]
    return {"profiling AUC": float(np.mean(prof)) if prof else math.nan,
            "category AUC": values.get(("category", "mean", "AUC"), math.nan),
            "next item HR@10": values.get(("next_item", "full", "HR@10"), math.nan),
            "next item NDCG@10": values.get(("next_item", "full", "NDCG@10"), math.nan)}


# ------------------------------------------------------------------------------------ plots
def _varied(group: list[Trial]) -> list[str]:
    keys = sorted({k for t in group for k in t.config})
    return [k for k in keys if len({json.dumps(t.config.get(k), sort_keys=True) for t in group}) > 1]


def plots(trials: dict[str, list[Trial]], findings: list[dict], out: Path) -> list[Path]:
    import matplotlib  # lazy: plotting is only needed when a report is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for method in _ordered(trials):
        group = trials[method]
        keys = _varied(group)
        fig, axes = plt.subplots(1, len(keys) + 1, figsize=(3.6 * (len(keys) + 1), 3.2), squeeze=False)
        ax = axes[0][0]
        for t in group:
            epochs = [r.get("epoch", i + 1) for i, r in enumerate(t.epochs) if METRIC in r]
            ax.plot(epochs, [r[METRIC] for r in t.epochs if METRIC in r], marker="o", ms=3, alpha=0.7)
        ax.set(title=f"{method}: {METRIC} per epoch", xlabel="epoch", ylabel=METRIC)
        ax.grid(alpha=0.3)
        for ax, key in zip(axes[0][1:], keys):
            values = [t.config.get(key) for t in group]
            y = [t.best_value for t in group]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                ax.scatter(values, y, alpha=0.8)
                positive = [v for v in values if v > 0]
                if positive and len(positive) == len(values) and max(values) / min(values) >= 10:
                    ax.set_xscale("log")
            else:
                labels = sorted({str(v) for v in values})
                x = [labels.index(str(v)) + np.random.default_rng(0).uniform(-0.08, 0.08) for v in values]
                ax.scatter(x, y, alpha=0.8)
                ax.set_xticks(range(len(labels)), labels)
            ax.set(title=key, xlabel=key)
            ax.grid(alpha=0.3)
        path = out / f"{method}_hyperparameters.png"
        save_figure(fig, path)
        paths.append(path)
    shown = [f for f in findings if "arms" in f]
    if shown:
        fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.4), squeeze=False)
        fig.subplots_adjust(wspace=0.45)
        fig.suptitle(f"best {METRIC} per arm (y axis truncated; one seed per trial)", fontsize=9, y=1.02)
        for ax, f in zip(axes[0], shown):
            labels = [a[0] for a in f["arms"]]
            values = [a[1] for a in f["arms"]]
            bars = ax.bar(range(len(values)), values, color="tab:blue", alpha=0.8)
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
            low = min(v for v in values if not math.isnan(v)) if any(not math.isnan(v) for v in values) else 0
            ax.set_ylim(max(0.0, low - 0.02), None)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
            ax.set_title(f["name"], fontsize=8)
            ax.set_ylabel(f"best {METRIC}", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        path = out / "ablations.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def _ordered(trials: dict) -> list[str]:
    return [m for m in METHODS if m in trials] + sorted(set(trials) - set(METHODS))


# ------------------------------------------------------------------------------------ markdown
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown(experiment: Path, record: dict, trials: dict[str, list[Trial]], best: dict[str, Trial], tests: dict[str, dict],
             findings: list[dict], images: list[str], command: str) -> str:
    max_epochs = int(record.get("train", {}).get("epochs", 5))
    lines = [f"# Sweep report — {record['sweep']} on {Path(record['dataset']).name}", "",
             f"Produced by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from experiment "
             f"`{experiment.name}` (sweep file `{Path(record['file']).name}`, started {record.get('started')}).", "",
             f"Selection metric `{METRIC}` ({record.get('mode', 'max')}): mean validation AUC of a profiling probe over the "
             f"dataset's user label columns, on the evaluator's seed-0 validation users, every epoch (raylurm.tune.validation). "
             f"Split `{record['split']}`; training options {json.dumps(record.get('train', {}))}; search {json.dumps(record.get('search', {}))}.", ""]
    lines += ["## Trials", "", "| method | trials | complete | stopped early | failed | best " + METRIC + " |", "|---|---|---|---|---|---|"]
    for method in _ordered(trials):
        group = trials[method]
        status = [t.status(max_epochs) for t in group]
        lines.append(f"| {method} | {len(group)} | {status.count('complete')} | {sum(s.startswith('stopped') for s in status)} "
                     f"| {status.count('error')} | {_fmt(_best(group))} |")
    lines += ["", "## Best trial per method (chosen on validation) and its test metrics", "",
              "Test metrics: the evaluator (`raylurm.evaluate`) on the chosen checkpoint, probe seed 0 only (its test users were "
              "never used for choosing), computed once and cached. Full-catalogue next-item ranking; ATRank and DSS rank with "
              "their own scorer, LURM and AdaptSSR with the documented MLP head. Baselines on the same split: RESULTS.md.", ""]
    heads = ["profiling AUC", "category AUC", "next item HR@10", "next item NDCG@10"]
    lines += ["| method | trial | epoch | " + METRIC + " | " + " | ".join(f"test {h}" for h in heads) + " | config |",
              "|---" * (5 + len(heads)) + "|"]
    for method in _ordered(best):
        t = best[method]
        head = _headline(tests.get(method, {}))
        varied = _varied(trials[method]) or sorted(t.config)
        config = ", ".join(f"{k}={_fmt(t.config.get(k))}" for k in varied)
        lines.append(f"| {method} | `{t.trial_id}` | {t.best.get('epoch')} | {_fmt(t.best_value)} | "
                     + " | ".join(_fmt(head[h]) for h in heads) + f" | {config} |")
    lines += ["", "## The papers' ablations, as directions", "",
              f"Each arm is the best trial of its group on validation (one seed per trial): |Δ| ≤ {TOLERANCE} reads as no "
              "difference — a convention, not a measured noise floor (a second seed per arm would give one). These are "
              "directions under this sweep's budget, not the papers' tables."
              + (" ASHA stopped some trials early, so arms may compare different budgets; the FIFO study "
                 "(tune_configs/study.py) gives every arm the same." if record.get("search", {}).get("scheduler") == "asha" else ""),
              "", "| ablation | paper | arms (best " + METRIC + ", trials) | Δ | verdict |", "|---|---|---|---|---|"]
    for f in findings:
        if "missing" in f:
            lines.append(f"| {f['name']} | – | not measured: {f['missing']} | – | – |")
            continue
        arms = "; ".join(f"{label}: {_fmt(v)} ({n})" for label, v, n in f["arms"])
        lines.append(f"| {f['name']} | {f['claim']} | {arms} | {f['delta']:+.4f} ({f['compared']}) | {f['verdict']} |")
    lines += ["", "## Plots", ""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]
    lines += ["## All trials", "", "| method | trial | status | best epoch | best " + METRIC + " | config |", "|---|---|---|---|---|---|"]
    for method in _ordered(trials):
        keys = _varied(trials[method])
        for t in sorted(trials[method], key=lambda t: -t.best_value if not math.isnan(t.best_value) else math.inf):
            config = ", ".join(f"{k}={_fmt(t.config.get(k))}" for k in keys) or "–"
            lines.append(f"| {method} | `{t.trial_id}` | {t.status(max_epochs)} | {t.best.get('epoch') if t.best else '–'} | "
                         f"{_fmt(t.best_value)} | {config} |")
    return "\n".join(lines) + "\n"
