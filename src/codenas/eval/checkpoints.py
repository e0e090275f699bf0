"""Evaluating checkpoints: `codenas eval model` and the eval stage of `codenas run` both call
``evaluate_checkpoints`` (codenas checkpoints, LoRA adapters or ``hf:DIR``).

Each checkpoint is loaded with ``codenas.model.loading.load_model`` (adapters merged into their base) and
evaluated by ``eval.generate.evaluate_model``. Layout of ``--out``:

- one checkpoint: ``OUT/samples.jsonl``, ``OUT/results.jsonl``, ``OUT/summary.json``;
- several (a glob such as ``'run/step*'``, or the flag repeated): one folder per checkpoint, ``OUT/<name>/``
  with those three files, plus ``OUT/checkpoints.json`` (one row per checkpoint: name, path, step, pass@k,
  and diff pass@k where the problems have differential tests)
  and ``OUT/pass_at_1.png`` (pass@1 against training step).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from pathlib import Path

from codenas.eval.verdicts import shares_text
from codenas.io import CodenasError, atomic_path, atomic_write_json, check_writable, output_lock
from codenas.model.hf import HF_PREFIX
from codenas.names import CHECKPOINTS_TABLE, PASS_AT_1_PLOT
from codenas.progress import say
from codenas.records import Record
from codenas.settings import EvalSettings, JudgeSettings, SamplingSettings

_STEP_DIR = re.compile(r"step(\d+)$")


def expand_checkpoints(specs: Sequence[str]) -> list[str]:
    """Expand globs (``'run/step*'``) and sort each glob's matches by training step, then name."""
    out: list[str] = []
    for spec in specs:
        if spec.startswith(HF_PREFIX) or not glob.has_magic(spec):
            out.append(spec)
            continue
        matches = [m for m in glob.glob(spec) if Path(m).is_dir()]
        if not matches:
            raise CodenasError(f"no checkpoint folder matches {spec!r}")
        out.extend(sorted(matches, key=lambda m: (_step_from_name(m) is None, _step_from_name(m) or 0, m)))
    if len(set(out)) != len(out):
        raise CodenasError("the same checkpoint is listed twice")
    return out


def _step_from_name(spec: str) -> int | None:
    m = _STEP_DIR.search(Path(spec).name)
    return int(m.group(1)) if m else None


def checkpoint_name(spec: str) -> str:
    """A folder name for a checkpoint's results: its directory name (``step200``, ``checkpoint_best``...)."""
    return Path(spec.removeprefix(HF_PREFIX)).resolve().name


def evaluate_checkpoints(specs: Sequence[str], problems: list[Record], out: Path,
                         sampling: SamplingSettings = SamplingSettings(), judge: JudgeSettings = JudgeSettings(),
                         evaluation: EvalSettings = EvalSettings(), device: str = "auto") -> list[dict]:
    """Evaluate every checkpoint on the first ``evaluation.limit`` of ``problems``; returns one row per
    checkpoint (see the module docstring)."""
    from codenas.model.loading import check_loadable

    check_writable(Path(out))
    specs = expand_checkpoints(specs)
    if not specs:
        raise CodenasError("no checkpoint given")
    names = [checkpoint_name(s) for s in specs]
    if len(set(names)) != len(names):
        raise CodenasError("checkpoints must have distinct folder names to share one --out")
    if sampling.samples < 1:
        raise CodenasError(f"samples must be at least 1 to evaluate a model, got {sampling.samples}")
    if not problems:
        raise CodenasError("no problems to evaluate on")
    for spec in specs:  # every input is checked before the output folder is created
        check_loadable(spec)
    with output_lock(out):
        return _evaluate(specs, names, problems, Path(out), sampling, judge, evaluation, device)


def _evaluate(specs: list[str], names: list[str], problems: list[Record], out: Path, sampling: SamplingSettings,
              judge: JudgeSettings, evaluation: EvalSettings, device: str) -> list[dict]:
    """``evaluate_checkpoints`` once its inputs are checked and ``out`` is locked."""
    from codenas.eval.generate import evaluate_model
    from codenas.model.loading import load_model

    benchmark_size = len(problems)
    problems = list(problems)[: evaluation.limit]
    rows = []
    for spec, name in zip(specs, names, strict=True):
        loaded = load_model(spec, device=device)
        say(f"evaluating {spec} on {len(problems)} problems x {sampling.samples} samples")
        target = out if len(specs) == 1 else out / name
        summary = evaluate_model(loaded.model, loaded.tokenizer, problems, target, sampling, judge,
                                 ks=evaluation.ks, eot_id=loaded.eot_id, benchmark_size=benchmark_size)
        step = loaded.meta.get("step", _step_from_name(spec))
        rows.append({"name": name, "checkpoint": spec, "step": step, "pass_at_k": summary["pass_at_k"],
                     "isolation": summary["isolation"],
                     "n_problems": summary["n_problems"], "n_samples": summary["n_samples"],
                     "verdicts": summary["verdicts"], "parse_rate": summary["parse_rate"]})
        if "base_pass_at_k" in summary:  # HumanEval+ / MBPP+
            rows[-1]["base_pass_at_k"] = summary["base_pass_at_k"]
        if "diff_pass_at_k" in summary:  # held-out problems with differential tests (`data build`)
            rows[-1]["diff_pass_at_k"] = summary["diff_pass_at_k"]
        del loaded  # one model in memory at a time
    if len(specs) > 1:
        atomic_write_json(out / CHECKPOINTS_TABLE, rows)
        plot_pass_at_1(rows, out / PASS_AT_1_PLOT)
    return rows


def plot_pass_at_1(rows: list[dict], path: Path) -> None:
    """A PNG of pass@1 (in %) against training step; checkpoints without a step are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted((r["step"], 100 * r["pass_at_k"]["pass@1"]) for r in rows if r["step"] is not None)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([s for s, _ in points], [p for _, p in points], marker="o")
    ax.set_xlabel("training step")
    ax.set_ylabel("pass@1 (%)")
    ax.set_ylim(0, max(5.0, 1.1 * max((p for _, p in points), default=0.0)))
    ax.set_title(f"pass@1 on {rows[0]['n_problems']} problems")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def results_table(rows: list[dict]):
    """A rich Table of pass@k per checkpoint, for the CLI to print."""
    from rich.table import Table

    ks = sorted({k for r in rows for k in r["pass_at_k"]}, key=lambda k: int(k.split("@")[1]))
    isolation = ", ".join(sorted({r["isolation"] for r in rows if r.get("isolation")}))
    table = Table(title=f"{rows[0]['n_problems']} problems" + (f" (sandbox: {isolation})" if isolation else ""))
    table.add_column("checkpoint")
    table.add_column("step", justify="right")
    base = any("base_pass_at_k" in r for r in rows)  # EvalPlus's base and base + plus figures side by side
    diff = any("diff_pass_at_k" in r for r in rows)  # and the differential tests' figure beside pass@k
    for k in ks:
        if base:
            table.add_column(f"{k} base", justify="right")
        table.add_column(f"{k} base+plus" if base else k, justify="right")
        if diff:
            table.add_column(f"{k} +diff", justify="right")
    table.add_column("verdicts (share of samples)")
    for r in rows:
        cells = []
        for k in ks:
            if base:
                cells.append(_pct(r.get("base_pass_at_k", {}).get(k)))
            cells.append(_pct(r["pass_at_k"].get(k)))
            if diff:
                cells.append(_pct(r.get("diff_pass_at_k", {}).get(k)))
        table.add_row(r["name"], "-" if r["step"] is None else str(r["step"]), *cells, shares_text(r))
    return table
