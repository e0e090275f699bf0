"""`benchmarks/search_transfer.py`: a smoke run (a 2-shape search, then 4-step runs) so the script cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "search_transfer.py"


@pytest.mark.slow
def test_smoke_run_trains_the_winner_and_the_hand_picked_shape_on_the_same_tokens(tmp_path):
    env = {**os.environ, "CODENAS_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--threads", "1", "--quiet", "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((tmp_path / "out" / "search_transfer.json").read_text())
    runs = summary["runs"]
    assert {r["model"] for r in runs} == {"searched", "tiny_modern"}
    assert len({r["tokens"] for r in runs}) == 1  # the same tokens for both
    assert summary["winner_trial"]["params"] <= summary["max_params"]
    means = summary["mean_val_loss"]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"searched_minus_tiny_modern: {means['searched'] - means['tiny_modern']:.4f}"
