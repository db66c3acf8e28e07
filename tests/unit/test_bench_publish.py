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
