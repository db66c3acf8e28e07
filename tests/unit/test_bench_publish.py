"""Benchmark sections record the CPU other processes used, and a busy machine's run is not published."""

from __future__ import annotations

import argparse

import pytest

from raylurm.bench import common


class _Watch:
    def __init__(self, cores: float):
        self.other_cores = cores

    def stop(self) -> float:
        return self.other_cores


def _args(tmp_path, cores: float, **flags) -> argparse.Namespace:
    return argparse.Namespace(out=tmp_path / "BENCHMARKS.md", no_report=False, allow_busy=False, watch=_Watch(cores), **flags)


def test_a_quiet_run_is_published_with_its_other_load(tmp_path, capsys) -> None:
    args = _args(tmp_path, 0.05)
    common.publish(args, "## Section", "## Section\n\nfigures\n")
    text = args.out.read_text()
    assert "figures" in text and "Other processes used 0.05 cores" in text and "busy machine" not in text


@pytest.mark.parametrize("allow", [False, True])
def test_a_busy_run_is_printed_and_flagged_but_published_only_when_allowed(tmp_path, capsys, allow: bool) -> None:
    args = _args(tmp_path, 0.9)
    args.allow_busy = allow
    common.publish(args, "## Section", "## Section\n\nfigures\n")
    assert "a busy machine" in capsys.readouterr().out
    assert args.out.exists() == allow
    if allow:
        assert "Other processes used 0.90 cores" in args.out.read_text()


def test_the_watch_measures_other_processes_not_its_own(tmp_path) -> None:
    watch = common.MachineWatch(interval=0.05).start()
    total = sum(i * i for i in range(2_000_000))  # this process's own work is not "other"
    assert total > 0 and 0.0 <= watch.stop() < 2.0 and watch.stop() == watch.other_cores


def test_the_serving_reading_is_computed_per_placement():
    from raylurm.bench.serve import _reading

    row = lambda placement, c, ratio: [placement, "lurm", "e", c, 400, 0, "1", "2", "3", "4", "5", f"**{ratio:.2f}×**"]  # noqa: E731
    rows = [row("deployments", 1, 5.3), row("deployments", 8, 4.1), row("ingress", 1, 1.9), row("ingress", 8, 2.5)]
    floors = [["deployments", "GET /healthz (proxy + ingress)", "4.7"], ["deployments", "POST /v1/embed lurm by user_id (x)", "11.4"],
              ["ingress", "GET /healthz (proxy + ingress)", "4.5"], ["ingress", "POST /v1/embed lurm by user_id (x)", "5.2"]]
    text = _reading(rows, floors)
    assert "*deployments*: p50 ≤ 2× the in-process forward in 0 of 2 rows (at concurrency 1: 5.30–5.30×" in text
    assert "*ingress*: p50 ≤ 2× the in-process forward in 1 of 2 rows (at concurrency 1: 1.90–1.90×; fixed cost" in text
    assert "5.2–5.2 ms" in text and "4.5–4.7 ms" in text
