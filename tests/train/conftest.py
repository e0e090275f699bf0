"""Shared fixtures for training tests: a small corpus of stdlib files, a small tokenizer, a tiny arch."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import pytest

from codenas.corpus.sources import resolve_sources
from codenas.model.config import ArchConfig
from codenas.model.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def small_corpus() -> Path:
    """About 60 stdlib modules copied into a folder (a few hundred thousand characters): a corpus source that
    pretraining builds once per session into the private cache. The folder's path is the same in every run
    (a document's id, and so its train/validation split, includes it), so the split and the losses the tests
    bound do not change from run to run; it is written aside and renamed into place, so parallel workers share it."""
    stdlib = resolve_sources(["stdlib"], 60)[0]
    key = hashlib.sha256("\n".join(stdlib.files).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / "codenas-tests" / f"stdlib60-{key}"
    if not root.is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".stdlib60-", dir=root.parent))
        for rel in stdlib.files:
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((Path(stdlib.root) / rel).read_bytes())
        try:
            staging.rename(root)
        except OSError:  # another worker renamed its copy first: the same files
            shutil.rmtree(staging)
    return root


@pytest.fixture(scope="session")
def small_tokenizer(small_corpus, tmp_path_factory) -> Path:
    return train_tokenizer(sorted(small_corpus.rglob("*.py")), 512, tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Corpus caches go to a per-session temporary folder, never the user's cache."""
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path_factory.getbasetemp() / "codenas_home"))


@pytest.fixture
def micro_arch() -> ArchConfig:
    """A very small GPT with dropout on (so exact resume must restore the RNG)."""
    return ArchConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, context_length=32, vocab_size=512,
                      dropout=0.1, name="micro")
