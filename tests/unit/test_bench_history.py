"""``python -m raylurm.bench history`` on tiny inputs: what it measures and reports, not how fast."""

from __future__ import annotations

import numpy as np

from raylurm.bench import history
from raylurm.bench.__main__ import main


def test_lurm_reads_every_event_and_sequence_methods_the_latest(tmp_path) -> None:
    items, times = history.histories(3, 500, years=10, num_items=40)
    assert items.shape == times.shape == (3, 500) and (np.diff(times, axis=1) >= 0).all()
    span_years = (times[:, -1] - times[:, 0]) / history.SECONDS_PER_YEAR
    assert (span_years > 9).all()
    bags = history.lurm_bags(items, times, num_interests=7)
    assert int(bags["month_lengths"].sum()) == len(bags["month_periods"]) and bags["month_lengths"].min() > 100
    assert float(np.expm1(bags["year_values"].numpy()).sum()) == 3 * 500  # every event counted once per scale
    seq = history.sequence_batch(items, times, max_length=200)
    assert seq["items"].shape == (3, 200) and (seq["items"].numpy() == items[:, -200:] + 1).all()


def test_the_command_measures_each_method_in_its_own_process_and_plots(tmp_path, capsys) -> None:
    out = tmp_path / "BENCHMARKS.md"
    assert main(["history", "--events", "30,120", "--methods", "lurm,sasrec", "--users", "2", "--repeats", "1",
                 "--items", "50", "--interests", "10", "--out", str(out), "--allow-busy"]) == 0
    text = out.read_text()
    assert history.SECTION in text and text.count("| ok |") == 4, text
    assert (tmp_path / "benchmarks-history.png").stat().st_size > 1000
    assert "| sasrec | 120 | 120 |" in text and "| lurm | 120 | 120 |" in text
