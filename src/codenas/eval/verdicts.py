"""Verdict classes: a finer signal than pass/fail, read from what the sandbox already reports.

Each scored sample falls in exactly one class, decided from its completion and the judge's ``(status, detail)``:

    syntax_error   the program does not compile (SyntaxError, IndentationError, TabError)
    runtime_error  it compiles but raises before the tests finish (by exception type: NameError, TypeError, ...),
                   or crashes, exits or runs out of memory
    wrong_answer   it runs, and a test assertion fails
    timeout        it ran out of CPU or wall-clock time
    passed         every test passed
    cut            the model wrote text, but post-processing kept none of it (``results.jsonl`` keeps the ``raw``
                   text and the ``cut_reason``)
    empty          nothing to run: the model wrote nothing up to its end of text (or a samples file gave a blank
                   completion)

A completion "parses" when it is neither empty, cut nor a syntax error. A small model shows progress here (empty ->
syntax error -> runtime error -> wrong answer) long before pass@1 moves.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

VERDICTS = ("passed", "wrong_answer", "runtime_error", "syntax_error", "timeout", "cut", "empty")
LABELS = {"passed": "passed", "wrong_answer": "wrong answer", "runtime_error": "runtime error",
          "syntax_error": "syntax error", "timeout": "timeout", "cut": "cut by post-processing", "empty": "empty"}
PARSING = ("passed", "wrong_answer", "runtime_error", "timeout")
SYNTAX_ERRORS = ("SyntaxError", "IndentationError", "TabError")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


def error_type(detail: str) -> str:
    """The exception type a sandbox detail names (``"KeyError: 'x'"`` -> ``KeyError``); ``crash`` for a
    signal, ``exit`` for an exit status, ``other`` for anything else."""
    if m := _EXCEPTION.match(detail or ""):
        return m.group(1).rsplit(".", 1)[-1]
    if detail.startswith("crashed"):
        return "crash"
    if detail.startswith("exited"):
        return "exit"
    return "other"


def classify(completion: str, status: str, detail: str, cut_reason: str | None = None) -> str:
    """The verdict class (one of ``VERDICTS``) of a sample with this completion and sandbox outcome;
    ``cut_reason``: why post-processing kept nothing of the model's text (a blank completion is then ``cut``)."""
    if not completion.strip():
        return "cut" if cut_reason else "empty"
    if status == "passed":
        return "passed"
    if status == "timeout":
        return "timeout"
    kind = error_type(detail)
    if kind in SYNTAX_ERRORS:
        return "syntax_error"
    if status == "failed" and kind == "AssertionError":
        return "wrong_answer"
    return "runtime_error"


def tally(rows: Iterable[dict]) -> dict:
    """``{"verdicts": {class: count}, "runtime_errors": {type: count}, "parse_rate": share}`` over judged rows
    (each with ``verdict`` and ``detail``). The counts add up to the number of rows."""
    verdicts: Counter = Counter()
    runtime: Counter = Counter()
    for row in rows:
        verdicts[row["verdict"]] += 1
        if row["verdict"] == "runtime_error":
            runtime[error_type(row.get("detail", ""))] += 1
    total = sum(verdicts.values())
    return {"verdicts": {v: verdicts.get(v, 0) for v in VERDICTS},
            "runtime_errors": dict(sorted(runtime.items(), key=lambda kv: (-kv[1], kv[0]))),
            "parse_rate": sum(verdicts[v] for v in PARSING) / total if total else 0.0}


def shares_text(summary: dict) -> str:
    """One line for tables and logs: ``parses 75% | passed 0% · wrong answer 25% · ...`` (non-zero classes)."""
    counts = summary.get("verdicts", {})
    total = sum(counts.values())
    if not total:
        return "-"
    parts = [f"{LABELS[v]} {100 * counts[v] / total:.0f}%" for v in VERDICTS if counts.get(v)]
    return f"parses {100 * summary['parse_rate']:.0f}%: " + ", ".join(parts)
