"""The run report: ``OUT/report.md`` and a self-contained ``OUT/report.html`` (images as data URIs), with plots.

Everything is read back from the run folder, so the report can be rebuilt from any finished (or partial) run:
``config.resolved.toml``, ``stages.json``, ``data/manifest.json``, ``<train stage>/metrics.jsonl`` and
``eval/<model>/<benchmark>/{summary.json,results.jsonl}``. The report is first built as a list of blocks
(headings, paragraphs, tables, images) and then written twice, as Markdown and as HTML, so both say the same.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any

from codenas.io import atomic_write_text, read_json, read_jsonl
from codenas.run import plots, system
from codenas.run.cache import read_stages

TRAIN_STAGES = ("pretrain", "sft", "lora")
BASE_MODEL = "base"
SECTIONS = ("Configuration", "Data", "Pretraining corpus", "Loss curves", "pass@k before and after fine-tuning",
            "pass@1 vs step", "Per-problem changes", "Hardware", "Versions", "Wall time per stage")
# data manifest counts in pipeline order (manifest.json stores keys sorted)
_COUNT_ORDER = ("input", "held_out", "unused_prompt_split", "candidates", "unconvertible", "too_long", "too_complex",
                "failed_proof", "null_body_pass", "contaminated", "records", "train", "val")
_PASS_KEY = re.compile(r"^pass@(\d+)$")

Block = tuple  # ("h1" | "h2" | "p" | "code", text) | ("table", headers, rows) | ("img", path, alt)


def write_report(out: Path, *, hardware: dict[str, str] | None = None,
                 versions: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write ``out/report.md``, ``out/report.html`` and ``out/plots/*.png``; return the two report paths."""
    blocks: list[Block] = [("h1", f"codenas run report: {out.name}")]
    blocks += _configuration(out)
    blocks += _data(out)
    blocks += _corpus(out)
    blocks += _loss_curves(out)
    blocks += _passk(out)
    blocks += _pass1_vs_step(out)
    blocks += _per_problem(out)
    blocks += _key_values("Hardware", hardware if hardware is not None else system.hardware())
    blocks += _key_values("Versions", versions if versions is not None else system.versions())
    blocks += _wall_time(out)
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, render_markdown(blocks))
    atomic_write_text(html_path, render_html(blocks, title=f"codenas run report: {out.name}"))
    return md_path, html_path


# --- sections ---------------------------------------------------------------------------------------------------


def _configuration(out: Path) -> list[Block]:
    path = out / "config.resolved.toml"
    text = path.read_text(encoding="utf-8") if path.is_file() else "(no config.resolved.toml)"
    return [("h2", "Configuration"), ("p", "The resolved configuration (preset, then --config, then overrides); "
                                         "pass it back with `--config` to repeat the run."), ("code", text)]


def _data(out: Path) -> list[Block]:
    """The data manifest: inputs, counts per source and per filter rule, benchmark files, output sizes."""
    blocks: list[Block] = [("h2", "Data")]
    path = out / "data" / "manifest.json"
    if not path.is_file():
        return blocks + [("p", "No data manifest (the data stage has not run).")]
    manifest = read_json(path)
    inputs = [[name, info.get("file", "-"), info.get("sha256", "-")[:16]] if info else [name, "not used", "-"]
              for name, info in manifest.get("inputs", {}).items()]
    blocks.append(("table", ["input", "file", "sha256 (prefix)"], inputs))
    counts = manifest.get("counts", {})
    found = {rule for per_source in counts.values() for rule in per_source}
    rules = [r for r in _COUNT_ORDER if r in found] + sorted(found - set(_COUNT_ORDER))
    blocks.append(("p", "Records per source, as each filter rule removes them (a record is counted under the first "
                        "rule it fails):"))
    blocks.append(("table", ["count"] + list(counts),
                   [[rule] + [_fmt(per_source.get(rule)) for per_source in counts.values()] for rule in rules]))
    benchmarks = manifest.get("benchmarks", {})
    found = {c for per_bench in benchmarks.values() for c in per_bench}
    columns = [c for c in _COUNT_ORDER if c in found] + sorted(found - set(_COUNT_ORDER))
    if benchmarks:
        blocks.append(("p", "Held-out benchmarks (never trained on):"))
        blocks.append(("table", ["benchmark"] + columns,
                       [[name] + [_fmt(b.get(c)) for c in columns] for name, b in benchmarks.items()]))
    sizes = manifest.get("sizes", {})
    settings = {**{k: manifest.get(k) for k in ("seed", "val_size", "holdout")}, **manifest.get("rules", {})}
    blocks.append(("p", "Files: " + ", ".join(f"`{name}` {n}" for name, n in sizes.items()) + ". Settings: "
                        + ", ".join(f"{k} = {str(v).strip()!r}" if isinstance(v, str) else f"{k} = {v}"
                                    for k, v in settings.items()) + "."))
    return blocks


