"""`benchmarks/sampling_batch_invariance.py` on a given (tiny, untrained) checkpoint, so that the script cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.train.finetune_fixtures import make_base

REPO = Path(__file__).resolve().parents[2]


def test_the_script_compares_every_sample_and_ends_with_the_fraction(tmp_path):
    base = make_base(tmp_path)
    cmd = [sys.executable, str(REPO / "benchmarks" / "sampling_batch_invariance.py"), "--checkpoint", str(base),
           "--prompts", "3", "--samples", "2", "--max-new-tokens", "6", "--batch", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "CODENAS_QUIET": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert any(line.startswith("reordered: ") and " of 6 samples differ" in line for line in lines)
    assert any(line.startswith("alone: ") and " of 6 samples differ" in line for line in lines)
    name, value = lines[-1].split(": ")
    assert name == "changed_samples_fraction" and 0.0 <= float(value) <= 1.0
