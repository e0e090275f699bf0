"""How a corpus build's datatrove stages run: ``local`` (this machine's cores), ``ray`` (a Ray cluster) or ``slurm``.

``local``: the whole build runs in a forked child process that leads a process group of its own
(``run_in_group``), so every process it starts (datatrove's multiprocess manager, forkserver, pool workers,
resource tracker) is in that group. The child asks the kernel for a signal when its parent dies
(``PR_SET_PDEATHSIG``) and then kills the whole group at once: a ``kill -9`` of ``codenas corpus build`` ends
every worker, and none prints a traceback. Ctrl-C in the terminal reaches the parent only (the group is not in
the foreground), which kills the group. The child names its group in ``executor.pid`` in the work folder; should
the group outlive the build anyway (parent and child killed at once), the next build of the same folder, holding
its lock, ends the processes left in that group before it touches the folder (``end_leftovers``).

``ray``: datatrove's ``RayPipelineExecutor`` on the cluster ``ray.init()`` finds (``$RAY_ADDRESS``, else a local
one started for the stage). ``slurm``: datatrove's ``SlurmPipelineExecutor`` submits each stage with ``sbatch``
(partition and time limit from sbatch's own ``$SBATCH_PARTITION`` and ``$SBATCH_TIMELIMIT``), and the build waits
for its tasks. Both run in the calling process (Ray's and Slurm's processes are theirs to manage) and need the
work folder on a filesystem every node mounts at the same path (docs/corpus.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from codenas.io import CodenasError, atomic_write_json, read_json
from codenas.names import EXECUTOR_PID
from codenas.progress import say
from codenas.settings import EXECUTORS

PID_FILE = EXECUTOR_PID
_PR_SET_PDEATHSIG = 1
T = TypeVar("T")
_SLURM_POLL_S = 30.0


def check_executor(executor: str) -> None:
    """Refuse, before any work, an executor this machine cannot use."""
    if executor not in EXECUTORS:
        raise CodenasError(f"corpus setting executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise CodenasError("corpus setting executor = ray needs the ray package (pip install ray)") from None
    if executor == "slurm":
        if shutil.which("sbatch") is None:
            raise CodenasError("corpus setting executor = slurm needs Slurm's sbatch on PATH: run the build on a "
                               "Slurm login node (see docs/corpus.md), or use executor = local or ray")
        missing = [v for v in ("SBATCH_PARTITION", "SBATCH_TIMELIMIT") if not os.environ.get(v)]
        if missing:
            raise CodenasError(f"corpus setting executor = slurm takes the partition and time limit from sbatch's "
                               f"own variables: set {' and '.join('$' + v for v in missing)} (e.g. "
                               "SBATCH_PARTITION=cpu SBATCH_TIMELIMIT=12:00:00)")


def stage_logs(work: Path, name: str) -> Path:
    """The folder of a stage's task logs and completion markers: ``work/logs/<name, with _ for spaces>`` (no
    spaces: datatrove's sbatch scripts name it unquoted)."""
    return work / "logs" / re.sub(r"[^A-Za-z0-9.-]+", "_", name)


def run_stage(executor: str, work: Path, name: str, pipeline: list, tasks: int, workers: int | None) -> None:
    """Run one stage's ``pipeline`` as ``tasks`` tasks with ``executor``; its task logs and completion markers
    go to ``stage_logs(work, name)``, and finished tasks of an earlier run are skipped. ``workers`` bounds the
    tasks running at once (None: one per core locally, no bound on Ray or Slurm)."""
    from codenas.corpus import quiet_logs

    logs = stage_logs(work, name)
    steps = [quiet_logs, *pipeline]
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # datatrove's own bars; the stage names are printed instead
    try:
        if executor == "local":
            from datatrove.executor import LocalPipelineExecutor

            at_once = max(1, min(workers or os.cpu_count() or 1, tasks))
            LocalPipelineExecutor(pipeline=steps, tasks=tasks, workers=at_once, logging_dir=str(logs),
                                  skip_completed=True).run()
        elif executor == "ray":
            _run_on_ray(steps, tasks, workers, logs)
        elif executor == "slurm":
            _run_on_slurm(steps, tasks, workers, logs, name)
        else:
            check_executor(executor)
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


# --- local: a process group that ends with its parent ------------------------------------------------------------


class ChildTraceback(Exception):
    """The traceback of an exception raised in the build's child process (the cause of the one re-raised here)."""