def _corpus(out: Path) -> list[Block]:
    """The corpus manifest: per source and per rule the documents and bytes dropped, tokens per split."""
    from codenas.corpus.build import RULES
    from codenas.run.stages import corpus_folder

    blocks: list[Block] = [("h2", "Pretraining corpus")]
    path = corpus_folder(out) / "manifest.json"
    if not path.is_file():
        return blocks + [("p", "No corpus manifest (the corpus stage has not run).")]
    manifest = read_json(path)
    sources = manifest["sources"]
    found = {rule for s in sources.values() for rule in s["dropped"]}
    rules = [r for r in RULES if r in found] + sorted(found - set(RULES))  # pipeline order (the JSON is sorted)
    rows = [["files"] + [_fmt(s["files"]) for s in sources.values()],
            ["documents in"] + [_fmt(s["in"]["docs"]) for s in sources.values()]]
    rows += [[f"dropped: {rule}"] + [_fmt(s["dropped"].get(rule, {}).get("docs")) for s in sources.values()]
             for rule in rules]
    rows += [["documents kept"] + [_fmt(s["out"]["docs"]) for s in sources.values()],
             ["MB in / kept"] + [f"{s['in']['bytes'] / 1e6:.1f} / {s['out']['bytes'] / 1e6:.1f}"
                                 for s in sources.values()]]
    blocks.append(("p", "Documents per source, as each rule removes them (counted under the first rule that drops "
                        "them):"))
    blocks.append(("table", ["count"] + list(sources), rows))
    tokens, docs = manifest["tokens"], manifest["documents"]
    matches = ", ".join(f"`{d}` ({b})" for d, b in list(manifest["contaminated"].items())[:10])
    blocks.append(("p", f"Tokens: {tokens['train']:,} train ({docs['train']:,} documents) / {tokens['val']:,} val "
                        f"({docs['val']:,} documents), {manifest['dtype']}, {len(manifest['shards'])} shards. "
                        f"Benchmark matches dropped: {len(manifest['contaminated'])}"
                        + (f": {matches}" if matches else "") + "."))
    return blocks


def _loss_curves(out: Path) -> list[Block]:
    blocks: list[Block] = [("h2", "Loss curves")]
    panels: dict[str, plots.Series] = {}
    for stage in TRAIN_STAGES:
        rows = read_metrics(out / stage / "metrics.jsonl")
        series = {label: _points(rows, keys) for label, keys in (("train", ("train_loss", "loss")),
                                                                 ("val", ("val_loss",)))}
        series = {label: points for label, points in series.items() if points}
        if series:
            panels[stage] = series
    if not panels:
        return blocks + [("p", "No training metrics yet.")]
    png = plots.plot_curves(out / "plots" / "loss_curves.png", panels, ylabel="loss (nats/token)")
    blocks.append(("img", png, "train and validation loss per training stage"))
    rows = []
    for stage, series in panels.items():
        val = series.get("val", [])
        best = min(val, key=lambda p: p[1]) if val else None
        train_last = series["train"][-1][1] if "train" in series else None
        rows.append([stage, _fmt(train_last), _fmt(val[-1][1] if val else None),
                     f"{_fmt(best[1])} (step {int(best[0])})" if best else "-"])
    blocks.append(("table", ["stage", "final train loss", "final val loss", "best val loss"], rows))
    return blocks


