"""The benchmark registry: every entry is complete and consistent, and a new entry (a name and a loader) is
all that loading it by name and decontaminating against it take."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from codenas import benchmarks as registry
from codenas.benchmarks import BENCHMARKS, HOLDOUTS, PROMPT_STYLES, RUN_BENCHMARKS, Benchmark, description
from codenas.records import Record

TOY = Record(id="toy_1", source="toy", prompt="def toy_add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n",
             solution="    return a + b\n", tests="assert toy_add(1, 2) == 3\n", entry_point="toy_add")


def toy_problems(data_dir: Path) -> list[Record]:
    return [TOY]


def toy_decontamination(mbpp: Path | None) -> list[Record]:
    return [TOY]


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_entry_is_complete(name):
    bench = BENCHMARKS[name]
    assert bench.name == name and bench.description and bench.prompt_style in PROMPT_STYLES
    assert callable(bench.loader()) and (bench.decontaminate is None or callable(bench.decontamination_loader()))
    assert bench.held_out_with and set(bench.held_out_with) <= set(HOLDOUTS)
    assert bench.same_problems_as is None or bench.same_problems_as in (*BENCHMARKS, "mbpp")


def test_every_benchmark_is_kept_out_of_training_data():
    """Decontaminated against itself, or the same problems as one that is."""
    for bench in BENCHMARKS.values():
        covered = bench.decontaminate or BENCHMARKS.get(bench.same_problems_as or "", bench).decontaminate
        assert covered, f"{bench.name}: no decontamination loader and not another benchmark's problems"


def test_run_benchmarks_are_the_ones_the_data_stage_writes():
    assert RUN_BENCHMARKS == ("mini", "mbpp-test", "humaneval")
    assert [n for n, b in BENCHMARKS.items() if b.needs_mbpp] == ["mbpp-test"]
    assert BENCHMARKS["humaneval"].held_out_with == ("humaneval",) and BENCHMARKS["mini"].held_out_with == HOLDOUTS
    assert description("mini").startswith("20 HumanEval") and description("my/file.jsonl") == "a record file"


@pytest.fixture
def toy_registered(monkeypatch, tmp_path):
    """A sixth benchmark, declared as its one entry plus its loaders (this module's functions)."""
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path / "home"))  # no downloaded MBPP or EvalPlus files
    monkeypatch.delenv("CODENAS_MBPP", raising=False)
    monkeypatch.delenv("CODENAS_MBPP_PLUS", raising=False)
    toy = Benchmark("toy", "one toy problem", load=f"{__name__}:toy_problems", prompt_style="humaneval",
                    decontaminate=f"{__name__}:toy_decontamination")
    monkeypatch.setitem(BENCHMARKS, "toy", toy)
    return toy


def test_a_new_entry_loads_by_name_and_is_decontaminated_against(toy_registered, tmp_path):
    from codenas.data.benchmarks import decontamination_records, load_problems

    assert load_problems("toy", tmp_path) == [TOY]
    records, counts = decontamination_records([], None)
    assert counts["toy"] == 1 and TOY in records
    assert counts["mbpp-test"] == 0 and counts["humaneval"] == 164  # the registered ones still count


def test_a_built_entry_prefers_the_data_stages_file(toy_registered, monkeypatch, tmp_path):
    from codenas.data.benchmarks import load_problems
    from codenas.records import write_records

    built = dataclasses.replace(toy_registered, built=True)
    monkeypatch.setitem(BENCHMARKS, "toy", built)
    other = dataclasses.replace(TOY, id="toy_2")
    write_records(tmp_path / "benchmarks" / "toy.jsonl", [other])
    assert [r.id for r in load_problems("toy", tmp_path)] == ["toy_2"]
    assert [r.id for r in load_problems("toy", tmp_path / "elsewhere")] == ["toy_1"]


def test_registry_module_imports_no_loader():
    """The settings read the registry: importing it must not import the data package's loaders."""
    import subprocess
    import sys

    code = "import sys, codenas.benchmarks; print(any(m.startswith('codenas.data') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False" and registry.__name__ == "codenas.benchmarks"
