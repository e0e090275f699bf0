"""Benchmark problem sets by name, for the eval CLI and later stages: humaneval, mini, mbpp-test, or a file."""

from __future__ import annotations

from pathlib import Path

from codenas.data.humaneval import load_humaneval, load_mini
from codenas.data.mbpp import UnconvertibleTask, load_mbpp, mbpp_record, resolve_mbpp_path
from codenas.data.proof import prove
from codenas.io import CodenasError
from codenas.progress import say
from codenas.records import Record, read_records

BENCHMARK_NAMES = ("humaneval", "mini", "mbpp-test")


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
    (``data_dir/benchmarks/mbpp-test.jsonl``, else built from the MBPP file found the usual way), or any
    record file given by path.
    """
    if name_or_path == "humaneval":
        return load_humaneval()
    if name_or_path == "mini":
        return load_mini()
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