def run_in_group(work: Path, fn: Callable[[], T], interrupted: str = "") -> T:
    """``fn()`` in a forked child that leads a process group of its own and ends it when this process dies.

    The child names its group in ``work/executor.pid`` (kept while it runs, for ``end_leftovers``). Returns
    what ``fn`` returns (it must pickle) and raises what it raises; Ctrl-C here kills the whole group and says
    ``interrupted``.
    """
    fd, name = tempfile.mkstemp(prefix="codenas-build-", suffix=".pkl")
    os.close(fd)
    outcome = Path(name)
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: every process of the build descends from it
        code = 1
        try:
            os.setpgid(0, 0)
            _end_group_with(parent)
            _forget_inherited_forkserver()
            work.mkdir(parents=True, exist_ok=True)
            atomic_write_json(work / PID_FILE, {"pgid": os.getpid(), **_identity(os.getpid())})
            try:
                outcome.write_bytes(pickle.dumps((True, fn())))
                code = 0
            except BaseException as e:  # noqa: B036 - every exception is carried to the parent, KeyboardInterrupt too
                _write_outcome(outcome, e)
                code = 2
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    ok: bool | None  # the child's outcome: True with its return value, False with (its error, traceback text)
    value: Any
    try:
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also here, so that the group exists whichever of the two runs first
        try:
            _, status = os.waitpid(pid, 0)
        except BaseException as e:
            _kill_group(pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            if isinstance(e, KeyboardInterrupt) and interrupted:
                say(interrupted)
            raise
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            _kill_group(pid)  # whatever the child started and left behind
        ok, value = pickle.loads(outcome.read_bytes()) if code in (0, 2) and outcome.stat().st_size else (None, None)
    finally:
        outcome.unlink(missing_ok=True)
        (work / PID_FILE).unlink(missing_ok=True)
    if ok is True:
        return value
    if ok is False:
        error, text = value
        if isinstance(error, CodenasError | KeyboardInterrupt):
            raise error
        raise error from ChildTraceback(text)
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    raise CodenasError(f"the build's process {how}; run the same command again to resume", work)


def _forget_inherited_forkserver() -> None:
    """A forkserver the parent started (an earlier local stage run in the parent itself) is not this child's child:
    multiprocess would wait on it and fail (ECHILD). The child starts its own, so it forgets the inherited one."""
    forkserver = sys.modules.get("multiprocess.forkserver")
    if forkserver is not None:
        server = forkserver.ForkServer()
        names = ("ensure_running", "get_inherited_fds", "connect_to_new_process", "set_forkserver_preload")
        vars(forkserver).update(_forkserver=server, **{name: getattr(server, name) for name in names})


def _write_outcome(path: Path, error: BaseException) -> None:
    text = "".join(traceback.format_exception(error))
    try:
        data = pickle.dumps((False, (error, text)))
    except Exception:  # an exception that does not pickle: its text still reaches the parent
        data = pickle.dumps((False, (RuntimeError(f"{type(error).__name__}: {error}"), text)))
    path.write_bytes(data)


def _end_group_with(parent: int) -> None:
    """In the group leader: kill the whole group when ``parent`` dies (SIGTERM from the kernel, or a plain
    ``kill``). Processes forked from the leader inherit the handler; in them it does what SIGTERM does."""
    leader = os.getpid()

    def end(signum, frame):
        if os.getpid() == leader:
            os.killpg(leader, signal.SIGKILL)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, end)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # Linux; elsewhere the next build's cleanup remains
    if os.getppid() != parent:  # the parent died before the request took effect
        os.killpg(leader, signal.SIGKILL)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, ...), or None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _identity(pid: int) -> dict:
    """What tells this process apart from a later one given the same pid: its start time and the boot."""
    fields = _proc_stat(pid)
    return {"start": int(fields[19]) if fields else None, "boot": _boot_id(), "uid": os.getuid()}


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def leftover_processes(work: Path) -> list[int]:
    """Live processes of the group named by ``work/executor.pid``: those of a killed build's stage.

    A process counts when it is in that group, belongs to this user and started, in this boot, no earlier than
    the group's leader. When a process holds the leader's pid but started at another time, the pid (and so the
    group) has been reused by something else: nothing counts.
    """
    path = work / PID_FILE
    if not path.is_file():
        return []
    try:
        marker = read_json(path)
        pgid, start = int(marker["pgid"]), marker["start"]
    except (CodenasError, KeyError, TypeError, ValueError):
        return []
    if start is None or marker.get("boot") != _boot_id() or marker.get("uid") != os.getuid():
        return []
    leader = _proc_stat(pgid)
    if leader is not None and leader[0] != "Z" and int(leader[19]) != start:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is None or fields[0] == "Z" or int(fields[2]) != pgid or int(fields[19]) < start:
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_uid == os.getuid():
                found.append(int(entry.name))
    return sorted(found)


