"""Run untrusted programs in the sandbox and classify each outcome: the judge's execution engine.

A pool of warm worker processes (``_worker.py``, one per core, started as fresh small interpreters so a
parent with torch loaded is never forked) each fork one locked-down child per program. One thread per worker
feeds it jobs over a pipe and reads back one verdict per job; a worker that stays silent well past the job's
wall-clock backstop (stopped by the sample it runs) is killed and restarted and its job is marked ``failed``.
A failure of the harness itself (a worker that dies, e.g. killed by the OOM killer or ``kill -9``, cannot
start, or finds that it could not set a sample up, e.g. no space for its directory, before any of the sample's
code ran) gives no verdict: that sample is retried on a fresh worker a few times. Then a trivial program is run
on a fresh worker: if it passes, the harness works and the sample itself keeps breaking it, so the sample gets
a ``failed`` verdict naming the fault (``ExecResult.fault``) and the run goes on; if it does not, the run stops
with a ``CodenasError`` naming the cause. Only the harness decides that it failed, from what it sees itself: a
report written from inside a sample can never claim it (a forged report is the sample's ``failed`` verdict,
with ``fault`` set too). docs/sandbox.md lists what the sandbox guarantees.

Public API (stable; the data stage relies on it):
    ExecResult(status, detail, fault)   status in {"passed", "failed", "timeout", "error"}; fault "" unless
                                        the sample kept breaking the harness or forged a report of the judge
    run_programs(programs, timeout=..., memory_mb=..., workers=..., require_isolation=False)
        -> list[ExecResult] (input order)
    iter_programs(...) -> iterator of (index, ExecResult) in completion order (for streaming/resumable callers);
                        its programs may come from a generator, each judged as soon as it is produced
    isolation_level() -> "landlock+mountns+seccomp+netns+uid", ..., or "python-guards-only": the kernel layers every
        sample gets on this machine (see docs/sandbox.md)
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from codenas.io import CodenasError
from codenas.progress import say

STATUSES = ("passed", "failed", "timeout", "error")
WORKER_SCRIPT = Path(__file__).with_name("_worker.py")
START_TIMEOUT_S = 60.0  # a worker that has not said it is ready by then is broken
REPLY_GRACE_S = 30.0  # a worker silent this long past a job's backstop is stuck or stopped: it is replaced
WORKER_DIED = "sandbox worker died"  # a harness fault, never a verdict
HARNESS_ATTEMPTS = 4  # tries per sample when the harness (not the sample) fails, e.g. a transient fork or disk error
RETRY_PAUSE_S = 1.0  # pause before the first retry, doubled for each further one
CANARY = "assert True\n"  # passes on any working harness: tells a broken harness from a sample that breaks it
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # tmpfs: cheaper per-sample folders
WRITE_CONFINEMENT = ("landlock", "mountns")  # the kernel layers that confine a sample's writes to its folder


@dataclass(frozen=True)
class ExecResult:
    """A program's verdict. ``fault`` is empty, but for a ``failed`` program that kept causing harness faults
    (``harness fault xN: <cause>``) or that forged a report of the judge from inside its process: then it says
    so, as ``detail`` does."""

    status: str
    detail: str = ""
    fault: str = ""

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


class _HarnessFault(Exception):
    """The harness, not the sample, failed: no verdict; the sample is worth retrying on a fresh worker."""


class _WorkerSilent(ChildProcessError):
    """The worker gave no answer long past the job's backstop: the sample it ran stopped it (a verdict)."""


