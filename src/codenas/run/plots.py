"""The report's PNG plots (matplotlib, no GUI backend): loss curves, pass@k before/after, pass@1 vs step."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from codenas.io import atomic_path

Series = dict[str, list[tuple[float, float]]]  # label -> [(step, value), ...]


def plot_curves(path: Path, panels: dict[str, Series], *, ylabel: str) -> Path:
    """One panel per title, each with one line per labelled series of (step, value) points."""
    fig = Figure(figsize=(5.0 * len(panels), 3.6), dpi=100, layout="constrained")
    for ax, (title, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True):
        for label, points in series.items():
            steps, values = zip(*points, strict=True) if points else ((), ())
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_bars(path: Path, groups: dict[str, dict[str, float]], *, ylabel: str) -> Path:
    """Grouped bars of percentages: one group per key of ``groups`` (e.g. "mini pass@1"), one bar per model."""
    labels = list(groups)
    models = list(dict.fromkeys(m for values in groups.values() for m in values))
    width = 0.8 / max(len(models), 1)
    fig = Figure(figsize=(max(5.0, 1.4 * len(labels) + 2), 3.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    for i, model in enumerate(models):
        xs = [g + (i - (len(models) - 1) / 2) * width for g in range(len(labels))]
        ax.bar(xs, [groups[label].get(model, 0.0) for label in labels], width, label=model)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max([5.0] + [v for g in groups.values() for v in g.values()]) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path
