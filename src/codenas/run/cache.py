"""The stage cache: a key per stage, ``.started``/``.done`` markers in its folder, and the run's ``stages.json``.

A stage's key is the sha256 of what decides its output: its name, the config values it reads, the keys of the
stages it consumes, the hashes of its input files and the codenas version. ``OUT/<stage>/.done`` is written
(atomically) last and holds the key, so a stage is done exactly when that file holds the current key. A stage
that was started but not finished (Ctrl-C, crash) has ``.started`` with its key: rerun with the same key, it
resumes in place; with another key its folder is cleared first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import codenas
from codenas.io import atomic_write_json, atomic_write_text, read_json
from codenas.names import DONE, STARTED


def stage_key(name: str, params: dict[str, Any], upstream: dict[str, str],
              inputs: dict[str, str | None]) -> str:
    """sha256 over the stage name, its config values, its upstream stage keys and its input file hashes."""
    payload = {"stage": name, "params": params, "upstream": upstream, "inputs": inputs,
               "codenas": codenas.__version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def is_done(stage_dir: Path, key: str) -> bool:
    done = stage_dir / DONE
    return done.is_file() and done.read_text(encoding="utf-8").strip() == key


def started_with(stage_dir: Path, key: str) -> bool:
    started = stage_dir / STARTED
    return started.is_file() and started.read_text(encoding="utf-8").strip() == key


def begin(stage_dir: Path, key: str) -> bool:
    """Prepare ``stage_dir`` for a run with ``key``; True when it holds an interrupted run of the same key (resume)."""
    if started_with(stage_dir, key):
        return True
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    atomic_write_text(stage_dir / STARTED, key + "\n")
    return False


def finish(stage_dir: Path, key: str) -> None:
    atomic_write_text(stage_dir / DONE, key + "\n")


class StageLog:
    """``OUT/stages.json``: for each stage its key, status (``ran`` | ``resumed`` | ``cached``) and wall time.

    The wall time is the one of the run that produced the stage's output, so a cached stage keeps it.
    """

    def __init__(self, path: Path):
        self.path = path
        self.stages = read_stages(path)
        self._previous = dict(self.stages)
        self._order: list[str] = []

    def record(self, name: str, key: str, status: str, wall_s: float | None = None) -> None:
        if status == "cached":
            old = self._previous.get(name, {})
            wall_s = old.get("wall_s") if old.get("key") == key else None
        self.stages[name] = {"key": key, "status": status, "wall_s": wall_s,
                             "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self._order:
            rank = {n: i for i, n in enumerate(self._order)}
            self.stages = dict(sorted(self.stages.items(), key=lambda item: rank.get(item[0], len(rank))))
        self._write()

    def keep_only(self, names: list[str]) -> None:
        """Forget stages that are not part of this run (e.g. after changing ``finetune.method``); from now on
        the stages are listed in the order of ``names`` (run order), also those recorded later."""
        self._order = list(names)
        self.stages = {n: self.stages[n] for n in names if n in self.stages}
        self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, {"stages": [{"name": name, **info} for name, info in self.stages.items()]})


def read_stages(path: Path) -> dict[str, dict[str, Any]]:
    """The stages recorded in a ``stages.json``, in run order (none when the file is absent)."""
    return {row["name"]: {k: v for k, v in row.items() if k != "name"}
            for row in read_json(path)["stages"]} if path.is_file() else {}