class _Worker:
    """One warm ``_worker.py`` process; ``run`` sends a job and waits for its verdict, never past a deadline.

    ``_WorkerSilent`` means the worker went silent while running a job (it is killed then); ``ChildProcessError``
    that it died while running it; ``_HarnessFault`` that it could not start, or could not take or set up the job.
    """

    def __init__(self):
        self.scratch = None
        try:
            # The worker's folder (its samples' folders go in it): made and removed here, so that nothing is
            # left behind whatever becomes of the worker.
            self.scratch = tempfile.mkdtemp(prefix="codenas-worker-", dir=SCRATCH)
            self.stderr = tempfile.TemporaryFile()  # kept for the error message should the worker break
            self.proc = subprocess.Popen([sys.executable, "-I", str(WORKER_SCRIPT), self.scratch],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                         env=_worker_env(), cwd="/", close_fds=True)
        except OSError as e:  # e.g. out of processes, memory or file descriptors: worth another try
            if self.scratch:
                shutil.rmtree(self.scratch, ignore_errors=True)
            raise _HarnessFault(f"could not start the sandbox worker: {e}") from e
        os.set_blocking(self.proc.stdin.fileno(), False)  # sends wait in select, with a deadline
        try:
            self.isolation = str(self._receive(time.monotonic() + START_TIMEOUT_S).get("isolation", ""))
        except (ChildProcessError, _HarnessFault) as e:
            self.proc.kill()
            last_words = self._last_words()
            self.close()
            raise _HarnessFault(f"the sandbox worker did not start: {e}{last_words}") from None

    def run(self, program: str, timeout: float, memory_mb: int) -> ExecResult:
        wall_s = wall_backstop(timeout)
        job = {"program": program, "timeout": timeout, "memory_mb": memory_mb, "wall_s": wall_s}
        deadline = time.monotonic() + wall_s + REPLY_GRACE_S
        try:
            self._send((json.dumps(job) + "\n").encode(), deadline)
        except ChildProcessError as e:  # it broke before it had the whole job: not this sample's doing
            self.proc.kill()
            raise _HarnessFault(f"{e} before it got the job{self._last_words()}") from None
        reply = self._receive(deadline)
        try:
            if "harness_error" in reply:
                raise _HarnessFault(f"the sandbox worker failed: {reply['harness_error']}")
            return ExecResult(reply["status"], reply["detail"], str(reply.get("fault", "")))
        except (KeyError, TypeError):
            raise _HarnessFault(f"unexpected reply from the sandbox worker: {reply!r:.200}") from None

    def _send(self, data: bytes, deadline: float) -> None:
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        while view:
            self._await(fd, select.POLLOUT, deadline)
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                continue
            except OSError:
                raise ChildProcessError(WORKER_DIED) from None

    def _receive(self, deadline: float) -> dict:
        """The worker's next JSON line."""
        fd, line = self.proc.stdout.fileno(), b""
        while not line.endswith(b"\n"):
            self._await(fd, select.POLLIN, deadline)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise ChildProcessError(WORKER_DIED)
            line += chunk
        try:
            return json.loads(line)
        except ValueError:
            raise _HarnessFault(f"unreadable reply from the sandbox worker: {line[:200]!r}") from None

    def _await(self, fd: int, event: int, deadline: float) -> None:
        """Wait until ``fd`` is ready for ``event`` (or closed); kill the worker if that misses ``deadline``."""
        poller = select.poll()
        poller.register(fd, event)
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            self.proc.kill()
            raise _WorkerSilent("sandbox worker stopped responding")

    def _last_words(self) -> str:
        """The last line the dead worker wrote on stderr (its exception, if it raised one), as a suffix."""
        self.proc.wait()
        self.stderr.seek(0)
        lines = self.stderr.read()[-4096:].decode("utf-8", "replace").strip().splitlines()
        return f" ({lines[-1].strip()})" if lines else ""

    def exit_note(self) -> str:
        """How the closed worker ended, as a suffix: `` (killed by SIGKILL)``, `` (exit status 1)``."""
        code = self.proc.returncode
        if code is None or code == 0:
            return ""
        if code > 0:
            return f" (exit status {code})"
        try:
            return f" (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f" (killed by signal {-code})"

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
        self.stderr.close()
        shutil.rmtree(self.scratch, ignore_errors=True)  # with whatever the worker and its samples left


def _serve(jobs: queue.SimpleQueue, results: queue.SimpleQueue, stop: threading.Event, timeout: float,
           memory_mb: int) -> None:
    """One feeding thread: keep one worker busy with ``(index, program)`` jobs until it takes a ``None``;
    restart the worker if it dies.

    Puts ``(index, result)`` per job, then ``None`` when done, or the exception that broke the harness itself.
    """
    worker = None
    try:
        while not stop.is_set():
            job = jobs.get()
            if job is None:
                break
            index, program = job
            limit = timeout
            if isinstance(program, tuple):  # a program with a CPU-time limit of its own
                program, limit = program
            result, worker = _judge(worker, program, limit, memory_mb, stop)
            results.put((index, result))
        results.put(None)
    except Exception as e:  # handed to the consuming thread, which raises it
        results.put(e)
    finally:
        if worker is not None:
            worker.close()


def _judge(worker: _Worker | None, program: str, timeout: float, memory_mb: int,
           stop: threading.Event | None = None) -> tuple[ExecResult, _Worker | None]:
    """One program's verdict, and the worker to use next (``None``: start a fresh one).

    A worker that hangs long past the program's backstop gives it a ``failed`` verdict (only the program can
    have stopped it). A worker that dies (``kill -9``, the OOM killer) and any other harness fault give none:
    the program is retried on a fresh worker. When ``HARNESS_ATTEMPTS`` tries in a row have failed, ``CANARY``
    runs on a fresh worker: if it passes, the harness works, and the program (which keeps breaking it) gets a
    ``failed`` verdict naming the fault; if not, the fault is raised. The program's own crash is the worker's
    verdict, not a death of the worker.
    """
    fault: Exception = _HarnessFault("no try was made")
    for attempt in range(HARNESS_ATTEMPTS):
        if attempt:
            if stop is not None and stop.wait(RETRY_PAUSE_S * 2 ** (attempt - 1)):
                raise fault  # the run is over (e.g. Ctrl-C, which also reaches the workers): no retry
        try:
            worker = worker or _Worker()
        except _HarnessFault as e:
            fault = e
            continue
        try:
            return worker.run(program, timeout, memory_mb), worker
        except _WorkerSilent as e:
            worker.close()
            return ExecResult("failed", f"{e} while running this program"), None
        except ChildProcessError as e:
            worker.close()
            fault = _HarnessFault(f"{e}{worker.exit_note()} while running a sample")
            worker = None
        except _HarnessFault as e:
            fault = e
            worker.close()
            worker = None
    if not _harness_works(timeout, memory_mb):
        raise fault
    reason = f"harness fault x{HARNESS_ATTEMPTS}: {' '.join(str(fault).split())}"
    return ExecResult("failed", reason, reason), None


