"""The benchmark registry: every benchmark codenas knows, declared once.

Each ``Benchmark`` says what its problems are (``description``, for reports), how its prompts read
(``prompt_style``), which ``data.holdout`` values keep it out of training (``held_out_with``), whether the data
stage writes it (``built``: ``benchmarks/<name>.jsonl``, so ``codenas run`` can evaluate it), whether it needs the
MBPP file, which benchmark it is under new tests (``same_problems_as``), and the functions that load its problems
(``load``) and the problems training data must not contain (``decontaminate``). The functions are named as
``"module:function"`` and imported on use, so this module stays light enough for the settings (the choices of
``eval.benchmarks``) and the CLI to read.

Everything else reads this table: ``codenas.data.benchmarks.load_problems`` and ``decontamination_records``, the
run's benchmark choices and checks, the report's descriptions. Adding a benchmark is one entry here plus its
loader function (see docs/architecture.md, "Extending codenas").
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HOLDOUTS = ("mini", "humaneval")  # the values of data.holdout: the HumanEval problems `data build` keeps out
PROMPT_STYLES = ("humaneval", "mbpp")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark. ``load`` is ``(data_dir: Path) -> list[Record]``; ``decontaminate`` is ``(mbpp: Path |
    None) -> list[Record]`` (the problems to keep out of training data, read without proofs; None when
    ``same_problems_as`` names a benchmark that is decontaminated already)."""

    name: str
    description: str
    load: str
    prompt_style: str  # humaneval: HumanEval's signature and docstring; mbpp: MBPP's text made one (data.mbpp)
    held_out_with: tuple[str, ...] = HOLDOUTS  # data.holdout values under which no training record holds it
    built: bool = False  # the data stage writes benchmarks/<name>.jsonl (with differential tests); run evaluates it
    needs_mbpp: bool = False  # built from the MBPP file: a run without one skips it with a note
    same_problems_as: str | None = None
    decontaminate: str | None = None

    def loader(self) -> Callable[..., Any]:
        return pkgutil.resolve_name(self.load)

    def decontamination_loader(self) -> Callable[..., Any] | None:
        return pkgutil.resolve_name(self.decontaminate) if self.decontaminate else None


_LOADERS = "codenas.data.benchmarks"
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("mini", "20 HumanEval problems held out of training (the other HumanEval problems are training data, "
                      "so this is not a HumanEval score)",
              load=f"{_LOADERS}:mini_problems", prompt_style="humaneval", built=True, same_problems_as="humaneval"),
    Benchmark("mbpp-test", "MBPP's test split (task ids 11-510), held out of training",
              load=f"{_LOADERS}:mbpp_test_problems", prompt_style="mbpp", built=True, needs_mbpp=True,
              decontaminate=f"{_LOADERS}:mbpp_test_unproven"),
    Benchmark("humaneval", "all 164 HumanEval problems, held out of training (data.holdout = \"humaneval\")",
              load=f"{_LOADERS}:humaneval_problems", prompt_style="humaneval", held_out_with=("humaneval",),
              built=True, decontaminate=f"{_LOADERS}:humaneval_all"),
    Benchmark("humaneval+", "HumanEval+ (EvalPlus): HumanEval's problems with many more tests, judged with "
                            "EvalPlus's rules",
              load=f"{_LOADERS}:humaneval_plus_problems", prompt_style="humaneval", held_out_with=("humaneval",),
              same_problems_as="humaneval"),
    Benchmark("mbpp+", "MBPP+ (EvalPlus): MBPP problems with many more tests, held out of training",
              load=f"{_LOADERS}:mbpp_plus_problems", prompt_style="mbpp", same_problems_as="mbpp",
              decontaminate=f"{_LOADERS}:mbpp_plus_if_available"),
)}
# what `codenas run` may evaluate (eval.benchmarks): the benchmarks the data stage writes
RUN_BENCHMARKS = tuple(name for name, b in BENCHMARKS.items() if b.built)
# what the pretraining corpus and mined records are decontaminated against, in this order
DECONTAMINATION_BENCHMARKS = tuple(name for name, b in BENCHMARKS.items() if b.decontaminate)


def description(name: str) -> str:
    """What a benchmark's score means, for reports ("a record file" for a path)."""
    bench = BENCHMARKS.get(name)
    return bench.description if bench else "a record file"