def end_leftovers(work: Path, timeout: float = 10.0) -> list[int]:
    """Kill what a killed build's stage left running (``leftover_processes``) and remove the marker.

    Call it only while holding the work folder's lock: then no live build is using that group. Returns the
    pids ended.
    """
    pids = leftover_processes(work)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        alive = [p for p in pids if (f := _proc_stat(p)) is not None and f[0] != "Z"]
        if not alive:
            break
        time.sleep(0.05)
    if pids:
        say(f"corpus: ended {len(pids)} worker process(es) left running by a killed build of {work}")
    (work / PID_FILE).unlink(missing_ok=True)
    return pids


# --- Ray and Slurm ------------------------------------------------------------------------------------------------


def _run_on_ray(steps: list, tasks: int, workers: int | None, logs: Path) -> None:
    import logging

    import ray
    from datatrove.executor.ray import RayPipelineExecutor
    from loguru import logger

    started = not ray.is_initialized()
    if started:  # $RAY_ADDRESS names a cluster; without it ray starts one on this machine for the stage
        ray.init(logging_level=logging.WARNING, log_to_driver=False)
    logger.disable("datatrove.executor.ray")  # its warning about local logging folders: docs/corpus.md says it
    try:
        executor = RayPipelineExecutor(pipeline=steps, tasks=tasks, workers=workers or -1, logging_dir=str(logs),
                                       skip_completed=True)
    finally:
        logger.enable("datatrove.executor.ray")
    try:
        executor.run()
    finally:
        if started:
            ray.shutdown()
    _check_complete(executor, "Ray", logs)


def _run_on_slurm(steps: list, tasks: int, workers: int | None, logs: Path, name: str) -> None:
    import subprocess

    from datatrove.executor.slurm import SlurmPipelineExecutor

    check_executor("slurm")
    if any(c.isspace() for c in str(logs)):
        raise CodenasError("executor = slurm needs a work folder whose path has no spaces (datatrove's sbatch "
                           "scripts name it unquoted): choose another --out", logs.parent.parent)
    executor = SlurmPipelineExecutor(pipeline=steps, tasks=tasks, workers=workers or -1, logging_dir=str(logs),
                                     skip_completed=True, partition=os.environ["SBATCH_PARTITION"],
                                     time=os.environ["SBATCH_TIMELIMIT"], job_name="codenas-" + name.replace(" ", "_"),
                                     venv_path=_activate_script())
    executor.run()  # submits the stage's tasks as a job array (nothing when they are all complete)
    job = executor.job_id
    if job not in (None, -1):
        say(f"corpus: {name}: Slurm job {job} submitted; waiting for its {tasks} tasks")
    while executor.get_incomplete_ranks():
        if job in (None, -1):
            break
        queued = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%i"], capture_output=True, text=True)
        if queued.returncode == 0 and not queued.stdout.strip():
            break  # the job has left the queue
        time.sleep(_SLURM_POLL_S)
    _check_complete(executor, "Slurm", logs)


def _activate_script() -> str | None:
    """The running virtual environment's activate script, which the Slurm jobs source (None outside one)."""
    script = Path(sys.prefix) / "bin" / "activate"
    return str(script) if sys.prefix != sys.base_prefix and script.is_file() else None


def _check_complete(executor, where: str, logs: Path) -> None:
    """Name the tasks a cluster executor left unfinished (they do not raise in this process)."""
    missing = executor.get_incomplete_ranks()
    if not missing:
        return
    last = ""
    log = logs / "logs" / f"task_{missing[0]:05d}.log"
    if log.is_file():
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        last = f"; task {missing[0]} ended with: {lines[-1]}" if lines else ""
    raise CodenasError(f"{len(missing)} of {executor.world_size} tasks did not finish on {where} (task logs in "
                       f"{logs / 'logs'}){last}; rerun the same command to run them again")
