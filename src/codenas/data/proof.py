"""Prove records by running them in the judge's sandbox: the reference must pass and a null body must fail.

A record whose ``prompt + solution + tests`` fails is wrong; a record whose ``prompt + NULL_BODY + tests``
passes has tests that check nothing. Both kinds are dropped by the caller and counted in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from codenas.eval.execution import ExecResult, iter_programs
from codenas.progress import progress
from codenas.records import Record

NULL_BODY = "    pass\n"
PROOF_TIMEOUT_S = 20.0  # generous: MBPP 123 alone takes ~3 s and proofs must not depend on machine load
PROOF_MEMORY_MB = 2048


@dataclass
class ProofResult:
    kept: list[Record] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # id -> status and detail of the reference run
    null_passed: list[str] = field(default_factory=list)


def prove(records: list[Record], *, desc: str = "proving", workers: int | None = None) -> ProofResult:
    """Run each record's reference and null-body programs on all cores (default), with a progress bar."""
    programs = [p for r in records for p in (r.program(), r.program(NULL_BODY))]
    results: dict[int, ExecResult] = {}
    with progress(total=len(programs), desc=desc, unit="prog") as bar:
        for i, result in iter_programs(programs, timeout=PROOF_TIMEOUT_S, memory_mb=PROOF_MEMORY_MB,
                                       workers=workers):
            results[i] = result
            bar.update()
    outcome = ProofResult()
    for i, record in enumerate(records):
        reference, null = results[2 * i], results[2 * i + 1]
        if not reference.passed:
            outcome.failed[record.id] = f"{reference.status}: {reference.detail}".strip()
        elif null.passed:
            outcome.null_passed.append(record.id)
        else:
            outcome.kept.append(record)
    return outcome
