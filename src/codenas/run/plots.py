"""The report's PNG plots (matplotlib, no GUI backend): loss curves, pass@k before/after, pass@1 vs step, verdicts.

Percentages read at zero: a percentage axis starts at 0 (never below), and every bar carries its value, so a
bar of height zero is still drawn (as its outline) and labelled.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from codenas.io import atomic_path

Series = dict[str, list[tuple[float, float]]]  # label -> [(step, value), ...]


def plot_curves(path: Path, panels: dict[str, Series], *, ylabel: str, percent: bool = False) -> Path:
    """One panel per title, each with one line per labelled series of (step, value) points; with ``percent`` the
    y axis runs from 0 to at least 5%."""
    fig = Figure(figsize=(5.0 * len(panels), 3.6), dpi=100, layout="constrained")
    for ax, (title, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True):
        for label, points in series.items():
            steps, values = zip(*points, strict=True) if points else ((), ())
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=label)
        if percent:
            top = max([v for points in series.values() for _, v in points], default=0.0)
            ax.set_ylim(0, max(5.0, 1.15 * top))
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
        values = [groups[label].get(model, 0.0) for label in labels]
        bars = ax.bar(xs, values, width, label=model, edgecolor=f"C{i}", linewidth=2)
        ax.bar_label(bars, [f"{v:.1f}%" for v in values], padding=2, fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max([5.0] + [v for g in groups.values() for v in g.values()]) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


VERDICT_COLOURS = {"passed": "#2e7d32", "wrong answer": "#f9a825", "runtime error": "#ef6c00",
                   "syntax error": "#c62828", "timeout": "#6a1b9a", "empty": "#9e9e9e"}


def plot_stacked(path: Path, rows: dict[str, dict[str, float]], *, xlabel: str) -> Path:
    """One horizontal bar per row (e.g. "mini · lora"), split into its parts (percentages adding up to 100),
    each part labelled with its share when there is room."""
    labels = list(rows)[::-1]  # first row on top
    parts = list(dict.fromkeys(p for shares in rows.values() for p in shares))
    fig = Figure(figsize=(8.0, 0.55 * len(labels) + 1.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    left = [0.0] * len(labels)
    for j, part in enumerate(parts):
        widths = [rows[label].get(part, 0.0) for label in labels]
        bars = ax.barh(labels, widths, left=left, label=part, color=VERDICT_COLOURS.get(part, f"C{j}"))
        ax.bar_label(bars, [f"{w:.0f}%" if w >= 6 else "" for w in widths], label_type="center", fontsize=8,
                     color="white")
        left = [a + w for a, w in zip(left, widths, strict=True)]
    ax.set_xlim(0, 100)
    ax.set_xlabel(xlabel)
    ax.legend(ncols=min(len(parts), 6), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, fontsize=8)
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path
