"""Run untrusted programs in the sandbox and classify each outcome: the judge's execution engine.

A pool of warm worker processes (``_worker.py``, one per core, started as fresh small interpreters so a
parent with torch loaded is never forked) each fork one locked-down child per program. One thread per worker
feeds it jobs over a pipe and reads back one verdict per job; a worker that dies, or stays silent well past
the job's wall-clock backstop (e.g. stopped by the sample it runs), is killed and restarted and its job is
marked ``failed``; a worker that cannot start is an error. docs/sandbox.md lists what the sandbox guarantees.

Public API (stable; the data stage relies on it):
    ExecResult(status, detail)          status in {"passed", "failed", "timeout", "error"}
    run_programs(programs, timeout=..., memory_mb=..., workers=...) -> list[ExecResult] (input order)
    iter_programs(...) -> iterator of (index, ExecResult) in completion order (for streaming/resumable callers)
"""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("passed", "failed", "timeout", "error")
WORKER_SCRIPT = Path(__file__).with_name("_worker.py")
START_TIMEOUT_S = 60.0  # a worker that has not said it is ready by then is broken
REPLY_GRACE_S = 30.0  # a worker silent this long past a job's backstop is stuck or stopped: it is replaced


@dataclass(frozen=True)
class ExecResult:
    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def default_workers() -> int:
    """One worker per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def wall_backstop(timeout: float) -> float:
    """Seconds of wall-clock time a sample gets before it is killed whatever its CPU use (sleeping code)."""
    return max(5 * timeout, timeout + 5)


def _worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


class _Worker:
    """One warm ``_worker.py`` process; ``run`` sends a job and waits for its verdict, never past a deadline.

    ``ChildProcessError`` means the worker died or went silent while running a job (it is killed then).
    """

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-I", str(WORKER_SCRIPT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_worker_env(),
                                     cwd="/", close_fds=True)
        os.set_blocking(self.proc.stdin.fileno(), False)  # sends wait in select, with a deadline
        try:
            self._receive(time.monotonic() + START_TIMEOUT_S)
        except ChildProcessError as e:
            self.close()
            raise RuntimeError(f"the sandbox worker did not start: {e}") from None

    def run(self, program: str, timeout: float, memory_mb: int) -> ExecResult:
        wall_s = wall_backstop(timeout)
        job = {"program": program, "timeout": timeout, "memory_mb": memory_mb, "wall_s": wall_s}
        deadline = time.monotonic() + wall_s + REPLY_GRACE_S
        self._send((json.dumps(job) + "\n").encode(), deadline)
        reply = self._receive(deadline)
        if "harness_error" in reply:
            raise RuntimeError(f"the sandbox worker failed: {reply['harness_error']}")
        return ExecResult(reply["status"], reply["detail"])

    def _send(self, data: bytes, deadline: float) -> None:
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        while view:
            self._await(fd, select.POLLOUT, deadline)
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                continue
            except OSError:
                raise ChildProcessError("sandbox worker died") from None

    def _receive(self, deadline: float) -> dict:
        """The worker's next JSON line."""
        fd, line = self.proc.stdout.fileno(), b""
        while not line.endswith(b"\n"):
            self._await(fd, select.POLLIN, deadline)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise ChildProcessError("sandbox worker died")
            line += chunk
        return json.loads(line)

    def _await(self, fd: int, event: int, deadline: float) -> None:
        """Wait until ``fd`` is ready for ``event`` (or closed); kill the worker if that misses ``deadline``."""
        poller = select.poll()
        poller.register(fd, event)
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            self.proc.kill()
            raise ChildProcessError("sandbox worker stopped responding")

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _serve(jobs: queue.SimpleQueue, results: queue.SimpleQueue, stop: threading.Event,
           programs: Sequence[str], timeout: float, memory_mb: int) -> None:
    """One feeding thread: keep one worker busy until the job queue is empty; restart it if it dies.

    Puts ``(index, result)`` per job, then ``None`` when done, or the exception that broke the harness itself.
    """
    worker = None
    try:
        worker = _Worker()
        while not stop.is_set():
            try:
                index = jobs.get_nowait()
            except queue.Empty:
                break
            try:
                result = worker.run(programs[index], timeout, memory_mb)
            except ChildProcessError as e:
                worker.close()
                worker = _Worker()
                result = ExecResult("failed", f"{e} while running this program")
            results.put((index, result))
        results.put(None)
    except Exception as e:  # handed to the consuming thread, which raises it
        results.put(e)
    finally:
        if worker is not None:
            worker.close()


def iter_programs(programs: Sequence[str], *, timeout: float = 3.0, memory_mb: int = 1024,
                  workers: int | None = None) -> Iterator[tuple[int, ExecResult]]:
    """Run every program in the sandbox; yield ``(index, result)`` as each finishes (completion order)."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if not programs:
        return
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(len(programs)):
        jobs.put(i)
    results: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    n = max(1, min(workers or default_workers(), len(programs)))
    threads = [threading.Thread(target=_serve, args=(jobs, results, stop, programs, timeout, memory_mb),
                                daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        running = n
        while running:
            item = results.get()
            if isinstance(item, Exception):
                raise RuntimeError("the sandbox harness failed") from item
            if item is None:
                running -= 1
            else:
                yield item
    finally:
        stop.set()
        for t in threads:
            t.join()


def run_programs(programs: Sequence[str], *, timeout: float = 3.0, memory_mb: int = 1024,
                 workers: int | None = None) -> list[ExecResult]:
    """Run each full program in its own sandboxed process on all cores; results in input order."""
    out: list[ExecResult | None] = [None] * len(programs)
    for index, result in iter_programs(programs, timeout=timeout, memory_mb=memory_mb, workers=workers):
        out[index] = result
    return out  # type: ignore[return-value]
