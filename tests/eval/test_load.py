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
    programs = [rec.program(rec.solution) for rec in recs]
    programs += [recs[0].program(BURN_ONE_CPU_SECOND + recs[0].solution),
                 recs[1].program("    while True:\n        pass\n"),
                 recs[2].program("    return None\n")]

    def verdicts(workers: int) -> list[str]:
        return [r.status for r in run_programs(programs, timeout=3.0, workers=workers)]

    idle = verdicts(2)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        busy = [verdicts(1), verdicts(4)]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert idle == ["passed"] * 5 + ["timeout", "failed"]
    assert busy == [idle, idle]
