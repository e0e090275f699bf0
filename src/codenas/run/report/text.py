"""The report's building blocks and the small formatters its sections share."""

from __future__ import annotations

import math
import re
from typing import Any

Block = tuple  # ("h1" | "h2" | "h3" | "p", text) | ("code", text, lang) | ("table", headers, rows) | ("img", path, alt)
_PASS_KEY = re.compile(r"^pass@(\d+)$")
PROMPT_TAIL_LINES = 4  # lines of the prompt shown above a sample's completion
COMPLETION_LINES = 20  # lines of a completion shown at most
SAMPLES_SHOWN = 4  # samples per benchmark and model besides the newly solved or broken problems
CHANGES_SHOWN = 5  # newly solved and newly broken problems shown at most, each


def series_points(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    points = []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float) and isinstance(row.get("step"), int | float) and math.isfinite(value):
            points.append((row["step"], float(value)))
    return points


def pass_values(summary: dict[str, Any]) -> dict[int, float]:
    return {int(m.group(1)): float(v) for k, v in summary["pass_at_k"].items()
            if (m := _PASS_KEY.match(k)) and isinstance(v, int | float)}


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return ", ".join(f"{k}: {fmt_value(v)}" for k, v in value.items()) if isinstance(value, dict) else \
            ", ".join(fmt_value(v) for v in value)
    return str(value)


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def fmt_cn(counts: tuple[int, int] | None) -> str:
    return "-" if counts is None else f"{counts[0]}/{counts[1]}"


def fmt_count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def fmt_params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def count_solved(counts: dict[str, int]) -> int:
    return sum(1 for c in counts.values() if c)


def clip(text: str, width: int) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else text[: width - 1] + "…"


def prompt_tail(prompt: str) -> list[str]:
    """The prompt's last ``def`` line (the function to write), then its last lines."""
    lines = prompt.rstrip().splitlines()
    tail = lines[-PROMPT_TAIL_LINES:]
    start = len(lines) - len(tail)
    signature = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].lstrip().startswith("def ")), None)
    head = []
    if signature is not None and signature < start:
        head = [lines[signature]] + (["    ..."] if signature < start - 1 else [])
    return [clip(line, 120) for line in head + tail]
