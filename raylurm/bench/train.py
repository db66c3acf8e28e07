"""``python -m raylurm.bench train`` — training throughput of the four methods.

Three measurements, all on this machine, in one run:

1. **users/s per method** at its paper batch size on synthetic BoI rows with D = ``--interests``
   (10^5 by default): forward + backward + Adam step in one process, median of ``--steps``.
2. **SMEN sparse vs dense**: LURM's multi-anchor module (eq. 5-6) as raylurm computes it (over
   the non-zeros only) against the dense implementation a user would otherwise write
   (materialise ``b ∈ R^{bags×D}``, ``α`` for all D interests, one einsum), forward + backward.
3. **where a step's time goes**: one step of each ``--profile`` method under ``torch.profiler``, the
   operators with the largest share of self CPU time (forward and backward together);
4. **1 vs 2 Ray Train workers**: ``raylurm.train.fit.fit`` on a small synthetic BoI directory,
   users/s reported by the training loop (the steady-state epoch, start-up excluded).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from raylurm.bench import common
from raylurm.train.batch import DataInfo, collate, synthetic_rows
from raylurm.train.optim import Adam

#: RecBole SASRec's training samples/s on 2 cores (length 50, d 64), measured by an earlier session (issue 16's text)
RECBOLE_SASREC_SAMPLES_PER_S = 1_050
BEFORE_LABEL = "lurm, before (dense W^e, calendar windows, packed GRU)"
HELP = "training throughput: users/s per method (D = 1e5), SMEN sparse vs dense, 1 vs 2 Ray Train workers"
SECTION = "## Training throughput (python -m raylurm.bench train)"


def _info(num_interests: int, num_items: int) -> DataInfo:
    return DataInfo(num_interests=num_interests, num_items=num_items, num_behaviors=3, scales=("month", "year"),
                    max_sequence_length=50, item_category=tuple(i % 20 for i in range(num_items)), num_categories=20)


def _time_steps(step, steps: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


#: LURM as it trained before issue 17 (dense W^e gradients and plain Adam, calendar-month windows, the GRU over one
#: PackedSequence — :func:`packed_time_aggregation`): the "before" row
LURM_BEFORE = {"sparse_gradients": False, "views": "calendar"}


def packed_time_aggregation(self, r: torch.Tensor, lengths: torch.Tensor, initial_state: torch.Tensor | None = None) -> torch.Tensor:
    """``TimeAggregation.forward`` as it was before issue 17: all B·M rows in one ``PackedSequence`` (the same
    states; on CPU its backward zero-fills the whole packed input once per time step)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    from raylurm.methods.lurm import _pad_by_user

    b, (_, m, h) = lengths.numel(), r.shape
    x = _pad_by_user(r, lengths).transpose(1, 2).reshape(b * m, -1, h)
    steps = lengths.repeat_interleave(m)
    state = r.new_zeros(b * m, h) if initial_state is None else initial_state.reshape(b * m, h)
    rows = torch.nonzero(steps > 0).squeeze(1)
    if rows.numel() == 0:
        return state.view(b, m, h)
    packed = pack_padded_sequence(x[rows], steps[rows].cpu(), batch_first=True, enforce_sorted=False)
    _, last = self.gru(packed, state[rows][None].contiguous())
    return state.index_copy(0, rows, last[0]).view(b, m, h)


def _setup(method: str, num_interests: int, num_items: int, overrides: dict | None = None):
    from raylurm.config import from_dict, to_dict
    from raylurm.methods import METHODS

    torch.manual_seed(0)
    cls = METHODS[method]
    model = cls(from_dict(cls.Config, {**to_dict(cls.Config()), **(overrides or {})}), _info(num_interests, num_items))
    if overrides is LURM_BEFORE:
        model.time.forward = packed_time_aggregation.__get__(model.time)
    optimizer = Adam(model, lr=1e-3)  # as the training loop: lazy Adam on sparse-gradient tables
    batch_size = cls.Config().batch_size
    table = synthetic_rows(batch_size, num_interests, num_items, max_periods=24, max_events=50, seed=1)
    batch = collate(table)
    views = None  # LURM's event-level views are drawn on the worker every step: part of the step's time
    if getattr(model.config, "views", None) == "events":
        from raylurm.train.views import synthetic_event_views

        views = synthetic_event_views(table, num_interests, model.scales, model.config.min_window_fraction)

    def step() -> dict:
        """One training step (with LURM: drawing its two views): forward, backward, Adam; the model's outputs."""
        if views is not None:
            batch.update(views(table))
        optimizer.zero_grad(set_to_none=True)
        out = model(batch)
        out["loss"].backward()
        optimizer.step()
        return out

    return model, step, batch_size


