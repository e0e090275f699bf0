"""`benchmarks/search_transfer.py`: a smoke run (a 2-shape search, then 4-step runs) so the script cannot rot."""

from __future__ import annotations

import json

import pytest

from . import scripts


@pytest.mark.slow
def test_smoke_run_trains_the_winner_and_the_hand_picked_shape_on_the_same_tokens(tmp_path):
    proc = scripts.run("search_transfer", ["--smoke", "--threads", "1", "--quiet", "--out", str(tmp_path / "out")],
                       tmp_path, timeout=900)
    summary = json.loads((tmp_path / "out" / "search_transfer.json").read_text())
    runs = summary["runs"]
    assert {r["model"] for r in runs} == {"searched", "tiny_modern"}
    assert len({r["tokens"] for r in runs}) == 1  # the same tokens for both
    assert summary["winner_trial"]["params"] <= summary["max_params"]
    means = summary["mean_val_loss"]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"searched_minus_tiny_modern: {means['searched'] - means['tiny_modern']:.4f}"
