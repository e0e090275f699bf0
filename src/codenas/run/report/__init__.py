"""The run report: ``OUT/report.md`` and a self-contained ``OUT/report.html`` (images as data URIs), with plots.

It opens with a summary a newcomer can read (what was trained, the headline table, one sentence on what the
numbers mean), then shows what the models wrote (verdict classes, sample completions), then the details (pass@k,
problems solved by the benchmark's tests and under its differential tests, loss curves, per-problem changes,
a copying check that puts each solved problem's passing completion beside the nearest training record, data,
configuration, hardware, wall time).

Three steps, one module each: ``read`` reads the run folder back through the readers of the modules that wrote it
(so the report can be rebuilt from any finished or partial run); ``sections`` and ``details`` build the sections as
lists of blocks (headings, paragraphs, tables, code, images; ``text`` holds the block type and the formatters they
share); ``render`` writes the blocks twice, as Markdown and as HTML, so both say the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from codenas.io import atomic_write_text
from codenas.names import REPORT_HTML, REPORT_MD
from codenas.run import system
from codenas.run.report.details import (
    changes_section,
    configuration_section,
    copying_section,
    corpus_section,
    data_section,
    expert_iteration_section,
    key_values_section,
    loss_curves_section,
    pass1_vs_step_section,
    wall_time_section,
)
from codenas.run.report.read import RunView
from codenas.run.report.render import render_html, render_markdown
from codenas.run.report.sections import (
    passk_section,
    samples_section,
    solved_section,
    summary_section,
    verdicts_section,
)
from codenas.run.report.text import Block

__all__ = ["write_report"]

# the sections read from the run folder, in the report's order (hardware, versions and wall time close it)
RUN_SECTIONS: tuple[Callable[[RunView], list[Block]], ...] = (
    summary_section, verdicts_section, samples_section, passk_section, solved_section, loss_curves_section,
    pass1_vs_step_section, expert_iteration_section, changes_section, copying_section, data_section,
    corpus_section, configuration_section)


def write_report(out: Path, *, hardware: dict[str, str] | None = None,
                 versions: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write ``out/report.md``, ``out/report.html`` and ``out/plots/*.png``; return the two report paths."""
    run = RunView(out)
    blocks: list[Block] = [("h1", f"codenas run report: {out.name}")]
    for section in RUN_SECTIONS:
        blocks += section(run)
    blocks += key_values_section("Hardware", ("component", "value"),
                                 hardware if hardware is not None else system.hardware())
    blocks += key_values_section("Versions", ("package", "version"),
                                 versions if versions is not None else system.versions())
    blocks += wall_time_section(run)
    md_path, html_path = out / REPORT_MD, out / REPORT_HTML
    atomic_write_text(md_path, render_markdown(blocks))
    atomic_write_text(html_path, render_html(blocks, title=f"codenas run report: {out.name}"))
    return md_path, html_path
