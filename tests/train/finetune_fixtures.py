"""Tiny bases and records for the fine-tuning tests: a 300-token tokenizer, a 2-layer GPT, a few problems."""

from __future__ import annotations

from pathlib import Path

import torch

from codenas.model.checkpoint import save_checkpoint
from codenas.model.config import ArchConfig
from codenas.model.model import GPT
from codenas.model.tokenizer import train_tokenizer
from codenas.records import Record, write_records

_CORPUS = '''def add(a, b):
    """Return the sum of a and b."""
    return a + b


def square(x):
    """Return x squared."""
    return x * x


def is_even(n):
    """Return True if n is even."""
    return n % 2 == 0
'''

_PROBLEMS = [
    ("add", "a, b", "Return the sum of a and b.", "return a + b", "assert add(1, 2) == 3"),
    ("square", "x", "Return x squared.", "return x * x", "assert square(3) == 9"),
    ("is_even", "n", "Return True if n is even.", "return n % 2 == 0", "assert is_even(4) and not is_even(3)"),
    ("negate", "x", "Return minus x.", "return -x", "assert negate(2) == -2"),
    ("double", "x", "Return twice x.", "return 2 * x", "assert double(4) == 8"),
    ("first", "xs", "Return the first item.", "return xs[0]", "assert first([5, 6]) == 5"),
]


def tiny_arch(dropout: float = 0.0, context_length: int = 96) -> ArchConfig:
    return ArchConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, context_length=context_length, vocab_size=320,
                      dropout=dropout, name="test-tiny")


def make_tokenizer(folder: Path) -> Path:
    corpus = folder / "corpus.py"
    corpus.write_text(_CORPUS * 3)
    return train_tokenizer([corpus], 300, folder / "tokenizer.json")


def make_base(folder: Path, *, dropout: float = 0.0, seed: int = 0) -> Path:
    """A randomly initialised tiny GPT saved as a codenas checkpoint in ``folder/base``."""
    tokenizer = make_tokenizer(folder)
    torch.manual_seed(seed)
    save_checkpoint(folder / "base", GPT(tiny_arch(dropout)), tokenizer_path=tokenizer, step=0)
    return folder / "base"


def make_records(folder: Path) -> tuple[Path, Path]:
    """``train.jsonl`` (all problems) and ``val.jsonl`` (the first two) in ``folder``."""
    records = [Record(id=f"t_{name}", source="test", prompt=f'def {name}({args}):\n    """{doc}"""\n',
                      solution=f"    {body}\n", tests=test, entry_point=name)
               for name, args, doc, body, test in _PROBLEMS]
    write_records(folder / "train.jsonl", records)
    write_records(folder / "val.jsonl", records[:2])
    return folder / "train.jsonl", folder / "val.jsonl"
