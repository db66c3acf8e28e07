"""Incremental LURM representations: fold a new period's events into a carried GRU state.

LURM's representation (LURM, §3.2) is, per scale, the last state of a GRU run over the
user's non-empty period bags in time order (:class:`raylurm.methods.lurm.TimeAggregation`), then
the eq. 7 switch across scales. The last bag of a scale can still grow — the current month (and
the current year) are not over — so the state carried for each scale is:

* ``closed``: the GRU state after every bag *before* the open period, (M, H);
* ``period``: the open (latest) period, months or years since 1970;
* ``open_ids`` / ``open_counts``: the open period's interests and their raw counts
  (eq. 4 before ``log(1 + ·)``; soft assignment adds fractional weights).

Representation = switch over scales of ``GRU(closed, [bag(open)])``, which is exactly the GRU
over all bags. New events at or after the open period merge into it (same period) or close it
(a later period): the GRU then steps over the closed bag(s) only, never the history. Events
before the open period cannot be folded in (the history would change) and are refused.
"""

from __future__ import annotations

import base64
import dataclasses

import numpy as np
import torch

from raylurm.methods.lurm import LURM


@dataclasses.dataclass(frozen=True)
class ScaleState:
    period: int | None  # the open period; None = the user has no bag at this scale yet
    closed: np.ndarray  # (M, H) float32: GRU state after the bags before ``period``
    open_ids: np.ndarray  # (n,) int64 interest ids of the open bag
    open_counts: np.ndarray  # (n,) float64 raw counts of those interests


class StateError(ValueError):
    """A state or update the model cannot use (wrong shape, unknown interests, events out of order)."""


