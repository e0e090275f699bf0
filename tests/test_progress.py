"""The progress helper: compact lines with done/total and ETA when the output is not a terminal."""

from __future__ import annotations

import pytest

import codenas.progress as progress_mod
from codenas.progress import LineProgress, eta, format_duration, progress


@pytest.fixture
def loud(monkeypatch):
    monkeypatch.setattr(progress_mod, "_quiet", False)


def test_format_duration_and_eta():
    assert format_duration(None) == "-" and format_duration(42.04) == "42.0 s"
    assert format_duration(185) == "3 min 5 s" and format_duration(8040) == "2 h 14 min"
    assert eta(0, 10, 5.0) is None and eta(2, None, 5.0) is None
    assert eta(5, 20, 10.0) == pytest.approx(30.0)


def test_not_a_terminal_prints_a_line_every_interval_and_at_the_end(loud, capsys, monkeypatch):
    clock = iter(range(0, 1000, 10))  # every call to the clock advances 10 s
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: next(clock))
    bar = progress(range(8), desc="sampling", unit="prompt", line_interval=30)
    assert isinstance(bar, LineProgress)
    assert list(bar) == list(range(8))  # the end of the iteration closes it, as tqdm does
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("sampling: 3/8 prompts (38%), ") and "ETA " in lines[0]
    assert lines[-1].startswith("sampling: 8/8 prompts (100%)") and "done in" in lines[-1]
    assert 2 <= len(lines) <= 4


def test_a_short_loop_prints_nothing_and_quiet_prints_nothing(loud, capsys, monkeypatch):
    assert list(progress(range(5), desc="quick")) == [0, 1, 2, 3, 4]
    assert progress(total=3, line_interval=None).disable  # the caller logs its own lines
    monkeypatch.setattr(progress_mod, "_quiet", True)
    progress_mod.say("hidden")
    assert capsys.readouterr().err == ""


def test_a_step_longer_than_the_interval_still_gets_lines(loud, capsys):
    import time

    bar = progress(total=2, desc="scoring", unit="sample", line_interval=0.1)
    time.sleep(0.35)  # one slow sample: no update, yet the user hears from us
    bar.update(2)
    bar.close()
    bar.close()  # closing twice prints nothing more
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("scoring: 0/2 samples (0%)") and lines[0].endswith("ETA -")
    assert lines[-1].startswith("scoring: 2/2 samples (100%)") and "done in" in lines[-1]
    assert sum("done in" in line for line in lines) == 1
