"""Verdict classes: each sandbox outcome lands in one class; the counts add up; the real judge feeds them."""

from __future__ import annotations

import json

import pytest

from codenas.eval.scoring import read_results, read_summary, score_samples, summary_table
from codenas.eval.verdicts import VERDICTS, classify, error_type, shares_text, tally


@pytest.mark.parametrize("completion, status, detail, expected", [
    ("", "error", "IndentationError: expected an indented block", "empty"),
    ("  \n\t\n", "failed", "AssertionError", "empty"),
    ("    return 1\n", "passed", "", "passed"),
    ("    return 1\n", "timeout", "exceeded 3 s of CPU time", "timeout"),
    ("    return (\n", "error", "SyntaxError: '(' was never closed (<string>, line 9)", "syntax_error"),
    ("return 1\n", "error", "IndentationError: unexpected indent", "syntax_error"),
    ("    return 1\n", "failed", "AssertionError", "wrong_answer"),
    ("    return 1\n", "failed", "AssertionError: expected 2", "wrong_answer"),
    ("    return x\n", "error", "NameError: name 'x' is not defined", "runtime_error"),
    ("    exit()\n", "failed", "SystemExit", "runtime_error"),
    ("    f()\n", "failed", "crashed (SIGSEGV) before the tests finished", "runtime_error"),
    ("    f()\n", "failed", "sandbox worker died (killed by SIGKILL) while running this program", "runtime_error"),
])
def test_classify(completion, status, detail, expected):
    assert classify(completion, status, detail) == expected


def test_error_type():
    assert error_type("KeyError: 'a'") == "KeyError"
    assert error_type("ZeroDivisionError") == "ZeroDivisionError"
    assert error_type("numpy.linalg.LinAlgError: singular") == "LinAlgError"
    assert error_type("crashed (SIGSEGV) before the tests finished") == "crash"
    assert error_type("exited with status 3 before the tests finished") == "exit"
    assert error_type("sandbox worker died") == "other"


def test_tally_adds_up_and_counts_runtime_errors_by_type():
    rows = [{"verdict": v, "detail": d} for v, d in [("empty", ""), ("syntax_error", "SyntaxError: x"),
                                                      ("runtime_error", "NameError: y"),
                                                      ("runtime_error", "NameError: z"),
                                                      ("runtime_error", "TypeError: t"),
                                                      ("wrong_answer", "AssertionError")]]
    counts = tally(rows)
    assert list(counts["verdicts"]) == list(VERDICTS)
    assert sum(counts["verdicts"].values()) == len(rows)
    assert counts["runtime_errors"] == {"NameError": 2, "TypeError": 1}
    assert counts["parse_rate"] == pytest.approx(4 / 6)
    assert shares_text(counts) == "parses 67%: wrong answer 17%, runtime error 50%, syntax error 17%, empty 17%"


def test_scoring_writes_a_verdict_per_row_and_the_classes_in_the_summary(he_records, tmp_path):
    rec = he_records[0]
    completions = [rec.solution, "    return None\n", "    raise KeyError\n", "    return (\n", "",
                   "    while True:\n        pass\n"]
    samples = [{"task_id": rec.id, "completion": c} for c in completions]
    summary = score_samples(samples, [rec], tmp_path, workers=2, timeout=0.5, ks=(1,))
    assert [r["verdict"] for r in read_results(tmp_path)] == [
        "passed", "wrong_answer", "runtime_error", "syntax_error", "empty", "timeout"]
    assert summary["verdicts"] == {v: int(v != "cut") for v in VERDICTS}
    assert sum(summary["verdicts"].values()) == summary["n_samples"] == 6
    assert summary["runtime_errors"] == {"KeyError": 1}
    assert summary["parse_rate"] == pytest.approx(4 / 6)
    assert read_summary(tmp_path) == json.loads((tmp_path / "summary.json").read_text())
    assert read_summary(tmp_path / "absent") is None and read_results(tmp_path / "absent") == []
    labels = [row.cells for row in summary_table(summary).columns[:1]][0]
    assert {"passed", "wrong answer", "runtime error", "syntax error", "timeout", "empty", "parses"} <= set(labels)


def test_a_raw_text_cut_to_nothing_is_cut_with_its_raw_text_and_reason_not_empty(he_records, tmp_path):
    rec = he_records[0]
    unindented = "result = []\nfor n in numbers:\n    result.append(n)\n"
    samples = [{"task_id": rec.id, "completion": text} for text in (unindented, "<|endoftext|>", "")]
    summary = score_samples(samples, [rec], tmp_path, workers=1, timeout=2, ks=(1,), raw=True)
    cut, *empty = read_results(tmp_path)
    assert cut["verdict"] == "cut" and cut["completion"] == "" and cut["raw"] == unindented
    assert cut["cut_reason"].startswith(f"unindented code with no def {rec.entry_point}")
    assert [r["verdict"] for r in empty] == ["empty", "empty"] and not any("raw" in r for r in empty)
    assert summary["verdicts"]["cut"] == 1 and summary["verdicts"]["empty"] == 2 and summary["parse_rate"] == 0.0
    assert classify("", "error", "IndentationError: expected an indented block", "a reason") == "cut"
    again = score_samples(samples, [rec], tmp_path, workers=1, timeout=2, ks=(1,), raw=True)  # resumed: reused
    assert again["verdicts"] == summary["verdicts"] and read_results(tmp_path)[0] == cut
