"""Reading a run folder for the report: each stage's outputs, read once through the reader of the module that wrote
them (``run.config``, ``run.cache``, ``data.build``, ``train.loop``, ``train.improve``, ``eval.scoring``) and the
names of ``codenas.names``, so that the report can be rebuilt from any finished or partial run; and the training
records indexed for the copying check."""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path
from typing import Any

from codenas.benchmarks import BENCHMARKS
from codenas.data.benchmarks import NO_MBPP, NO_MBPP_FIX, load_problems
from codenas.data.build import read_manifest
from codenas.data.decontam import normalised_solution
from codenas.eval.scoring import read_results, read_summary
from codenas.eval.verdicts import classify
from codenas.io import CodenasError, read_json
from codenas.names import (
    BASE_MODEL,
    EVAL_DIR,
    IMPROVE_STAGE,
    PLOTS_DIR,
    RESULT,
    STAGES_FILE,
    TRAIN_RECORDS,
    TRAIN_STAGES,
    data_folder,
    eval_folder,
    eval_stage,
)
from codenas.records import Record, read_records
from codenas.run.cache import read_stages
from codenas.run.config import read_resolved_config
from codenas.train import improve as improve_mod
from codenas.train.loop import read_metrics

COPY_NGRAM = 3  # the copying check compares normalised bodies as sets of token 3-grams


class RunView:
    """The outputs of one run folder, each read once through its writer's reader."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.plots = self.out / PLOTS_DIR
        self.config = read_resolved_config(self.out)
        self.stages = read_stages(self.out / STAGES_FILE)
        self.manifest = read_manifest(data_folder(self.out))
        self.metrics = {stage: read_metrics(self.out / stage) for stage in TRAIN_STAGES}
        self.results_of = {stage: read_json_if(self.out / stage / RESULT) for stage in (*TRAIN_STAGES, IMPROVE_STAGE)}
        self.rounds = improve_mod.read_rounds(self.out / IMPROVE_STAGE)
        self.summaries = eval_summaries(self.out)
        self.models = list(self.summaries)
        self.benchmarks = list(dict.fromkeys(b for per_bench in self.summaries.values() for b in per_bench))
        self.finetuned = [m for m in self.models if m != BASE_MODEL]
        self._problems: dict[str, dict[str, Record] | None] = {}
        self._results: dict[tuple[str, str], list[dict]] = {}
        self._training: dict[tuple[str, ...], TrainingIndex] = {}

    def results(self, model: str, bench: str) -> list[dict]:
        """Judged samples of ``model`` on ``bench`` (each with its verdict class)."""
        if (model, bench) not in self._results:
            self._results[model, bench] = [
                {**row, "verdict": row.get("verdict") or classify(row["completion"], row["status"], row["detail"],
                                                                  row.get("cut_reason"))}
                for row in read_results(eval_folder(self.out, model, bench))]
        return self._results[model, bench]

    def problems(self, bench: str) -> dict[str, Record] | None:
        """The benchmark's problems by id, as the eval stage loaded them (None when they cannot be loaded)."""
        if bench not in self._problems:
            try:
                records = load_problems(bench, data_folder(self.out))
                self._problems[bench] = {r.id: r for r in records} | {
                    r.meta["task_id"]: r for r in records if isinstance(r.meta.get("task_id"), str)}
            except CodenasError:
                self._problems[bench] = None
        return self._problems[bench]

    def benchmark_size(self, bench: str) -> int | None:
        """Problems in the benchmark file the data stage wrote."""
        counts = (self.manifest or {}).get("benchmarks", {}).get(bench, {})
        return counts.get("records")

    def skipped(self) -> dict[str, tuple[str, str]]:
        """Benchmarks the config lists that have no evaluation: name -> (reason, what to do)."""
        listed = (self.config or {}).get("eval", {}).get("benchmarks", [])
        no_mbpp = self.manifest is not None and self.manifest.get("inputs", {}).get("mbpp") is None
        out = {}
        for bench in listed:
            if bench in self.benchmarks:
                continue
            if no_mbpp and bench in BENCHMARKS and BENCHMARKS[bench].needs_mbpp:
                out[bench] = (NO_MBPP, NO_MBPP_FIX)
            else:
                out[bench] = ("its evaluation has not run yet", "run the same command again to finish the run")
        return out

    def solved(self, model: str, bench: str) -> dict[str, tuple[int, int]]:
        """task_id -> (passing samples, samples)."""
        counts: dict[str, tuple[int, int]] = {}
        for row in self.results(model, bench):
            c, n = counts.get(row["task_id"], (0, 0))
            counts[row["task_id"]] = (c + int(row["passed"]), n + 1)
        return counts

    def solved_diff(self, model: str, bench: str) -> dict[str, int]:
        """task_id -> samples that pass the differential tests too (the benchmark's tests alone where the problem
        has none: ``diff_passed`` null, or absent in results of older versions)."""
        counts: dict[str, int] = {}
        for row in self.results(model, bench):
            diff = row.get("diff_passed")
            counts[row["task_id"]] = counts.get(row["task_id"], 0) + int(row["passed"] if diff is None else diff)
        return counts

    def training_files(self, model: str) -> tuple[list[Path], str]:
        """The record files ``model`` was fine-tuned on (its stage's ``train_files``, else the data stage's
        train.jsonl) and a phrase saying which."""
        listed = (self.results_of.get(model) or {}).get("train_files")
        if isinstance(listed, list) and listed:
            paths = [Path(f["path"]) for f in listed if isinstance(f, dict) and isinstance(f.get("path"), str)]
            return paths, f"the records the {model} stage trained on ({', '.join(f'`{p.name}`' for p in paths)})"
        train = data_folder(self.out) / TRAIN_RECORDS
        if model == BASE_MODEL:
            return [train], ("the data stage's training records (the base model was not fine-tuned; its pretraining "
                             "corpus is decontaminated)")
        return [train], f"the data stage's `{TRAIN_RECORDS}`"

    def training_index(self, paths: list[Path]) -> TrainingIndex:
        """The records of ``paths`` (those that can be read), indexed for the copying check."""
        key = tuple(str(p) for p in paths)
        if key not in self._training:
            records: list[Record] = []
            for path in paths:
                try:
                    records += read_records(path)
                except (CodenasError, OSError):
                    continue
            self._training[key] = TrainingIndex(records)
        return self._training[key]

    def changes(self, model: str, bench: str) -> tuple[list[str], list[str]]:
        """Problems ``model`` newly solves and newly breaks on ``bench``, compared with the base model."""
        if model == BASE_MODEL or bench not in self.summaries.get(BASE_MODEL, {}):
            return [], []
        before, after = self.solved(BASE_MODEL, bench), self.solved(model, bench)
        gained = sorted(t for t in after if after[t][0] > 0 and before.get(t, (0, 0))[0] == 0)
        lost = sorted(t for t in before if before[t][0] > 0 and after.get(t, (0, 0))[0] == 0)
        return gained, lost


