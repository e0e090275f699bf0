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


def test_hand_picked_runs_are_reused_only_from_a_run_with_the_same_settings(tmp_path):
    transfer, validity = scripts.load("search_transfer"), scripts.load("search_validity")
    args = {k: 1 for k in transfer.HAND_RUN_ARGS}
    run = {"model": "tiny_modern", "seed": 7, "final_val_loss": 3.6}
    earlier = tmp_path / "search_transfer.json"
    earlier.write_text(json.dumps({"args": args, "runs": [run, {**run, "model": "searched"}]}))
    assert transfer._hand_runs(earlier, args, [7], validity) == {7: run}
    with pytest.raises(SystemExit, match="max_steps: 1 there, 2 here"):
        transfer._hand_runs(earlier, {**args, "max_steps": 2}, [7], validity)
    with pytest.raises(SystemExit, match="lack a seed"):
        transfer._hand_runs(earlier, args, [7, 8], validity)
