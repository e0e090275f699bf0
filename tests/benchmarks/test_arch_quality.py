"""`benchmarks/arch_quality.py`: the crossing point it reports, and a tiny end-to-end run so the script cannot rot."""

from __future__ import annotations

import json
import math

import pytest

from . import scripts


def test_tokens_to_reach_interpolates_between_evaluations():
    tokens_to_reach = scripts.load("arch_quality").tokens_to_reach
    curve = [(100, 5.0), (200, 4.0), (300, 3.0)]
    assert tokens_to_reach(curve, 3.5) == 250
    assert tokens_to_reach(curve, 5.5) == 100  # already there at the first evaluation
    assert tokens_to_reach(curve, 3.0) == 300
    assert math.isinf(tokens_to_reach(curve, 2.0))


@pytest.mark.slow
def test_a_tiny_run_prints_every_setting_and_the_headline(tmp_path):
    args = ["--budget-tokens", "4096", "--evals", "2", "--eval-batches", "1", "--batch-size", "2", "--max-files",
            "15", "--vocab-size", "300", "--adamw-lrs", "1e-3,4e-3", "--muon-lrs", "0.02", "--seed", "3", "--quiet",
            "--out", str(tmp_path / "out")]
    proc = scripts.run("arch_quality", args, tmp_path, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("tokens_to_baseline_loss: ")
    value = lines[-1].split(": ")[1]
    assert value == "inf" or float(value) > 0
    summary = json.loads((tmp_path / "out" / "arch_quality_seed3.json").read_text())
    assert set(summary["settings"]) == {"gpt2_adamw", "modern_adamw", "modern_muon"}
    assert summary["settings"]["modern_muon"]["optimizer"] == "muon"
    assert summary["settings"]["modern_adamw"]["lr"] in (1e-3, 4e-3)
    assert all(len(s["curve"]) == 2 for s in summary["settings"].values())
    sizes = [s["non_embedding_params"] for s in summary["settings"].values()]
    assert max(sizes) / min(sizes) < 1.01  # about the same non-embedding size