def method_throughput(method: str, num_interests: int, num_items: int, steps: int, overrides: dict | None = None,
                      label: str | None = None) -> dict:
    model, train_step, batch_size = _setup(method, num_interests, num_items, overrides)
    targets = []

    def step():
        out = train_step()
        # next-item targets trained: every position (methods that report "positions"), else one per user for
        # the one-cut next-item methods; none for representation-only objectives
        targets.append(float(out["positions"]) if "positions" in out else (batch_size if hasattr(model, "score_items") else 0.0))

    seconds = _time_steps(step, steps)
    per_step = statistics.median(targets)
    return {"method": label or method, "batch": batch_size, "step_s": seconds, "users_per_s": batch_size / seconds,
            "targets_per_s": per_step / seconds if per_step else None}


def profile_step(method: str, num_interests: int, num_items: int, top: int = 6, overrides: dict | None = None,
                 label: str | None = None) -> dict:
    """One training step (forward, backward, Adam) under ``torch.profiler``: the ``top`` operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    _, step, _ = _setup(method, num_interests, num_items, overrides)
    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return {"method": label or method, "self_cpu_ms": total / 1e3,  # summed over threads: CPU time, not wall time
            "top": [(e.key, e.self_cpu_time_total / total, e.count) for e in events[:top]]}


def dense_multi_anchor(module, ids: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Eq. 5-6 the straightforward way: dense b (bags, D), α for every interest, one einsum."""
    bags, d = len(offsets), module.interest.num_embeddings
    bag_of = torch.repeat_interleave(torch.arange(bags), torch.diff(offsets, append=torch.tensor([len(ids)])))
    b = torch.zeros(bags, d).index_put_((bag_of, ids), values, accumulate=True)  # (bags, D)
    w = module.interest.weight  # (D, H)
    alpha = torch.softmax(module.anchor(module.key(F.relu(w))), dim=1)  # (D, M)
    return F.relu(torch.einsum("bd,dm,dh->bmh", b, alpha, w))  # (bags, M, H)


def sparse_vs_dense(num_interests: int, steps: int, num_users: int = 64) -> dict:
    from raylurm.encoders import MultiAnchorBoI

    torch.manual_seed(0)
    module = MultiAnchorBoI(num_interests, 10, 128)
    batch = collate(synthetic_rows(num_users, num_interests, 10, max_periods=24, seed=2), scales=("month",))
    args = (batch["month_ids"], batch["month_values"], batch["month_offsets"])
    torch.testing.assert_close(module(*args), dense_multi_anchor(module, *args), atol=1e-4, rtol=1e-4)

    def run(fn):
        return lambda: (module.zero_grad(set_to_none=True), fn(*args).sum().backward())

    sparse = _time_steps(run(module), steps)
    dense = _time_steps(run(lambda *a: dense_multi_anchor(module, *a)), steps)
    return {"bags": len(args[2]), "nonzeros": len(args[0]), "sparse_s": sparse, "dense_s": dense, "speedup": dense / sparse}


