"""Shared test inputs: the real MBPP copy beside the checkout when present, else a 24-row sample of it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_MBPP = REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"
SAMPLE_MBPP = Path(__file__).parent / "fixtures" / "mbpp_sample.jsonl"  # rows copied verbatim from MBPP
REAL_MBPP = SHARED_MBPP.is_file()


@pytest.fixture(autouse=True)
def _no_ambient_mbpp(monkeypatch, tmp_path):
    """Tests never pick up a user's $CODENAS_MBPP or downloaded copy unless they set one."""
    monkeypatch.delenv("CODENAS_MBPP", raising=False)
    monkeypatch.delenv("CODENAS_HUMANEVAL_PLUS", raising=False)
    monkeypatch.delenv("CODENAS_MBPP_PLUS", raising=False)
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path / "codenas-home"))