def read_json_if(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


class TrainingIndex:
    """Training records by the token 3-grams of their normalised bodies (``data.decontam``), to find the one
    nearest a completion."""

    def __init__(self, records: list[Record]):
        self.records = records
        self.tokens = [normalised_solution(r.solution) for r in records]
        self.grams = [_grams(t) for t in self.tokens]
        self.index: dict[tuple[str, ...], list[int]] = {}
        for i, grams in enumerate(self.grams):
            for gram in grams:
                self.index.setdefault(gram, []).append(i)

    def nearest(self, completion: str) -> tuple[Record, float, float] | None:
        """(the record whose body shares the largest share of 3-grams with the completion's (Jaccard), that
        share, and difflib's similarity ratio of the two token sequences); None when none shares a 3-gram."""
        tokens = normalised_solution(completion)
        grams = _grams(tokens)
        shared = Counter(i for gram in grams for i in self.index.get(gram, ()))
        if not shared:
            return None
        best = max(shared, key=lambda i: (shared[i] / (len(grams) + len(self.grams[i]) - shared[i]), -i))
        jaccard = shared[best] / (len(grams) + len(self.grams[best]) - shared[best])
        ratio = difflib.SequenceMatcher(None, tokens, self.tokens[best], autojunk=False).ratio()
        return self.records[best], jaccard, ratio


def _grams(tokens: tuple[str, ...]) -> set[tuple[str, ...]]:
    if len(tokens) <= COPY_NGRAM:
        return {tokens} if tokens else set()
    return {tokens[i:i + COPY_NGRAM] for i in range(len(tokens) - COPY_NGRAM + 1)}


def eval_summaries(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> benchmark -> summary.json for every evaluation under out/eval, in run order (base model first)."""
    eval_dir = Path(out) / EVAL_DIR
    found = [p for p in eval_dir.glob("*/*") if p.is_dir() and read_summary(p) is not None] \
        if eval_dir.is_dir() else []
    run_order = {name: i for i, name in enumerate(read_stages(Path(out) / STAGES_FILE))}
    found.sort(key=lambda d: (d.parent.name != BASE_MODEL,
                              run_order.get(eval_stage(d.parent.name, d.name), 1 << 30), d.parent.name, d.name))
    summaries: dict[str, dict[str, dict[str, Any]]] = {}
    for folder in found:
        summary = read_summary(folder)
        if summary is not None:  # found holds only folders with one
            summaries.setdefault(folder.parent.name, {})[folder.name] = summary
    return summaries
