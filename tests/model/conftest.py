"""Fixtures for the model tests: a small byte-level BPE tokenizer and a tiny arch that matches its vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codenas.model.config import ArchConfig
from codenas.model.model import GPT
from codenas.model.tokenizer import load_tokenizer, train_tokenizer

CORPUS = '''
def add(a, b):
    """Return the sum of a and b."""
    return a + b


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()


for i in range(10):
    print(i, add(i, i * 2), fib(i))
'''


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tokenizer")
    corpus = folder / "corpus.py"
    corpus.write_text(CORPUS * 3, encoding="utf-8")
    return train_tokenizer([corpus], vocab_size=400, out=folder / "tokenizer.json")


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path: Path):
    return load_tokenizer(tokenizer_path)


@pytest.fixture(scope="session")
def arch(tokenizer) -> ArchConfig:
    return ArchConfig(n_layer=2, n_head=4, d_model=32, d_ff=64, context_length=64,
                      vocab_size=tokenizer.get_vocab_size(), name="test")


@pytest.fixture
def model(arch: ArchConfig) -> GPT:
    torch.manual_seed(0)
    return GPT(arch).eval()
