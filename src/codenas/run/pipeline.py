"""``codenas run``: chain data -> corpus -> pretrain -> sft and/or lora -> improve -> eval -> report, cached.

``run_pipeline`` resolves the configuration, plans the stages the config asks for (``stages.plan``), and runs
each one unless its folder already holds a ``.done`` with the same cache key (``run.cache``). A stage interrupted
by Ctrl-C resumes in place on the next run; a stage whose key changed (its config, an upstream stage, an input
file) reruns, and so does everything downstream, since their keys include its key. Layout of ``OUT``::

    config.resolved.toml  stages.json  report.md  report.html  plots/*.png
    data/  corpus/  pretrain/  sft/  lora/  improve/  eval/<model>/<benchmark>/

(``corpus/built/`` holds the corpus and the run's tokenizer, trained by the corpus build on its sources.)

Under ``torchrun`` every process plans the same stages and keys. Rank 0 runs the pipeline; the other ranks only
join the training stages (DDP), each after waiting, by polling the ``.done`` files, for the stages it consumes.
No collective is held open while rank 0 works alone (data build, evaluation), so no process-group timeout applies
there; if rank 0 fails, torchrun stops the others. The process group is created by the first training stage and
kept until the process exits, so one launch runs every stage.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codenas.io import atomic_write_text, output_lock
from codenas.names import REPORT_MD, STAGES_FILE
from codenas.progress import say
from codenas.run import cache
from codenas.run.config import RESOLVED_CONFIG, dumps_toml, load_run_config
from codenas.run.stages import Stage, plan

POLL_S = 2.0


def default_out(preset: str | os.PathLike) -> Path:
    """``runs/<preset name>`` (the file stem when the preset is given as a path)."""
    return Path("runs") / Path(preset).stem


def run_pipeline(*, preset: str | os.PathLike = "tiny", out: Path | None = None,
                 config_file: Path | None = None, mbpp: Path | None = None,
                 overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run (or resume, or skip as cached) every stage into ``out``; returns ``{"out", "report", "stages"}``.

    ``stages`` maps each stage name to ``{"key", "status", "wall_s", "finished"}`` where ``status`` is ``ran``,
    ``resumed`` or ``cached`` for this invocation (the same as ``OUT/stages.json``; empty on torchrun ranks > 0).
    """
    config = load_run_config(preset, config_file, list(overrides))
    out = Path(out) if out is not None else default_out(preset)
    stages = plan(config, out, mbpp)
    keys = stage_keys(stages)
    result = {"out": out, "report": out / REPORT_MD, "stages": {}}
    from codenas.train.distributed import context

    if not context().is_main:
        _join_training_stages(stages, keys)
        return result
    with output_lock(out):
        return _run_stages(config, out, stages, keys, result)


def _run_stages(config: dict, out: Path, stages: list[Stage], keys: dict[str, str],
                result: dict[str, Any]) -> dict[str, Any]:
    """Rank 0's part of ``run_pipeline``, holding the run folder's lock."""
    atomic_write_text(out / RESOLVED_CONFIG, dumps_toml(config))
    log = cache.StageLog(out / STAGES_FILE)
    log.keep_only([s.name for s in stages])
    for i, stage in enumerate(stages, start=1):
        key, where = keys[stage.name], f"[{i}/{len(stages)}] {stage.name}"
        if cache.is_done(stage.folder, key):
            say(f"{where}: cached ({key[:12]})")
            log.record(stage.name, key, "cached")
            continue
        resume = cache.begin(stage.folder, key)
        say(f"{where}: {'resuming' if resume else 'running'} ({key[:12]})")
        start = time.perf_counter()
        try:
            stage.action(stage.folder, resume)
        except KeyboardInterrupt:
            say(f"{where}: interrupted; run the same command again to resume it")
            raise
        wall = time.perf_counter() - start
        cache.finish(stage.folder, key)
        log.record(stage.name, key, "resumed" if resume else "ran", wall)
        say(f"{where}: done in {wall:.1f} s")
    return {**result, "stages": log.stages}


def stage_keys(stages: list[Stage]) -> dict[str, str]:
    """Each stage's cache key, in plan order (a stage's key includes the keys of the stages it consumes)."""
    keys: dict[str, str] = {}
    for stage in stages:
        keys[stage.name] = cache.stage_key(stage.name, stage.params, {u: keys[u] for u in stage.upstream},
                                           stage.inputs)
    return keys


def _join_training_stages(stages: list[Stage], keys: dict[str, str]) -> None:
    """A torchrun rank > 0: take part in each training stage that is not done yet, once its inputs are."""
    folders = {s.name: s.folder for s in stages}
    for stage in stages:
        key = keys[stage.name]
        if not stage.distributed or cache.is_done(stage.folder, key):
            continue
        for name in stage.upstream:
            _wait_for(folders[name], keys[name])
        _wait_for(stage.folder, key, started=True)  # rank 0 has prepared the folder (cleared or kept to resume)
        stage.action(stage.folder, True)


def _wait_for(folder: Path, key: str, *, started: bool = False) -> None:
    """Poll until ``folder`` is done with ``key`` (or, with ``started``, at least started with it)."""
    while not (cache.is_done(folder, key) or (started and cache.started_with(folder, key))):
        time.sleep(POLL_S)
