"""What a search leaves behind: the ranked table of trials, the Pareto front, the plot and the best architecture.

Everything is rebuilt from the Optuna study (the storage is the source of truth, so trials run by other workers
on a shared database appear too) and written atomically:

- ``trials.jsonl``: one row per trial, ranked: complete trials by held-out loss, then pruned ones (furthest
  evaluation first, then loss at that point), then infeasible ones (too big or too slow, never trained), then
  repeats (a shape trained already, proposed again and not trained), then failed or still running ones.
- ``pareto.json``: the Pareto front, the complete trials that no other complete trial dominates (at least as good
  on every objective, better on one), lowest loss first, each as ``{"number", "values", "arch", "optimizer"}``
  with ``values`` in the order of the study's objectives; a loss-only study's front is over (loss, params).
- ``pareto.png``: held-out loss against the second objective of the front (parameters by default; log scale);
  the front is marked (and joined, for two objectives).
- ``best_arch.json``: the arch of the complete trial with the lowest loss, ready for ``codenas train pretrain``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from codenas.io import CodenasError, atomic_path, atomic_write_json, write_jsonl
from codenas.names import BEST_ARCH, PARETO_FILE, PARETO_PLOT, TRIALS
from codenas.search.space import optimizer_of, shape_of

ARCH_COLUMNS = ("n_layer", "n_head", "d_model", "d_ff", "context_length", "dropout", "bias", "position", "norm",
                "mlp", "qk_norm", "n_kv_head")
_STATE_ORDER = {"complete": 0, "pruned": 1, "infeasible": 2, "repeat": 3, "failed": 4, "running": 5, "waiting": 6}
# objective -> the row field (and trial user attribute) holding a trial's value of it
OBJECTIVE_FIELDS = {"loss": "val_loss", "params": "params", "flops": "flops", "latency": "latency_ms"}
_AXIS_LABELS = {"params": "parameters", "flops": "forward FLOPs per token", "latency": "ms per generated token"}

def front_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    """The objectives the Pareto front is over: the study's, or (loss, params) for a loss-only study."""
    return tuple(objectives) if len(objectives) > 1 else ("loss", "params")


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` is at least as low as ``b`` everywhere and lower somewhere (every objective minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def _state(trial: FrozenTrial) -> str:
    if trial.state == TrialState.PRUNED and "infeasible" in trial.user_attrs:
        return "infeasible"
    if trial.state == TrialState.PRUNED and "repeat_of" in trial.user_attrs:
        return "repeat"
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
            TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[trial.state]


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One table row: the trial's state, loss (final for complete trials, last reported for pruned ones), size,
    latency, arch fields, how far it trained, and why it was infeasible."""
    attrs = trial.user_attrs
    # a multi-objective trial cannot report to Optuna: its curve (loss at each evaluation) is an attribute
    curve = dict(trial.intermediate_values) or dict(enumerate(attrs.get("curve", []), start=1))
    last_eval = max(curve, default=None)
    if trial.state == TrialState.COMPLETE:
        loss = trial.values[0]
    else:
        loss = curve[last_eval] if last_eval is not None else None
    return {
        "trial": trial.number,
        "state": _state(trial),
        "val_loss": loss,
        "proxy_val_loss": attrs.get("proxy_val_loss"),  # with extrapolation: the proxy's own final loss
        "params": attrs.get("params"),
        "latency_ms": attrs.get("latency_ms"),
        "flops": attrs.get("flops"),
        **(shape_of(trial.params) or dict.fromkeys(ARCH_COLUMNS)),
        "optimizer": optimizer_of(trial.params),
        "evals": last_eval or 0,
        "tokens": attrs.get("tokens"),
        "reason": attrs.get("infeasible") or (f"same shape as trial {attrs['repeat_of']}" if "repeat_of" in attrs
                                              else ""),
    }


def _rank_key(row: dict[str, Any]) -> tuple:
    def known(value: float | None) -> float:
        return float("inf") if value is None else value

    return (_STATE_ORDER[row["state"]], -row["evals"], known(row["val_loss"]), known(row["params"]), row["trial"])


def row_values(row: dict[str, Any], objectives: Sequence[str]) -> list[float] | None:
    """A row's values of ``objectives`` (None when one is unknown: not complete, or not measured)."""
    values: list[Any] = [row.get(OBJECTIVE_FIELDS[name]) for name in objectives]
    return None if row["state"] != "complete" or None in values else values


def pareto_front(rows: list[dict[str, Any]], objectives: Sequence[str] = ("loss", "params")) -> set[int]:
    """Trial numbers of the complete rows that no other complete row dominates on ``objectives``."""
    scored = [(r["trial"], v) for r in rows if (v := row_values(r, objectives)) is not None]
    return {n for n, v in scored if not any(dominates(other, v) for _, other in scored)}


def ranked_rows(study: optuna.Study, objectives: Sequence[str] = ("loss",)) -> list[dict[str, Any]]:
    """All trials of ``study`` as ranked rows, each with its ``rank`` (1 = best) and a ``pareto`` flag (on the
    front over ``front_objectives(objectives)``)."""
    rows = sorted((trial_row(t) for t in study.get_trials(deepcopy=False)), key=_rank_key)
    front = pareto_front(rows, front_objectives(objectives))
    return [{"rank": i, **r, "pareto": r["trial"] in front} for i, r in enumerate(rows, start=1)]


def front_entries(study: optuna.Study, rows: list[dict[str, Any]], objectives: Sequence[str]) -> list[dict]:
    """The entries of ``pareto.json``: each front trial's number, values (in the order of the front's
    objectives), arch and optimizer, lowest loss first."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    front = front_objectives(objectives)
    return [{"number": r["trial"], "values": row_values(r, front), "arch": trials[r["trial"]].user_attrs["arch"],
             "optimizer": r["optimizer"]} for r in rows if r["pareto"]]


def read_front(out: Path) -> list[dict]:
    """The entries of ``OUT/pareto.json`` ([] before any trial completed)."""
    path = Path(out) / PARETO_FILE
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CodenasError(f"not valid JSON: {e.msg}", path, e.lineno) from None


def plot_pareto(path: Path, rows: list[dict[str, Any]], *, max_params: int | None = None,
                objectives: Sequence[str] = ("loss",)) -> Path:
    """Loss vs the front's second objective: complete trials (the Pareto front highlighted, and joined when it is
    over two objectives), pruned ones at their last loss."""
    front_over = front_objectives(objectives)
    x_field = OBJECTIVE_FIELDS[front_over[1]]
    fig = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    for state, marker, color in (("pruned", "x", "0.6"), ("complete", "o", "C0")):
        points = [(r[x_field], r["val_loss"]) for r in rows
                  if r["state"] == state and r["val_loss"] is not None and r[x_field] is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=22, label=f"{state} ({len(points)})", marker=marker, color=color)
    front = sorted((r[x_field], r["val_loss"]) for r in rows if r["pareto"])
    if front:
        if len(front_over) == 2:
            ax.plot(*zip(*front, strict=True), drawstyle="steps-post", color="C3", linewidth=1.2)
        xs, ys = zip(*front, strict=True)
        ax.scatter(xs, ys, s=60, facecolors="none", edgecolors="C3",
                   label=f"Pareto front ({', '.join(front_over)})")
    if max_params is not None and x_field == "params":
        ax.axvline(max_params, color="0.3", linestyle="--", linewidth=1, label="--max-params")
    not_shown = sum(r["state"] not in ("complete", "pruned") for r in rows)
    ax.set_title(f"architecture search: {len(rows)} trials ({not_shown} infeasible or unfinished, not shown)",
                 fontsize="medium")
    ax.set_xscale("log")
    ax.set_xlabel(_AXIS_LABELS[front_over[1]])
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


def write_outputs(study: optuna.Study, out: Path, *, max_params: int | None = None,
                  objectives: Sequence[str] = ("loss",)) -> list[dict[str, Any]]:
    """Write ``trials.jsonl``, ``pareto.json``, ``pareto.png`` and (once a trial completed) ``best_arch.json``;
    return the rows."""
    rows = ranked_rows(study, objectives)
    write_jsonl(out / TRIALS, rows)
    atomic_write_json(out / PARETO_FILE, front_entries(study, rows, objectives))
    plot_pareto(out / PARETO_PLOT, rows, max_params=max_params, objectives=objectives)
    best = best_row(rows)
    if best is not None:
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == best["trial"])
        atomic_write_json(out / BEST_ARCH, trial.user_attrs["arch"])
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


def rows_table(rows: list[dict[str, Any]], *, limit: int | None = 20, objectives: Sequence[str] = ("loss",)) -> Table:
    """A rich table of the first ``limit`` ranked rows (all with None); Pareto-front trials are starred."""
    shown = rows if limit is None else rows[:limit]
    table = Table(title="architecture search, best first",
                  caption=f"* on the Pareto front ({', '.join(front_objectives(objectives))})",
                  box=None, padding=(0, 1, 0, 0), pad_edge=False)
    for header in _TABLE_COLUMNS:
        table.add_column(header, justify="left" if header == "state" else "right", no_wrap=True)
    for r in shown:
        r = {**r, "layout": _layout(r)}
        cells = [_fmt(r.get(field), spec) for field, spec in _TABLE_COLUMNS.values()]
        cells[0] += "*" if r["pareto"] else " "
        table.add_row(*cells)
    return table
