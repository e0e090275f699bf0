"""The checkpoint table of `codenas eval model`: pass@k per checkpoint, with diff pass@k beside it."""

from __future__ import annotations

from codenas.eval.checkpoints import results_table


def _row(name: str, passed: float, diff: float | None) -> dict:
    row = {"name": name, "checkpoint": name, "step": 10, "pass_at_k": {"pass@1": passed}, "isolation": "landlock",
           "n_problems": 3, "n_samples": 3, "verdicts": {"passed": 1}, "parse_rate": 1.0}
    if diff is not None:
        row["diff_pass_at_k"] = {"pass@1": diff}
    return row


def test_diff_pass_at_k_sits_beside_pass_at_k():
    table = results_table([_row("a", 0.5, 0.25), _row("b", 0.4, None)])
    columns = {column.header: list(column._cells) for column in table.columns}
    assert columns["pass@1"] == ["50.00%", "40.00%"]
    assert columns["pass@1 +diff"] == ["25.00%", "-"]
    assert "pass@1 +diff" not in {c.header for c in results_table([_row("b", 0.4, None)]).columns}
