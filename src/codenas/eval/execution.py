"""Run untrusted programs and classify the outcome (placeholder: replaced by the sandboxed pool of issue 3).

Public API (stable; the data stage relies on it):
    ExecResult(status, detail)          status in {"passed", "failed", "timeout", "error"}
    run_programs(programs, timeout=..., memory_mb=..., workers=...) -> list[ExecResult] (input order)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass(frozen=True)
class ExecResult:
    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _run_one(source: str, timeout: float) -> ExecResult:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run([sys.executable, "-c", source], cwd=tmp, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return ExecResult("timeout", "timed out")
    if proc.returncode == 0:
        return ExecResult("passed")
    lines = proc.stderr.strip().splitlines()
    return ExecResult("failed", lines[-1] if lines else f"exit status {proc.returncode}")


def run_programs(programs: Sequence[str], *, timeout: float = 3.0, memory_mb: int = 1024,
                 workers: int | None = None) -> list[ExecResult]:
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda p: _run_one(p, timeout), programs))