def _bags(row: dict, scale: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """A BoI row's bags of one scale: (period, interest ids, raw counts) in time order."""
    return [(int(p), np.asarray(ids, np.int64), np.expm1(np.asarray(values, np.float64)))
            for p, ids, values in zip(row[f"{scale}_periods"], row[f"{scale}_ids"], row[f"{scale}_values"])]


def _run(model: LURM, state: np.ndarray, bags: list[tuple[int, np.ndarray, np.ndarray]]) -> np.ndarray:
    """GRU from ``state`` (M, H) over ``bags`` (eq. 5-6 per bag, then §3.2.2) -> (M, H)."""
    if not bags:
        return state
    ids = torch.from_numpy(np.concatenate([b[1] for b in bags]))
    values = torch.from_numpy(np.log1p(np.concatenate([b[2] for b in bags])).astype(np.float32))
    sizes = np.array([len(b[1]) for b in bags], np.int64)
    offsets = torch.from_numpy(np.cumsum(sizes) - sizes)
    device = next(model.parameters()).device
    with torch.no_grad():
        r = model.anchors(ids.to(device), values.to(device), offsets.to(device))  # (bags, M, H)
        lengths = torch.tensor([len(bags)], device=device)
        out = model.time(r, lengths, torch.from_numpy(state).to(device)[None])  # (1, M, H)
    return out[0].float().cpu().numpy()


def _zeros(model: LURM) -> np.ndarray:
    return np.zeros((model.config.num_anchors, model.config.hidden_dim), np.float32)


def from_row(model: LURM, row: dict) -> dict[str, ScaleState]:
    """The state of a user's full history (one BoI row as a dict): every bag but the last is closed."""
    out = {}
    for scale in model.scales:
        bags = _bags(row, scale)
        if not bags:
            out[scale] = ScaleState(None, _zeros(model), np.zeros(0, np.int64), np.zeros(0))
            continue
        period, ids, counts = bags[-1]
        out[scale] = ScaleState(period, _run(model, _zeros(model), bags[:-1]), ids, counts)
    return out


def _merge(a_ids: np.ndarray, a_counts: np.ndarray, b_ids: np.ndarray, b_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([a_ids, b_ids])
    keys, inverse = np.unique(ids, return_inverse=True)
    return keys, np.bincount(inverse, weights=np.concatenate([a_counts, b_counts]), minlength=len(keys))


def advance(model: LURM, state: dict[str, ScaleState], new_row: dict) -> dict[str, ScaleState]:
    """Fold the bags of ``new_row`` (the new events only, encoded like any request) into ``state``."""
    out = {}
    for scale in model.scales:
        old, new = state[scale], _bags(new_row, scale)
        if not new:
            out[scale] = old
            continue
        if old.period is not None and new[0][0] < old.period:
            raise StateError(f"new events fall in {scale} {_label(scale, new[0][0])}, before the state's open {scale} "
                             f"{_label(scale, old.period)}: "
                             "only events at or after the last period can be folded in; recompute from the full history")
        bags = [] if old.period is None else [(old.period, old.open_ids, old.open_counts)]
        if bags and new[0][0] == old.period:
            bags[0] = (old.period, *_merge(old.open_ids, old.open_counts, new[0][1], new[0][2]))
            new = new[1:]
        bags += new
        period, ids, counts = bags[-1]
        out[scale] = ScaleState(period, _run(model, old.closed, bags[:-1]), ids, counts)
    return out


def _label(scale: str, period: int) -> str:
    return f"{1970 + period // 12}-{period % 12 + 1:02d}" if scale == "month" else str(1970 + period)


def represent(model: LURM, state: dict[str, ScaleState]) -> np.ndarray:
    """The representation ``[r̂^1 … r̂^M]`` (M·H,) of a state: the open bags stepped in, then eq. 7."""
    device = next(model.parameters()).device
    per_scale = []
    for scale in model.scales:
        s = state[scale]
        bags = [] if s.period is None else [(s.period, s.open_ids, s.open_counts)]
        per_scale.append(torch.from_numpy(_run(model, s.closed, bags)).to(device))
    with torch.no_grad():
        r_hat = per_scale[0] if model.switch is None else model.switch(*per_scale)  # (M, H)
    return r_hat.flatten().float().cpu().numpy()


# ------------------------------------------------------------------------------------ wire format


def to_json(state: dict[str, ScaleState]) -> dict:
    """JSON-safe form: ``closed`` as base64 of little-endian float32 (exact, ~4x smaller than a float list)."""
    return {scale: {"period": s.period, "closed": base64.b64encode(s.closed.astype("<f4").tobytes()).decode(),
                    "open_ids": s.open_ids.tolist(), "open_counts": s.open_counts.tolist()}
            for scale, s in state.items()}


def from_json(model: LURM, data: dict) -> dict[str, ScaleState]:
    """Parse and check a state against ``model`` (scales, M·H, interest ids); StateError says what is wrong."""
    try:
        return _from_json(model, data)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        if isinstance(err, StateError):
            raise
        raise StateError(f"malformed state ({type(err).__name__}: {err}); send the state exactly as it was returned") from None


def _from_json(model: LURM, data: dict) -> dict[str, ScaleState]:
    m, h, n = model.config.num_anchors, model.config.hidden_dim, model.anchors.interest.num_embeddings
    if sorted(data) != sorted(model.scales):
        raise StateError(f"state has scales {sorted(data)}, the model uses {list(model.scales)}")
    out = {}
    for scale in model.scales:
        s = data[scale]
        try:
            closed = np.frombuffer(base64.b64decode(s["closed"], validate=True), "<f4")
        except (ValueError, TypeError) as err:
            raise StateError(f"state.{scale}.closed is not base64: {err}") from None
        if closed.size != m * h or not np.isfinite(closed).all():
            raise StateError(f"state.{scale}.closed holds {closed.size} values, the model needs {m}x{h} finite floats")
        ids, counts = np.asarray(s["open_ids"], np.int64), np.asarray(s["open_counts"], np.float64)
        if ids.shape != counts.shape or ((ids < 0) | (ids >= n)).any() or (counts < 0).any() or not np.isfinite(counts).all():
            raise StateError(f"state.{scale}: open_ids must be interest ids in [0, {n}) with as many non-negative counts")
        if s["period"] is None and ids.size:
            raise StateError(f"state.{scale}: an open bag needs its period")
        out[scale] = ScaleState(s["period"], closed.reshape(m, h).astype(np.float32), ids, counts)
    return out
