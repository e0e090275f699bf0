"""Decontamination: drop training candidates that share a 13-gram of code tokens with a held-out benchmark.

As in the Codex and GPT-3 papers, text is compared as n-grams (n = 13) of tokens; here the tokens are Python's
(``codenas.data.metrics.code_tokens``: no layout tokens, no comments). Each record contributes the n-grams of
its reference program ``prompt + solution``. Boilerplate (import statements) is removed before the n-grams
are formed, so neither an n-gram made of import tokens (two records sharing ``from typing import List, Tuple,
...``) nor one straddling an import and the next line (``... Callable def``) is a match.

A training record whose normalised solution (its code tokens: no layout, no comments) equals a benchmark's is
dropped too, however short it is: two tasks with the same body are the same answer whatever their prompts say.
The pretraining corpus (``codenas.corpus``) drops documents with the same ``ngrams`` and ``benchmark_index``.
"""

from __future__ import annotations

import textwrap

from codenas.data.metrics import code_tokens
from codenas.records import Record

NGRAM = 13


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """The n-grams of the code tokens of ``text``, import statements left out."""
    tokens = [token for token, boilerplate in code_tokens(text) if not boilerplate]
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def benchmark_index(benchmarks: list[Record], n: int = NGRAM) -> dict[tuple[str, ...], str]:
    """Every benchmark n-gram -> the first (in the given order) benchmark id it comes from."""
    index: dict[tuple[str, ...], str] = {}
    for record in benchmarks:
        for gram in ngrams(record.prompt + record.solution, n):
            index.setdefault(gram, record.id)
    return index


def normalised_solution(solution: str) -> tuple[str, ...]:
    """The code tokens of a solution body (indentation, blank lines and comments do not count)."""
    return tuple(token for token, _ in code_tokens(textwrap.dedent(solution)))


def decontaminate(candidates: list[Record], benchmarks: list[Record],
                  n: int = NGRAM) -> tuple[list[Record], dict[str, str]]:
    """Split candidates into (clean ones, {dropped id: id of a benchmark it shares an n-gram with, or whose
    normalised solution it repeats})."""
    index = benchmark_index(benchmarks, n)
    solutions: dict[tuple[str, ...], list[str]] = {}
    for record in benchmarks:
        if body := normalised_solution(record.solution):
            solutions.setdefault(body, []).append(record.id)
    clean, dropped = [], {}
    for record in candidates:
        hits = [index[g] for g in ngrams(record.prompt + record.solution, n) if g in index]
        hits += solutions.get(normalised_solution(record.solution), [])
        if hits:
            dropped[record.id] = min(hits, key=_id_order)
        else:
            clean.append(record)
    return clean, dropped


def _id_order(record_id: str) -> tuple[str, int]:
    prefix, _, number = record_id.rpartition("_")
    return (prefix, int(number)) if number.isdigit() else (record_id, -1)