def _passk(out: Path) -> list[Block]:
    blocks: list[Block] = [("h2", "pass@k before and after fine-tuning")]
    summaries = eval_summaries(out)
    if not summaries:
        return blocks + [("p", "No evaluation results yet.")]
    ks = sorted({k for per_bench in summaries.values() for s in per_bench.values() for k in _pass_values(s)})
    models = list(summaries)
    benchmarks = list(dict.fromkeys(b for per_bench in summaries.values() for b in per_bench))
    rows = []
    for bench in benchmarks:
        for model in models:
            summary = summaries[model].get(bench)
            if summary is not None:
                values = _pass_values(summary)
                rows.append([bench, model, _fmt(summary.get("n_problems", summary.get("problems")))]
                            + [_pct(values.get(k)) for k in ks])
    blocks.append(("table", ["benchmark", "model", "problems"] + [f"pass@{k}" for k in ks], rows))
    levels = sorted({s["isolation"] for per_bench in summaries.values() for s in per_bench.values()
                     if s.get("isolation")})
    if levels:
        blocks.append(("p", f"Samples judged in the sandbox with isolation {', '.join(levels)} "
                            "(docs/sandbox.md says what each level guarantees)."))
    groups = {f"{bench} pass@{k}": {m: 100 * _pass_values(summaries[m][bench]).get(k, 0.0) for m in models
                                    if bench in summaries[m]} for bench in benchmarks for k in ks}
    png = plots.plot_bars(out / "plots" / "passk.png", groups, ylabel="pass@k (%)")
    blocks.append(("img", png, "pass@k per benchmark, base model and fine-tuned models"))
    return blocks


def _pass1_vs_step(out: Path) -> list[Block]:
    blocks: list[Block] = [("h2", "pass@1 vs step")]
    panels: dict[str, plots.Series] = {}
    for stage in TRAIN_STAGES[1:]:
        points = _points(read_metrics(out / stage / "metrics.jsonl"), ("pass@1", "val_pass@1"))
        if points:
            panels[stage] = {"pass@1 (validation problems)": points}
    if not panels:
        return blocks + [("p", "No pass@1 evaluations logged during fine-tuning.")]
    panels = {stage: {label: [(step, 100 * v) for step, v in points] for label, points in series.items()}
              for stage, series in panels.items()}
    png = plots.plot_curves(out / "plots" / "pass1_vs_step.png", panels, ylabel="pass@1 (%)")
    blocks.append(("img", png, "pass@1 on validation problems during fine-tuning"))
    rows = [[stage, str(int(step)), f"{value:.1f}%"] for stage, series in panels.items()
            for points in series.values() for step, value in points]
    blocks.append(("table", ["stage", "step", "pass@1"], rows))
    return blocks


def _per_problem(out: Path) -> list[Block]:
    blocks: list[Block] = [("h2", "Per-problem changes")]
    solved = {model: {bench: per_problem(out / "eval" / model / bench / "results.jsonl") for bench in benches}
              for model, benches in eval_summaries(out).items()}
    if BASE_MODEL not in solved or len(solved) < 2:
        return blocks + [("p", "Needs evaluations of the base model and of a fine-tuned model.")]
    blocks.append(("p", "A problem counts as solved when at least one sample passes; c/n = passing samples / "
                        "samples."))
    for model in [m for m in solved if m != BASE_MODEL]:
        for bench, after in solved[model].items():
            before = solved[BASE_MODEL].get(bench, {})
            gained = sorted(t for t in after if after[t][0] > 0 and before.get(t, (0, 0))[0] == 0)
            lost = sorted(t for t in before if before[t][0] > 0 and after.get(t, (0, 0))[0] == 0)
            both = sum(1 for t in after if after[t][0] > 0 and before.get(t, (0, 0))[0] > 0)
            blocks.append(("p", f"**{bench}, {model} vs base**: {len(gained)} newly solved, {len(lost)} no longer "
                                f"solved, {both} solved by both, out of {len(after)} problems."))
            rows = [[t, "solved after, not before", _cn(before.get(t)), _cn(after.get(t))] for t in gained]
            rows += [[t, "solved before, not after", _cn(before.get(t)), _cn(after.get(t))] for t in lost]
            if rows:
                blocks.append(("table", ["problem", "change", "base c/n", f"{model} c/n"], rows))
    return blocks


