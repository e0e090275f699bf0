"""Fixtures for corpus tests: a few real stdlib modules in a folder, a small tokenizer, quick settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from codenas.corpus.sources import stdlib_dir
from codenas.model.tokenizer import train_tokenizer
from codenas.settings import CorpusSettings

# Distinct, mid-sized stdlib modules (real code, no two alike).
MODULES = ("json/decoder.py", "json/encoder.py", "json/scanner.py", "textwrap.py", "colorsys.py", "bisect.py",
           "fnmatch.py", "keyword.py", "shlex.py", "heapq.py", "glob.py", "getopt.py")


@pytest.fixture(scope="session")
def py_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pysrc")
    for name in MODULES:
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((stdlib_dir() / name).read_bytes())
    return root


@pytest.fixture(scope="session")
def tokenizer(py_dir, tmp_path_factory) -> Path:
    return train_tokenizer(sorted(py_dir.rglob("*.py")), 400, tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture
def quick() -> CorpusSettings:
    """In-process (one worker), two tasks, a large validation share so small corpora have a val split."""
    return CorpusSettings(tasks=2, workers=1, val_fraction=0.25, decontaminate=False)


@pytest.fixture(autouse=True)
def _no_mbpp(monkeypatch, tmp_path_factory):
    """Decontamination uses HumanEval alone unless a test names an MBPP file (no downloaded copy is found in
    the private cache), and caches stay in a temporary folder."""
    monkeypatch.delenv("CODENAS_MBPP", raising=False)
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path_factory.getbasetemp() / "codenas_home"))
