"""Running a script of `benchmarks/` from a test: as a module (its functions) or as a command (a smoke run)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module (registered, so its dataclasses can look their module up)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run(name: str, args: list[str], tmp_path: Path, *, timeout: float,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<name>.py ARGS`` in ``tmp_path`` with its own codenas home; fail with its output's tail
    unless it exits 0."""
    env = {**os.environ, "CODENAS_HOME": str(tmp_path / "home"), **(env or {})}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc
