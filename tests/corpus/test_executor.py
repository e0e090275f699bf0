"""How `corpus build` runs its stages: a killed build leaves no process and the next one ends any leftover; the
Ray executor gives the local build's shards; Slurm is refused where sbatch is absent."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from codenas.corpus import build as build_module
from codenas.corpus import executor as ex
from codenas.corpus.build import build_corpus, work_folder
from codenas.io import CodenasError, read_json
from codenas.settings import CorpusSettings


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = ex._proc_stat(int(entry.name))
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def _wait_gone(pgid: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.slow
def test_a_killed_build_leaves_no_process_and_no_traceback(py_dir, tokenizer, tmp_path):
    out = tmp_path / "out"
    work = work_folder(out)
    command = [sys.executable, "-c", "from codenas.cli import main; main()", "corpus", "build", str(py_dir),
               "--out", str(out), "--tokenizer", str(tokenizer), "--tasks", "4", "--workers", "2",
               "--val-fraction", "0.25"]
    log = tmp_path / "log"
    with log.open("w") as f:
        build = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        pgid = None
        while time.monotonic() < deadline and build.poll() is None:
            marker = work / ex.PID_FILE
            try:
                pgid = read_json(marker)["pgid"] if marker.is_file() else None
            except CodenasError:
                pgid = None  # being written
            if pgid is not None and len(_group(pgid)) >= 4:  # the stage's process, manager, forkserver, workers
                break
            time.sleep(0.02)
        assert build.poll() is None and pgid is not None, log.read_text()
        os.kill(build.pid, signal.SIGKILL)
        build.wait()
        assert _wait_gone(pgid) == [], "the stage's processes outlived the build"
    finally:
        if build.poll() is None:
            build.kill()
    time.sleep(1)  # anything a dying worker would print
    text = log.read_text()
    assert "Traceback" not in text and "BrokenPipeError" not in text, text
    assert "corpus: read and filter" in text  # it had started

    manifest = build_corpus([str(py_dir)], out, tokenizer=tokenizer,
                            settings=CorpusSettings(tasks=4, workers=2, val_fraction=0.25))
    assert manifest["tokens"]["train"] > 0 and not work.exists()


def _orphaned_group() -> tuple[subprocess.Popen, int]:
    """A process group whose leader was SIGKILLed and whose other member lives on: (leader pid, member pid)."""
    script = textwrap.dedent("""
        import os, sys, time
        os.setpgid(0, 0)
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        print(os.getpid(), flush=True)
        time.sleep(600)
    """)
    leader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(leader.stdout.readline())
    assert pid == leader.pid
    return leader, pid


def test_the_next_build_ends_what_a_killed_one_left(py_dir, tokenizer, quick, tmp_path):
    out = tmp_path / "out"
    work = work_folder(out)
    work.mkdir()
    leader, pgid = _orphaned_group()
    try:
        (work / ex.PID_FILE).write_text(__import__("json").dumps({"pgid": pgid, **ex._identity(pgid)}))
        deadline = time.monotonic() + 30
        while len(_group(pgid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = _group(pgid)
        assert len(members) == 2
        assert ex.leftover_processes(work) == sorted(members)
        os.kill(pgid, signal.SIGKILL)  # the leader dies without ending its group
        leader.wait()
        assert len(_group(pgid)) == 1  # the orphan lives on

        manifest = build_corpus([str(py_dir)], out, tokenizer=tokenizer, settings=quick)
        assert _group(pgid) == [] and manifest["tokens"]["train"] > 0
        assert not work.exists()
    finally:
        for pid in _group(pgid):
            os.kill(pid, signal.SIGKILL)
        if leader.poll() is None:
            leader.kill()


def test_a_reused_pid_is_not_taken_for_a_leftover(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    leader, pgid = _orphaned_group()
    try:
        identity = ex._identity(pgid)
        (work / ex.PID_FILE).write_text(__import__("json").dumps({"pgid": pgid, **identity, "start": 1}))
        assert ex.leftover_processes(work) == []  # the group's leader started at another time: not ours
        (work / ex.PID_FILE).write_text(__import__("json").dumps({"pgid": pgid, **identity, "boot": "other"}))
        assert ex.leftover_processes(work) == []
        assert len(_group(pgid)) == 2
    finally:
        os.killpg(pgid, signal.SIGKILL)
        leader.wait()


def test_a_build_holds_its_work_folder_lock(py_dir, tokenizer, quick, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom codenas.io import output_lock\n"
         f"with output_lock({str(work_folder(out))!r}):\n    print('held', flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CodenasError, match="in use by another codenas process"):
            build_corpus([str(py_dir)], out, tokenizer=tokenizer, settings=quick)
        assert holder.poll() is None and not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_slurm_is_refused_where_sbatch_is_absent(py_dir, tokenizer, quick, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "out"
    with pytest.raises(CodenasError, match="executor = slurm needs Slurm's sbatch on PATH"):
        build_corpus([str(py_dir)], out, tokenizer=tokenizer, settings=dataclasses.replace(quick, executor="slurm"))
    assert not out.exists() and not work_folder(out).exists()

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("SBATCH_PARTITION", raising=False)
    monkeypatch.setenv("SBATCH_TIMELIMIT", "1:00:00")
    with pytest.raises(CodenasError, match=r"set \$SBATCH_PARTITION"):
        build_corpus([str(py_dir)], out, tokenizer=tokenizer, settings=dataclasses.replace(quick, executor="slurm"))
    assert not work_folder(out).exists()


def test_executor_is_a_setting_that_leaves_the_output_alone():
    with pytest.raises(CodenasError, match="executor must be one of local, ray, slurm"):
        CorpusSettings(executor="dask")
    assert "executor" not in CorpusSettings(executor="ray").output_settings()


@pytest.mark.slow
def test_ray_builds_the_shards_of_a_local_build(py_dir, tokenizer, quick, tmp_path, monkeypatch):
    """Every stage on a Ray cluster of 2 CPUs started here; near dedup off to keep it short (each Ray task
    starts a worker process: 7 tasks here)."""
    ray = pytest.importorskip("ray")  # the `test` extra installs it
    settings = dataclasses.replace(quick, drop_autogenerated=False, dedup_near=False)
    local = build_corpus([str(py_dir)], tmp_path / "local", tokenizer=tokenizer, settings=settings)

    def nothing_runs_here(*args, **kwargs):
        raise AssertionError("a stage ran on this machine's local executor")

    from datatrove.executor import LocalPipelineExecutor

    monkeypatch.setattr(LocalPipelineExecutor, "run", nothing_runs_here)  # so every task below ran in a Ray worker
    monkeypatch.setattr(build_module, "run_in_group", nothing_runs_here)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024**2, log_to_driver=False)
    try:
        on_ray = build_corpus([str(py_dir)], tmp_path / "ray", tokenizer=tokenizer,
                              settings=dataclasses.replace(settings, executor="ray", workers=2), keep_work=True)
    finally:
        ray.shutdown()
    assert _shard_bytes(tmp_path / "ray") == _shard_bytes(tmp_path / "local")
    assert on_ray == local
    logs = tmp_path / ".ray.building" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["drop_exact_duplicates", "exact_duplicates", "read_and_filter",
                                                       "tokenize"]
    for stage, tasks in (("read_and_filter", 2), ("exact_duplicates", 1), ("drop_exact_duplicates", 2),
                         ("tokenize", 2)):
        assert len(list((logs / stage / "completions").iterdir())) == tasks


def test_a_failing_task_on_ray_is_one_line_naming_its_log(tmp_path):
    class Executor:
        world_size = 2

        def get_incomplete_ranks(self):
            return [1]

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "task_00001.log").write_text("starting\ncodenas.io.CodenasError: x.jsonl: no field\n\n")
    with pytest.raises(CodenasError, match=r"1 of 2 tasks did not finish on Ray .*task 1 ended with: "
                                           r"codenas.io.CodenasError: x.jsonl: no field; rerun"):
        ex._check_complete(Executor(), "Ray", tmp_path)


_FAKE_SBATCH = """#!{python}
# Runs the submitted script at once, each array index in turn, as a Slurm node would; prints sbatch's answer.
import os, re, subprocess, sys
script = sys.argv[-1]
text = open(script).read()
array = re.search(r"^#SBATCH --array=(\\d+)-(\\d+)", text, re.M)
env = dict(os.environ, SLURM_NODELIST="localhost", SLURM_JOB_ID="42")
for arg in sys.argv[1:-1]:
    if arg.startswith("--export=ALL,"):
        env.update(kv.split("=", 1) for kv in arg[len("--export=ALL,"):].split(","))
with open(os.environ["FAKE_SLURM_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:-1]) + "\\n" + text + "\\n")
    log.flush()
    for i in range(int(array[1]), int(array[2]) + 1) if array else [None]:
        task_env = env if i is None else dict(env, SLURM_ARRAY_TASK_ID=str(i))
        subprocess.run(["bash", script], env=task_env, check=True, stdout=log, stderr=log)
print("Submitted batch job 42")
"""


@pytest.mark.slow
def test_slurm_builds_the_shards_of_a_local_build(py_dir, tokenizer, quick, tmp_path, monkeypatch):
    """Through sbatch scripts run by a stand-in scheduler: the steps are pickled, loaded by datatrove's
    launch_pickled_pipeline in fresh processes, and give the local build's shards."""
    settings = dataclasses.replace(quick, drop_autogenerated=False, dedup_near=False)
    local = build_corpus([str(py_dir)], tmp_path / "local", tokenizer=tokenizer, settings=settings)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(_FAKE_SBATCH.format(python=sys.executable))
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do if [ "$1" = -n ]; then shift; fi; '
                                  'shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")  # every job has left the queue
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    log = tmp_path / "slurm.log"
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]))
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    monkeypatch.setenv("SBATCH_PARTITION", "cpu")
    monkeypatch.setenv("SBATCH_TIMELIMIT", "1:00:00")
    from datatrove.executor import LocalPipelineExecutor

    def nothing_runs_here(*args, **kwargs):
        raise AssertionError("a stage ran on this machine's local executor")

    monkeypatch.setattr(LocalPipelineExecutor, "run", nothing_runs_here)
    on_slurm = build_corpus([str(py_dir)], tmp_path / "slurm", tokenizer=tokenizer,
                            settings=dataclasses.replace(settings, executor="slurm"))
    assert _shard_bytes(tmp_path / "slurm") == _shard_bytes(tmp_path / "local")
    assert on_slurm == local
    submitted = log.read_text()
    assert len(re.findall(r"^srun .*launch_pickled_pipeline", submitted, re.M)) == 4  # one array job per stage
    assert "#SBATCH --partition=cpu" in submitted and "#SBATCH --time=1:00:00" in submitted
    assert "#SBATCH --array=0-1" in submitted and "#SBATCH --job-name=codenas-read_and_filter" in submitted
