"""Differential tests: inputs from the asserts, type-aware mutation, reference outputs from the sandbox,
stability, and the judge catching a completion that only passes weak asserts (MBPP's triangle problems)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codenas.data.difftests import (
    DIFF_TESTS,
    add_diff_tests,
    call_inputs,
    diff_test_code,
    literal,
    mutated_inputs,
    same,
)
from codenas.data.humaneval import MINI_IDS, load_mini
from codenas.data.mbpp import UnconvertibleTask, load_mbpp, mbpp_record
from codenas.eval.execution import run_programs
from codenas.eval.scoring import score_samples
from codenas.records import Record, program

from .conftest import SAMPLE_MBPP

TRIANGLES = Path(__file__).parent / "fixtures" / "mbpp_triangles.jsonl"  # MBPP 51 and 327, copied verbatim


def _mbpp(path: Path) -> list[Record]:
    records = []
    for row in load_mbpp(path):
        try:
            records.append(mbpp_record(row))
        except UnconvertibleTask:
            continue
    return records


@pytest.fixture(scope="module")
def fixture_set():
    """The mini problems and every MBPP fixture problem, with their differential tests (built once)."""
    records = load_mini() + _mbpp(SAMPLE_MBPP) + _mbpp(TRIANGLES)
    return records, add_diff_tests(records, seed=1234)


def _by_entry(result, entry_point: str) -> Record:
    return next(r for r in result.records if r.entry_point == entry_point)


def test_inputs_come_from_literal_calls_inside_asserts():
    tests = ("x = [1]\nassert f(1, [2]) == 3\nassert f(x, 1) == 2\nassert g(1) == f(2, 3)\nassert f(*x) == 1\n"
             "assert f(1, k=2) == 3\nf(7, 7)\nassert f(1, [2]) != 4\n"
             "def check(candidate):\n    assert candidate('a', {'b': (1.5, None)})\n")
    record = Record(id="t_1", source="t", prompt="def f(a, b):\n", solution="    return 1\n", tests=tests,
                    entry_point="f")
    assert call_inputs(record) == [(1, [2]), (2, 3), ("a", {"b": (1.5, None)})]


def test_mutation_keeps_types_and_ranges_and_is_seeded(fixture_set):
    records, _ = fixture_set
    isosceles = next(r for r in records if r.entry_point == "check_isosceles")
    originals, new = mutated_inputs(isosceles, 40, seed=1)
    assert originals == [(6, 8, 12), (6, 6, 12), (6, 16, 20)]
    assert 30 <= len(new) <= 40 and len({literal(a) for a in new}) == len(new)
    assert not set(new) & set(originals)
    # ints only, never negative or zero (none in the asserts), at most twice the largest plus one
    assert all(type(a) is int and 0 < a <= 41 for args in new for a in args)
    assert any(len(set(args)) < 3 for args in new)  # equal sides come from swapping in the asserts' own values
    assert mutated_inputs(isosceles, 40, seed=1)[1] == new
    assert mutated_inputs(isosceles, 40, seed=2)[1] != new

    strings = next(r for r in records if r.entry_point == "filter_by_substring")
    _, new = mutated_inputs(strings, 40, seed=1)
    assert new and all(isinstance(a, list) and all(isinstance(s, str) for s in a) and isinstance(b, str)
                       for a, b in new)


def _record(tests: str, entry_point: str = "f") -> Record:
    return Record(id="t_1", source="t", prompt=f"def {entry_point}(*args):\n", solution="    return 0\n",
                  tests=tests, entry_point=entry_point)


def test_mutants_keep_relations_between_arguments_and_the_shape_of_rows():
    originals, new = mutated_inputs(_record("assert f([1, 2, 3], 3) == 6\nassert f([4, 5], 2) == 9\n"), 30, seed=1)
    assert len(new) >= 10 and all(n == len(arr) for arr, n in new)  # n stays the length of arr
    assert any(len(arr) != 3 and len(arr) != 2 for arr, _ in new)  # the two still change together
    matrices = "assert f([[1, 2], [3, 4]]) == 10\nassert f([[1, 2, 3], [4, 5, 6]]) == 21\n"
    _, new = mutated_inputs(_record(matrices), 30, seed=1)
    assert new and all(len({len(row) for row in m}) == 1 for (m,) in new)  # rows of one length, as the asserts'
    pairs = "assert f(((1, 3), (4, 5)), ((6, 7), (3, 9))) == 1\nassert f(((2, 2), (8, 1)), ((1, 1), (0, 7))) == 2\n"
    _, new = mutated_inputs(_record(pairs), 30, seed=1)
    assert new and all(len(t) == 2 and all(len(p) == 2 for p in t) for args in new for t in args)


def test_comparison_tolerates_float_noise_only():
    assert same(0.1 + 0.2, 0.3) and same([1.0, (2.0,)], [1.0000001, (2.0,)]) and same({"a": 1e-12}, {"a": 0.0})
    assert not same([1.0], [1.1]) and not same((1, 2), [1, 2]) and not same({"a": 1}, {"a": 1, "b": 2})
    assert not same(None, 0.0) and same(3, 3.0) and not same("1", 1)
    assert literal({"b", "a"}) == "{'a', 'b'}" and literal(set()) == "set()" and literal((1,)) == "(1,)"
    assert literal({"b": 1, "a": {2}}, sort_dicts=True) == "{'a': {2}, 'b': 1}"


def test_every_reference_passes_its_own_differential_tests(fixture_set):
    records, result = fixture_set
    assert [r.id for r in result.records] == [r.id for r in records]
    with_tests = [r for r in result.records if DIFF_TESTS in r.meta]
    assert set(MINI_IDS) <= {r.id for r in with_tests}
    assert len(with_tests) == len(result.inputs) >= 35
    assert all(1 <= result.inputs[r.id] <= 30 for r in with_tests)
    # a problem whose asserts hold no literal call gets none (MBPP 367 builds its trees in setup code)
    assert "mbpp_367" in result.no_literal_inputs and DIFF_TESTS not in _by_entry(result, "is_tree_balanced").meta
    outcomes = run_programs([program(r.prompt, r.solution, r.meta[DIFF_TESTS]) for r in with_tests],
                            timeout=3.0, memory_mb=1024)
    assert [(r.id, o.detail) for r, o in zip(with_tests, outcomes, strict=True) if not o.passed] == []


def test_a_completion_that_only_passes_weak_asserts_is_caught(fixture_set, tmp_path):
    _, result = fixture_set
    isosceles, equilateral = _by_entry(result, "check_isosceles"), _by_entry(result, "check_equilateral")
    tree = _by_entry(result, "is_tree_balanced")
    samples = [
        (isosceles, "    if x == y:\n        return True\n    return False\n"),  # passes MBPP's three asserts
        (isosceles, "    return len({x, y, z}) < 3\n"),  # correct, unlike the reference's text
        (isosceles, isosceles.solution),
        (equilateral, "    return x % z == 0\n"),  # passes MBPP's three asserts
        (equilateral, "    return x == y and y == z\n"),
        (equilateral, "    return False\n"),  # fails the asserts themselves
        (tree, tree.solution),  # no differential tests: its base verdict counts
        (tree, tree.solution),
        (tree, "    return True\n"),
    ]
    problems = [isosceles, equilateral, tree]
    summary = score_samples([{"task_id": rec.id, "completion": c} for rec, c in samples], problems, tmp_path,
                            ks=(1, 3))
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, True, True, True, True, False, True, True, False]
    assert [r["diff_passed"] for r in rows] == [False, True, True, False, True, False, None, None, None]
    assert rows[0]["diff_detail"].startswith("failed: AssertionError: check_isosceles(")
    assert summary["pass_at_k"]["pass@1"] == pytest.approx((3 / 3 + 2 / 3 + 2 / 3) / 3)
    assert summary["diff_pass_at_k"]["pass@1"] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3) / 3)
    assert summary["diff_problems"] == 2 and summary["diff_missing"] == [tree.id]
    assert summary["per_problem"][isosceles.id]["diff_correct"] == 2
    assert "diff_correct" not in summary["per_problem"][tree.id]


def test_other_correct_solutions_pass_the_differential_tests(fixture_set, tmp_path):
    _, result = fixture_set
    by_id = {r.id: r for r in result.records}
    correct = {
        "he_7": "    return [s for s in strings if s.find(substring) >= 0]\n",
        "he_9": "    import itertools\n    return list(itertools.accumulate(numbers, max))\n",
        "he_27": "    return ''.join(c.lower() if c.isupper() else c.upper() for c in string)\n",
        "he_51": "    return ''.join(c for c in text if c.lower() not in 'aeiou')\n",
        "he_58": "    return sorted(set(l1) & set(l2))\n",
        "he_15": "    return ' '.join(map(str, range(n + 1)))\n",
        "mbpp_17": "    return a + a + a + a\n",
    }
    samples = [{"task_id": pid, "completion": body} for pid, body in correct.items()]
    score_samples(samples, [by_id[p] for p in correct], tmp_path, ks=(1,))
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["passed"], r["diff_passed"]) for r in rows] == [(p, True, True) for p in correct]


def test_unstable_reference_is_skipped_and_counted():
    noisy = Record(id="t_noisy", source="t", prompt="import random\n\ndef jitter(x):\n",
                   solution="    return x + random.random()\n", tests="assert jitter(2) >= 2\n", entry_point="jitter")
    steady = Record(id="t_steady", source="t", prompt="def double(x):\n", solution="    return 2 * x\n",
                    tests="assert double(3) == 6\n", entry_point="double")
    bare = Record(id="t_bare", source="t", prompt="def one():\n", solution="    return 1\n",
                  tests="assert one() == 1\n", entry_point="one")  # no argument to mutate
    result = add_diff_tests([noisy, steady, bare], max_inputs=5, seed=3)
    assert result.unstable == ["t_noisy"] and DIFF_TESTS not in result.records[0].meta
    assert result.inputs == {"t_steady": 5} and "assert _codenas_same(double(" in result.records[1].meta[DIFF_TESTS]
    assert result.no_literal_inputs == ["t_bare"]
    counts = result.counts(["t_noisy", "t_steady", "t_bare"])
    assert counts == {"problems": 3, "with_diff_tests": 1, "inputs": 5, "mean_inputs": 5.0,
                      "no_literal_inputs": ["t_bare"], "none_kept": [], "unstable": ["t_noisy"]}


def test_dict_subclass_outputs_become_dicts():
    record = Record(id="t_count", source="t", prompt="from collections import Counter\n\ndef count(xs):\n",
                    solution="    return Counter(xs)\n", tests="assert count([1, 1, 2]) == {1: 2, 2: 1}\n",
                    entry_point="count")
    result = add_diff_tests([record], max_inputs=5, seed=0)
    assert result.inputs == {"t_count": 5} and "Counter(" not in result.records[0].meta[DIFF_TESTS]


def test_raising_slow_and_non_literal_outputs_are_dropped():
    record = Record(id="t_mixed", source="t", prompt="def f(n):\n",
                    solution="    if n > 5:\n        raise ValueError(n)\n    if n == 5:\n        while True:\n"
                             "            pass\n    if n == 4:\n        return object()\n    return n\n",
                    tests="assert f(1) == 1\nassert f(3) == 3\n", entry_point="f")
    result = add_diff_tests([record], max_inputs=20, seed=0)
    code = result.records[0].meta[DIFF_TESTS]
    kept = [line for line in code.splitlines() if line.startswith("assert")]
    assert kept and all(f"f({n})" not in code for n in (4, 5, 6, 7)), code
    assert result.dropped_inputs["raised"] + result.dropped_inputs["too_slow"] >= 1


def test_test_code_is_one_assert_per_input():
    code = diff_test_code("f", [((1, "a"), [1.5]), ((2, "b"), {"k": {3, 1}})])
    assert code.count("\nassert ") == 2 and "assert _codenas_same(f(2, 'b'), {'k': {1, 3}}), \"f(2, 'b')\"" in code
    scope: dict = {}
    exec("def f(n, s):\n    return [1.5000000001] if n == 1 else {'k': {1, 3}}\n" + code, scope)
