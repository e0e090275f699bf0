"""Verdicts do not depend on machine load or worker count: the time limit is counted in CPU seconds."""

from __future__ import annotations

import subprocess
import sys

from codenas.eval.execution import run_programs

# Needs ~1 CPU second (on its first call only) whatever the machine: a wall-clock limit would fail it on a
# busy machine.
BURN_ONE_CPU_SECOND = ("    import time\n    if not globals().get('burned'):\n        globals()['burned'] = True\n"
                       "        start = time.process_time()\n"
                       "        while time.process_time() - start < 1.0:\n            pass\n")


def test_verdicts_identical_idle_and_beside_a_cpu_hog_with_one_or_four_workers(he_records):
    recs = he_records[:4]
    # The samples whose verdict rests on the 3-second CPU limit run under it: one needs a CPU second and passes,
    # one never ends and times out (by its CPU limit, or by the wall-clock backstop when a loaded machine gives
    # it less than a fifth of a core: the verdict is the same). The quick ones get a limit of their own whose
    # wall-clock backstop (5x) no load reaches, so that only the CPU limit is under test.
    quick = [(rec.program(rec.solution), 10.0) for rec in recs] + [(recs[2].program("    return None\n"), 10.0)]
    programs = [*quick[:4], recs[0].program(BURN_ONE_CPU_SECOND + recs[0].solution),
                recs[1].program("    while True:\n        pass\n"), quick[4]]

    def verdicts(workers: int) -> list[tuple[str, str]]:
        return [(r.status, r.detail) for r in run_programs(programs, timeout=3.0, workers=workers)]

    idle = verdicts(2)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        busy = [verdicts(1), verdicts(4)]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    statuses = [status for status, _ in idle]
    assert statuses == ["passed"] * 5 + ["timeout", "failed"], idle
    for run in busy:
        assert [status for status, _ in run] == statuses, run