def ray_workers(workers: list[int], users: int, epochs: int = 2) -> list[dict]:
    """Users/s of LURM on Ray Train with 1 and 2 workers (the last epoch's figure, start-up excluded)."""
    from raylurm.boi.build import BuildConfig, build
    from raylurm.boi.embeddings import ItemEmbeddingConfig
    from raylurm.boi.pipeline import BoiConfig
    from raylurm.boi.vocabulary import VocabularyConfig
    from raylurm.data.synth import SynthConfig, generate
    from raylurm.runtime import init_ray
    from raylurm.train.config import TrainConfig
    from raylurm.train.fit import fit

    init_ray(num_cpus=max(workers) + 1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp:
        root = Path(tmp)
        generate(SynthConfig(users=users, years=3, items=2000, seed=0), root / "data", progress=False)
        build(root / "data", root / "boi", BuildConfig(embedding=ItemEmbeddingConfig(method="cooccurrence", dim=32),
                                                      vocabulary=VocabularyConfig(num_interests=200),
                                                      boi=BoiConfig(on_unknown_items="skip")), progress=False)
        for n in workers:
            train = TrainConfig(method="lurm", epochs=epochs, num_workers=n, batch_size=64)
            result = fit(root / "boi", train, ["num_anchors=4", "hidden_dim=64"], name=f"w{n}", storage_path=str(root / "runs"))
            rows.append({"workers": n, "users_per_s": result.metrics["users_per_second"]})
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interests", type=float, default=1e5, help="D for the per-method and sparse/dense runs")
    parser.add_argument("--items", type=int, default=3_700, help="catalogue size for the sequence methods")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    parser.add_argument("--methods", default="lurm,atrank,dss,adaptssr,sasrec", help="comma-separated methods")
    parser.add_argument("--profile", default="lurm,sasrec,dss,atrank",
                        help="comma-separated methods whose step is profiled ('' to skip)")
    parser.add_argument("--workers", default="1,2", help="Ray Train worker counts to compare ('' to skip)")
    parser.add_argument("--ray-users", type=int, default=2_000, help="synthetic users for the Ray Train comparison")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report file (section replaced)")
    common.add_report_arguments(parser)


def main(args: argparse.Namespace) -> int:
    d = int(args.interests)
    methods = [m for m in args.methods.split(",") if m]
    per_method = [method_throughput(m, d, args.items, args.steps) for m in methods]
    profiles = [profile_step(m, d, args.items) for m in args.profile.split(",") if m]
    if "lurm" in methods:  # the same step as LURM trained before issue 17, in the same sitting: the ratio is the figure
        per_method.append(method_throughput("lurm", d, args.items, args.steps, LURM_BEFORE, BEFORE_LABEL))
        if "lurm" in args.profile.split(","):
            profiles.append(profile_step("lurm", d, args.items, overrides=LURM_BEFORE, label=BEFORE_LABEL))
    ratio = sparse_vs_dense(d, args.steps)
    workers = [int(w) for w in args.workers.split(",") if w]
    scaling = ray_workers(workers, args.ray_users) if workers else []
    body = _report(args, d, per_method, ratio, scaling, profiles)
    common.publish(args, SECTION, body)
    return 0


def _report(args, d: int, per_method: list[dict], ratio: dict, scaling: list[dict], profiles: list[dict] = ()) -> str:
    machine = common.machine_info()
    parts = [
        *common.header(args, machine, ['torch', 'ray']),
        "",
        f"**Per method**, D = {d:,} interests, {args.items:,} items, paper batch sizes, one process, CPU:",
        "",
        common.markdown_table(["method", "batch", "step (s)", "users/s", "next-item targets/s", "vs RecBole SASRec"],
                              [[r["method"], r["batch"], f"{r['step_s']:.3f}", f"{r['users_per_s']:.0f}",
                                "–" if r["targets_per_s"] is None else f"{r['targets_per_s']:,.0f}",
                                "–" if r["targets_per_s"] is None else f"{r['targets_per_s'] / RECBOLE_SASREC_SAMPLES_PER_S:.1f}×"]
                               for r in per_method]),
        "",
        f"*vs RecBole SASRec*: against {RECBOLE_SASREC_SAMPLES_PER_S:,} training samples (next-item targets) per second, "
        "RecBole 1.x's SASRec on 2 cores of this machine type with length 50 and d 64 (measured by an earlier session and "
        "quoted in the sequence-methods issue; RecBole is not a dependency, so it is not rerun here). The sequences here are "
        "up to 50 events with the methods' own widths, so the ratio is indicative, not an equal-size match.",
        "",
    ]
    if profiles:
        parts += ["**Where a step's time goes** (one profiled step, forward + backward + Adam; share of self CPU time, "
                  "the operators with the largest shares):", "",
                  common.markdown_table(["method", "self CPU time of the step (ms)", "largest shares (calls)"],
                                        [[p["method"], f"{p['self_cpu_ms']:.0f}",
                                          "; ".join(f"`{k}` {share:.0%} ({n})" for k, share, n in p["top"])]
                                         for p in profiles]), ""]
    now = next((r for r in per_method if r["method"] == "lurm"), None)
    before = next((r for r in per_method if r["method"] == BEFORE_LABEL), None)
    if now and before:
        parts += [f"**LURM, this step vs the step it trained with before** (row-sparse W^e gradients with lazy Adam, event-"
                  f"level views drawn on the worker, the GRU in padded length buckets; before: dense gradients over the "
                  f"whole D × H table and plain Adam, calendar windows (one encoding of the bags shared by both views), "
                  f"one PackedSequence through the GRU), same run: {now['users_per_s']:.0f} vs {before['users_per_s']:.0f} users/s, "
                  f"**{now['users_per_s'] / before['users_per_s']:.1f}×**.", ""]
    parts += [
        f"**SMEN multi-anchor module (eq. 5-6), sparse vs dense**, D = {d:,}, M = 10, H = 128, "
        f"{ratio['bags']} bags / {ratio['nonzeros']} non-zeros, forward + backward: sparse {ratio['sparse_s'] * 1e3:.1f} ms, "
        f"dense {ratio['dense_s'] * 1e3:.1f} ms — **{ratio['speedup']:.0f}× faster sparse** (same outputs, checked).",
    ]
    if scaling:
        base = scaling[0]["users_per_s"]
        parts += ["", "**Ray Train, LURM (M = 4, H = 64, batch 64 per worker), users/s of the last epoch:**", "",
                  common.markdown_table(["workers", "users/s", "vs 1 worker"],
                                        [[r["workers"], f"{r['users_per_s']:.0f}", f"{r['users_per_s'] / base:.2f}×"] for r in scaling])]
    parts += ["", "Ratios (sparse/dense, 2/1 workers) come from one run on one machine; absolute users/s depend on the "
              "load average recorded above (on a 2-core machine, two Ray Train workers share the cores with Ray's own "
              "processes, so 2 workers cannot approach 2×; the gathered in-batch negatives also double per step)."]
    return "\n".join(parts)