def _key_values(title: str, values: dict[str, str]) -> list[Block]:
    return [("h2", title), ("table", ["", ""], [[k, str(v)] for k, v in values.items()])]


def _wall_time(out: Path) -> list[Block]:
    blocks: list[Block] = [("h2", "Wall time per stage")]
    stages = read_stages(out / "stages.json")
    if not stages:
        return blocks + [("p", "No stages recorded.")]
    rows = [[name, _duration(s.get("wall_s")), s.get("status", "?"), s.get("key", "")[:12]]
            for name, s in stages.items()]
    total = sum(s.get("wall_s") or 0.0 for s in stages.values())
    rows.append(["total", _duration(total), "", ""])
    blocks.append(("p", "Wall time of the run that produced each stage's output (a cached stage keeps it)."))
    blocks.append(("table", ["stage", "wall time", "status (last run)", "cache key"], rows))
    return blocks


# --- reading the run folder ------------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl (a torn last line is ignored); none when the file is absent."""
    return [row for _, row in read_jsonl(path, allow_torn_tail=True)] if path.is_file() else []


def eval_summaries(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> benchmark -> summary.json for every evaluation under out/eval, in run order (base model first)."""
    eval_dir = out / "eval"
    found = [p.parent for p in eval_dir.glob("*/*/summary.json")] if eval_dir.is_dir() else []
    run_order = {name: i for i, name in enumerate(read_stages(out / "stages.json"))}
    found.sort(key=lambda d: (d.parent.name != BASE_MODEL, run_order.get(f"eval/{d.parent.name}/{d.name}", 1 << 30),
                              d.parent.name, d.name))
    summaries: dict[str, dict[str, dict[str, Any]]] = {}
    for folder in found:
        summaries.setdefault(folder.parent.name, {})[folder.name] = read_json(folder / "summary.json")
    return summaries


def per_problem(results: Path) -> dict[str, tuple[int, int]]:
    """task_id -> (passing samples, samples) from a judge results.jsonl."""
    counts: dict[str, tuple[int, int]] = {}
    for row in read_metrics(results):
        passed = row.get("passed", row.get("status") == "passed")
        c, n = counts.get(row["task_id"], (0, 0))
        counts[row["task_id"]] = (c + int(bool(passed)), n + 1)
    return counts


def _points(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[tuple[float, float]]:
    points = []
    for row in rows:
        value = next((row[k] for k in keys if isinstance(row.get(k), int | float)), None)
        if value is not None and isinstance(row.get("step"), int | float) and math.isfinite(value):
            points.append((row["step"], float(value)))
    return points


def _pass_values(summary: dict[str, Any]) -> dict[int, float]:
    source = summary.get("pass_at_k", summary)
    return {int(m.group(1)): float(v) for k, v in source.items()
            if (m := _PASS_KEY.match(k)) and isinstance(v, int | float)}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) if isinstance(value, dict) else \
            ", ".join(_fmt(v) for v in value)
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _cn(counts: tuple[int, int] | None) -> str:
    return "-" if counts is None else f"{counts[0]}/{counts[1]}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)} min {secs:.1f} s" if minutes else f"{secs:.1f} s"


# --- rendering ---------------------------------------------------------------------------------------------------


def render_markdown(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            parts.append(f"{'#' * int(kind[1])} {block[1]}")
        elif kind == "p":
            parts.append(block[1])
        elif kind == "code":
            parts.append(f"```toml\n{block[1].rstrip()}\n```")
        elif kind == "table":
            parts.append(_markdown_table(block[1], block[2]))
        elif kind == "img":
            parts.append(f"![{block[2]}](plots/{block[1].name})")
    return "\n\n".join(parts) + "\n"


def render_html(blocks: list[Block], *, title: str) -> str:
    """HTML with the same content; images are embedded as base64 data URIs, styles inline (no external files)."""
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(block[1].read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}"></p>')
    style = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;"
             "text-align:left}th{background:#f3f3f3}pre{background:#f6f6f6;padding:.8em;overflow:auto}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """Escape, then render the two inline Markdown forms the report uses: **bold** and `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)
