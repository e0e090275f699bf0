"""What a search leaves behind: the ranked table of trials, the Pareto front, the plot and the best architecture.

Everything is rebuilt from the Optuna study (the storage is the source of truth, so trials run by other workers
on a shared database appear too) and written atomically:

- ``trials.jsonl``: one row per trial, ranked: complete trials by held-out loss, then pruned ones (furthest
  evaluation first, then loss at that point), then infeasible ones (too big or too slow, never trained), then
  failed or still running ones.
- ``pareto.png``: held-out loss against parameters (log scale); the Pareto front of complete trials (no other
  trial is both smaller and better) is marked and joined.
- ``best_arch.json``: the arch of the complete trial with the lowest loss, ready for ``codenas train pretrain``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from codenas.io import atomic_path, atomic_write_json, write_jsonl
from codenas.search.space import optimizer_of, shape_of

ARCH_COLUMNS = ("n_layer", "n_head", "d_model", "d_ff", "context_length", "dropout", "position", "norm", "mlp",
                "qk_norm", "n_kv_head")
_STATE_ORDER = {"complete": 0, "pruned": 1, "infeasible": 2, "failed": 3, "running": 4, "waiting": 5}


def _state(trial: FrozenTrial) -> str:
    if trial.state == TrialState.PRUNED and "infeasible" in trial.user_attrs:
        return "infeasible"
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
            TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[trial.state]


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One table row: the trial's state, loss (final for complete trials, last reported for pruned ones), size,
    latency, arch fields, how far it trained, and why it was infeasible."""
    attrs = trial.user_attrs
    last_eval = max(trial.intermediate_values, default=None)
    if trial.state == TrialState.COMPLETE:
        loss = trial.value
    else:
        loss = trial.intermediate_values[last_eval] if last_eval is not None else None
    return {
        "trial": trial.number,
        "state": _state(trial),
        "val_loss": loss,
        "params": attrs.get("params"),
        "latency_ms": attrs.get("latency_ms"),
        **(shape_of(trial.params) or dict.fromkeys(ARCH_COLUMNS)),
        "optimizer": optimizer_of(trial.params),
        "evals": last_eval or 0,
        "tokens": attrs.get("tokens"),
        "reason": attrs.get("infeasible", ""),
    }


def _rank_key(row: dict[str, Any]) -> tuple:
    def known(value: float | None) -> float:
        return float("inf") if value is None else value

    return (_STATE_ORDER[row["state"]], -row["evals"], known(row["val_loss"]), known(row["params"]), row["trial"])


def pareto_front(rows: list[dict[str, Any]]) -> set[int]:
    """Trial numbers of the complete rows that no other complete row beats on both parameters and loss."""
    complete = sorted((r for r in rows if r["state"] == "complete"), key=lambda r: (r["params"], r["val_loss"]))
    front, best_loss = set(), float("inf")
    for r in complete:
        if r["val_loss"] < best_loss:
            front.add(r["trial"])
            best_loss = r["val_loss"]
    return front


def ranked_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """All trials of ``study`` as ranked rows, each with its ``rank`` (1 = best) and a ``pareto`` flag."""
    rows = sorted((trial_row(t) for t in study.get_trials(deepcopy=False)), key=_rank_key)
    front = pareto_front(rows)
    return [{"rank": i, **r, "pareto": r["trial"] in front} for i, r in enumerate(rows, start=1)]


def plot_pareto(path: Path, rows: list[dict[str, Any]], *, max_params: int | None = None) -> Path:
    """Loss vs parameters: complete trials (Pareto front highlighted and joined), pruned ones at their last loss."""
    fig = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    for state, style in (("pruned", {"marker": "x", "color": "0.6"}), ("complete", {"marker": "o", "color": "C0"})):
        points = [(r["params"], r["val_loss"]) for r in rows if r["state"] == state and r["val_loss"] is not None]
        if points:
            ax.scatter(*zip(*points, strict=True), s=22, label=f"{state} ({len(points)})", **style)
    front = sorted((r["params"], r["val_loss"]) for r in rows if r["pareto"])
    if front:
        ax.plot(*zip(*front, strict=True), drawstyle="steps-post", color="C3", linewidth=1.2)
        ax.scatter(*zip(*front, strict=True), s=60, facecolors="none", edgecolors="C3", label="Pareto front")
    if max_params is not None:
        ax.axvline(max_params, color="0.3", linestyle="--", linewidth=1, label="--max-params")
    not_shown = sum(r["state"] not in ("complete", "pruned") for r in rows)
    ax.set_title(f"architecture search: {len(rows)} trials ({not_shown} infeasible or unfinished, not shown)",
                 fontsize="medium")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("held-out loss (proxy run)")
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best complete trial's row (ranked first: lowest loss, ties to fewer parameters), or None."""
    return next((r for r in rows if r["state"] == "complete"), None)


def write_outputs(study: optuna.Study, out: Path, *, max_params: int | None = None) -> list[dict[str, Any]]:
    """Write ``trials.jsonl``, ``pareto.png`` and (once a trial completed) ``best_arch.json``; return the rows."""
    rows = ranked_rows(study)
    write_jsonl(out / "trials.jsonl", rows)
    plot_pareto(out / "pareto.png", rows, max_params=max_params)
    best = best_row(rows)
    if best is not None:
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == best["trial"])
        atomic_write_json(out / "best_arch.json", trial.user_attrs["arch"])
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# printed column -> (row field, format); short headers keep the table within 80 columns
_TABLE_COLUMNS = {"#": ("rank", "d"), "trial": ("trial", "d"), "state": ("state", "s"), "loss": ("val_loss", ".4f"),
                  "params": ("params", ",d"), "ms/tok": ("latency_ms", ".2f"), "L": ("n_layer", "d"),
                  "H": ("n_head", "d"), "d_model": ("d_model", "d"), "d_ff": ("d_ff", "d"),
                  "ctx": ("context_length", "d"), "drop": ("dropout", ".2f"), "layout": ("layout", "s"),
                  "opt": ("optimizer", "s")}


def _layout(row: dict[str, Any]) -> str | None:
    """A short name of a row's layout: ``gpt2``, else e.g. ``rope+rms+swiglu+qk+kv2``."""
    if row.get("position") is None:
        return None
    parts = [row["position"] if row["position"] != "learned" else "",
             "rms" if row["norm"] == "rmsnorm" else "", "swiglu" if row["mlp"] == "swiglu" else "",
             "qk" if row["qk_norm"] else "", f"kv{row['n_kv_head']}" if row["n_kv_head"] != row["n_head"] else ""]
    return "+".join(p for p in parts if p) or "gpt2"


def rows_table(rows: list[dict[str, Any]], *, limit: int | None = 20) -> Table:
    """A rich table of the first ``limit`` ranked rows (all with None); Pareto-front trials are starred."""
    shown = rows if limit is None else rows[:limit]
    table = Table(title="architecture search, best first", caption="* on the Pareto front (loss vs params)",
                  box=None, padding=(0, 1, 0, 0), pad_edge=False)
    for header in _TABLE_COLUMNS:
        table.add_column(header, justify="left" if header == "state" else "right", no_wrap=True)
    for r in shown:
        r = {**r, "layout": _layout(r)}
        cells = [_fmt(r.get(field), spec) for field, spec in _TABLE_COLUMNS.values()]
        cells[0] += "*" if r["pareto"] else " "
        table.add_row(*cells)
    return table