def _harness_works(timeout: float, memory_mb: int) -> bool:
    """Whether ``CANARY`` passes on a fresh worker."""
    worker = None
    try:
        worker = _Worker()
        return worker.run(CANARY, timeout, memory_mb).passed
    except (ChildProcessError, _HarnessFault):
        return False
    finally:
        if worker is not None:
            worker.close()


@cache
def isolation_level() -> str:
    """The isolation every sample gets on this machine, as the workers report it (one is started to ask):
    the kernel layers in force joined by ``+`` (``landlock``, ``mountns``, ``seccomp``, ``netns``, ``uid``), or
    ``python-guards-only``."""
    for attempt in range(HARNESS_ATTEMPTS):
        try:
            worker = _Worker()
            break
        except _HarnessFault as e:
            if attempt == HARNESS_ATTEMPTS - 1:
                raise CodenasError(f"the sandbox harness failed: {' '.join(str(e).split())}") from e
            time.sleep(RETRY_PAUSE_S * 2 ** attempt)
    level = worker.isolation
    worker.close()
    return level


def is_confined(level: str) -> bool:
    """Whether the kernel confines a sample's writes at ``level`` (Landlock or a read-only mount namespace)."""
    return any(layer in WRITE_CONFINEMENT for layer in level.split("+"))


def check_isolation(require: bool = False) -> str:
    """The isolation level; warns (every time) when the kernel confines no writes, and then raises instead
    when ``require``."""
    level = isolation_level()
    if not is_confined(level):
        what = (f"this machine offers no kernel confinement of a sample's writes (isolation: {level}): "
                "neither Landlock (Linux >= 5.13) nor user and mount namespaces")
        if require:
            raise CodenasError(f"{what}; refusing to run because isolation is required "
                               "(drop --require-isolation to judge with Python-level guards only)")
        say(f"warning: {what}; only Python-level guards protect your files from the judged code "
            "(see docs/sandbox.md)")
    return level


def iter_programs(programs: Iterable[str | tuple[str, float]], *, timeout: float = 3.0, memory_mb: int = 1024,
                  workers: int | None = None, require_isolation: bool = False,
                  isolation_checked: bool = False) -> Iterator[tuple[int, ExecResult]]:
    """Run every program in the sandbox; yield ``(index, result)`` as each finishes (completion order).

    ``programs`` may be a generator (e.g. a sampler's): each program goes to the workers as soon as it is
    produced, and the verdicts ready by then are yielded between two programs, so judging overlaps producing.
    A program given as ``(program, seconds)`` gets that CPU-time limit instead of ``timeout``.
    Warns when the kernel confines no writes on this machine; ``require_isolation`` raises then instead
    (``isolation_checked``: the caller has already done so with ``check_isolation``)."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if isinstance(programs, Sized) and not len(programs):
        return
    if not isolation_checked:
        check_isolation(require_isolation)
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    results: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    n = max(1, workers or default_workers())
    if isinstance(programs, Sized):
        n = min(n, len(programs))
    threads = [threading.Thread(target=_serve, args=(jobs, results, stop, timeout, memory_mb), daemon=True)
               for _ in range(n)]
    for t in threads:
        t.start()
    running = n

    def take(item) -> tuple[int, ExecResult] | None:
        nonlocal running
        if isinstance(item, Exception):
            cause = str(item) if isinstance(item, _HarnessFault) else f"{type(item).__name__}: {item}"
            raise CodenasError(f"the sandbox harness failed: {' '.join(cause.split())}") from item
        if item is None:
            running -= 1
        return item

    try:
        for index, program in enumerate(programs):
            jobs.put((index, program))
            while True:  # hand over the verdicts that are ready, without waiting
                try:
                    item = take(results.get_nowait())
                except queue.Empty:
                    break
                if item is not None:
                    yield item
        for _ in threads:
            jobs.put(None)
        while running:
            item = take(results.get())
            if item is not None:
                yield item
    finally:
        stop.set()
        for _ in threads:
            jobs.put(None)  # wakes a thread still waiting for a job
        for t in threads:
            t.join()


def run_programs(programs: Sequence[str], *, timeout: float = 3.0, memory_mb: int = 1024,
                 workers: int | None = None, require_isolation: bool = False) -> list[ExecResult]:
    """Run each full program in its own sandboxed process on all cores; results in input order."""
    out: list[ExecResult | None] = [None] * len(programs)
    for index, result in iter_programs(programs, timeout=timeout, memory_mb=memory_mb, workers=workers,
                                       require_isolation=require_isolation):
        out[index] = result
    return out  # type: ignore[return-value]
