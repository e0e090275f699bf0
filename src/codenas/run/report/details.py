"""The report's details: a copying check that puts each solved problem's passing completion beside the nearest
training record, loss curves, pass@1 during fine-tuning, expert iteration, per-problem changes, the data and corpus
manifests, configuration, hardware, versions and wall time. Each section is a list of blocks."""

from __future__ import annotations

from codenas.corpus.build import RULES as CORPUS_RULES
from codenas.corpus.build import read_manifest as read_corpus_manifest
from codenas.names import (
    BASE_MODEL,
    FINETUNE_INFO,
    IMPROVE_STAGE,
    LOSS_PLOT,
    PASS1_VS_STEP_PLOT,
    RESOLVED_CONFIG,
    TRAIN_STAGES,
    corpus_folder,
)
from codenas.progress import format_duration
from codenas.run import plots
from codenas.run.config import dumps_toml
from codenas.run.report.read import COPY_NGRAM, RunView, read_json_if
from codenas.run.report.text import (
    COMPLETION_LINES,
    Block,
    clip,
    fmt_cn,
    fmt_count,
    fmt_pct,
    fmt_value,
    prompt_tail,
    series_points,
)

# data manifest counts in pipeline order (manifest.json stores keys sorted)
_COUNT_ORDER = ("input", "held_out", "unused_prompt_split", "candidates", "unconvertible", "too_long", "too_complex",
                "failed_proof", "null_body_pass", "contaminated", "records", "train", "val")


def copying_section(run: RunView) -> list[Block]:
    """Every solved problem's passing completion beside the training record whose normalised body is nearest."""
    blocks: list[Block] = [("h2", "Copying check")]
    solved = [(model, bench, task) for bench in run.benchmarks for model in run.models
              if bench in run.summaries[model] for task, (c, _) in run.solved(model, bench).items() if c]
    if not solved:
        return blocks + [("p", "No held-out problem was solved, so there is nothing to check.")]
    blocks.append(("p", f"For every held-out problem a model solved: a passing completion (one that also passes the "
                        f"differential tests where there is one) beside the training record nearest to it. Bodies "
                        f"are compared after the data stage's normalisation (code tokens: no layout, no comments; "
                        f"`data.decontam`) as sets of token {COPY_NGRAM}-grams (Jaccard similarity, which picks the "
                        f"nearest record) and as token sequences (difflib's ratio). 1.0 means the same normalised "
                        f"body; a copied answer would score near it, but so may a body of a few tokens "
                        f"(`return min(xs)`) that many problems share, so read the code beside the figures."))
    rows, shown = [], []
    for model, bench, task in solved:
        paths, what = run.training_files(model)
        index = run.training_index(paths)
        passing = [r for r in run.results(model, bench) if r["task_id"] == task and r["passed"]]
        row = next((r for r in passing if r.get("diff_passed") is True), passing[0])
        near = index.nearest(row["completion"])
        c, n = run.solved(model, bench)[task]
        diff = run.solved_diff(model, bench)[task]
        record_id = near[0].id if near else "-"
        rows.append([task, bench, model, f"{c}/{n}", f"{diff}/{n}", record_id,
                     "-" if near is None else f"{near[1]:.2f}", "-" if near is None else f"{near[2]:.2f}"])
        shown.append((model, bench, task, row, near, what, len(index.records)))
    blocks.append(("table", ["problem", "benchmark", "model", "passing samples", "passing + differential",
                             "nearest training record", f"{COPY_NGRAM}-gram Jaccard", "difflib ratio"], rows))
    highest = max(((near[1], task, model) for model, _, task, _, near, _, _ in shown if near), default=None)
    if highest:
        blocks.append(("p", f"Highest Jaccard similarity: {highest[0]:.2f} ({highest[1]}, {highest[2]})."))
    problems = {bench: run.problems(bench) for bench in run.benchmarks}
    for model, bench, task, row, near, what, size in shown:
        problem = (problems.get(bench) or {}).get(task)
        head = f"**{task}** ({bench}), solved by {model}; nearest of {size:,} records in {what}: "
        head += f"`{near[0].id}`" if near else "none shares a token 3-gram"
        text = "\n".join(prompt_tail(problem.prompt) if problem else ["# (prompt not found)"])
        text += f"\n# ---- passing completion ({model}) ----\n" + _clipped_body(row["completion"])
        if near:
            text += (f"\n# ---- nearest training record {near[0].id} (Jaccard {near[1]:.2f}, ratio {near[2]:.2f}) "
                     f"----\n" + _signature(near[0].prompt) + _clipped_body(near[0].solution))
        blocks += [("p", head), ("code", text, "python")]
    return blocks


def _signature(prompt: str) -> str:
    """The prompt's last ``def`` line (the function the record's body belongs to), with a newline; or nothing."""
    lines = [line for line in prompt.splitlines() if line.lstrip().startswith("def ")]
    return clip(lines[-1], 120) + "\n" if lines else ""


def _clipped_body(text: str) -> str:
    lines = text.rstrip().splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    shown = [clip(line, 120) for line in lines[:COMPLETION_LINES]]
    if len(lines) > COMPLETION_LINES:
        shown.append(f"# ... {len(lines) - COMPLETION_LINES} more lines")
    return "\n".join(shown) if shown else "# (empty)"


def loss_curves_section(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "Loss curves")]
    panels: dict[str, plots.Series] = {}
    for stage in TRAIN_STAGES:
        series = {label: series_points(run.metrics[stage], key)
                  for label, key in (("train", "loss"), ("val", "val_loss"))}
        series = {label: points for label, points in series.items() if points}
        if series:
            panels[stage] = series
    if not panels:
        return blocks + [("p", "No training metrics yet.")]
    png = plots.plot_curves(run.plots / LOSS_PLOT, panels, ylabel="loss (nats/token)")
    blocks.append(("img", png, "train and validation loss per training stage"))
    rows = []
    for stage, series in panels.items():
        val = series.get("val", [])
        best = min(val, key=lambda p: p[1]) if val else None
        train_last = series["train"][-1][1] if "train" in series else None
        rows.append([stage, fmt_value(train_last), fmt_value(val[-1][1] if val else None),
                     f"{fmt_value(best[1])} (step {int(best[0])})" if best else "-"])
    blocks.append(("table", ["stage", "final train loss", "final val loss", "best val loss"], rows))
    return blocks


def pass1_vs_step_section(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "pass@1 vs step")]
    panels: dict[str, plots.Series] = {}
    for stage in TRAIN_STAGES[1:]:
        points = series_points(run.metrics[stage], "val_pass@1")
        if points:
            panels[stage] = {"pass@1 (validation problems)": [(step, 100 * v) for step, v in points]}
    if not panels:
        return blocks + [("p", "No pass@1 evaluations logged during fine-tuning.")]
    finetune = (run.config or {}).get("finetune", {})
    limit, samples = finetune.get("eval_limit"), finetune.get("eval_samples", 1)
    what = f"the first {limit} validation records" if limit else "every validation record"
    each = "one sample each" if samples == 1 else f"{samples} samples each"
    blocks.append(("p", f"pass@1 on {what} ({each}) at each evaluation during fine-tuning; the best "
                        "checkpoint is the one with the most passing samples, ties broken by the lower val loss."))
    png = plots.plot_curves(run.plots / PASS1_VS_STEP_PLOT, panels, ylabel="pass@1 (%)", percent=True)
    blocks.append(("img", png, "pass@1 on validation problems during fine-tuning"))
    rows = [[stage, str(int(step)), f"{value:.1f}%"] for stage, series in panels.items()
            for points in series.values() for step, value in points]
    blocks.append(("table", ["stage", "step", "pass@1"], rows))
    return blocks


def expert_iteration_section(run: RunView) -> list[Block]:
    """The rounds of the improve stage (``train.improve``'s rounds.jsonl): the pool solved, what was kept, val."""
    blocks: list[Block] = [("h2", "Expert iteration")]
    if not run.rounds:
        return blocks + [("p", "No expert-iteration rounds (improve.rounds = 0, or the stage has not run).")]
    result = run.results_of[IMPROVE_STAGE] or {}
    pool = result.get("pool", {})
    sources = ", ".join(f"{n:,} {source}" for source, n in pool.get("sources", {}).items())
    limit = (run.config or {}).get(IMPROVE_STAGE, {}).get("pool_limit") or 0
    which = f"a seeded draw of {limit} of the pool's problems" if limit else "every pool problem"
    blocks.append(("p", f"Each round samples {which} (the pool: {pool.get('problems', '?')} problems"
                        + (f": {sources}" if sources else "") + "), keeps the distinct passing completions (at most "
                        "`improve.cap` per problem), fine-tunes on them with a replay share of the train records, "
                        "and measures the val records. Round 0 is the starting model. The round best on the val "
                        f"records (round {result.get('best_round', '?')}) is the `{IMPROVE_STAGE}` model evaluated "
                        "on the held-out benchmarks; the rounds' models are never run on them."))
    rows = []
    for row in run.rounds:
        k = row["samples"]
        pass_k = (row["pass_at_k"] or {}).get(f"pass@{k}")
        rows.append([str(row["round"]), "-" if row["solved"] is None else f"{row['solved']}/{row['pool_problems']}",
                     "-" if pass_k is None else f"{fmt_pct(pass_k)} (K={k})", str(row["kept"]),
                     str(row["new_problems"]), str(row["replay"]), fmt_value(row["train_loss"]),
                     fmt_value(row["val_loss"]), fmt_pct(row["val_pass@1"]), format_duration(row["wall_s"])])
    blocks.append(("table", ["round", "pool problems solved", "pool pass@K", "samples kept", "new problems",
                             "replay records", "train loss", "val loss", "val pass@1", "wall time"], rows))
    if not any(row["kept"] for row in run.rounds):
        blocks.append(("p", "**No round had a passing sample to learn from**: the starting model solves nothing in "
                            "the pool. Expert iteration needs a model that passes some pool problems at K samples: "
                            "more samples per problem, easier problems in the pool (mined functions proven by "
                            "their doctests), or a stronger starting model."))
    return blocks


def changes_section(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "Per-problem changes")]
    if BASE_MODEL not in run.summaries or not run.finetuned:
        return blocks + [("p", "Needs evaluations of the base model and of a fine-tuned model.")]
    blocks.append(("p", "A problem counts as solved when at least one sample passes; c/n = passing samples / "
                        "samples."))
    for model in run.finetuned:
        for bench in run.summaries[model]:
            before, after = run.solved(BASE_MODEL, bench), run.solved(model, bench)
            gained, lost = run.changes(model, bench)
            both = sum(1 for t in after if after[t][0] > 0 and before.get(t, (0, 0))[0] > 0)
            blocks.append(("p", f"**{bench}, {model} vs base**: {len(gained)} newly solved, {len(lost)} no longer "
                                f"solved, {both} solved by both, out of {len(after)} problems."))
            rows = [[t, "solved after, not before", fmt_cn(before.get(t)), fmt_cn(after.get(t))] for t in gained]
            rows += [[t, "solved before, not after", fmt_cn(before.get(t)), fmt_cn(after.get(t))] for t in lost]
            if rows:
                blocks.append(("table", ["problem", "change", "base c/n", f"{model} c/n"], rows))
    return blocks


def data_section(run: RunView) -> list[Block]:
    """The data manifest: inputs, counts per source and per filter rule, benchmark files, output sizes."""
    blocks: list[Block] = [("h2", "Data")]
    manifest = run.manifest
    if manifest is None:
        return blocks + [("p", "No data manifest (the data stage has not run).")]
    inputs = [[name, info.get("file", "-"), info.get("sha256", "-")[:16]] if info else [name, "not used", "-"]
              for name, info in manifest.get("inputs", {}).items()]
    blocks.append(("table", ["input", "file", "sha256 (prefix)"], inputs))
    counts = manifest.get("counts", {})
    found = {rule for per_source in counts.values() for rule in per_source}
    rules = [r for r in _COUNT_ORDER if r in found] + sorted(found - set(_COUNT_ORDER))
    blocks.append(("p", "Records per source, as each filter rule removes them (a record is counted under the first "
                        "rule it fails):"))
    blocks.append(("table", ["count"] + list(counts),
                   [[rule] + [fmt_value(per_source.get(rule)) for per_source in counts.values()] for rule in rules]))
    benchmarks = manifest.get("benchmarks", {})
    found = {c for per_bench in benchmarks.values() for c in per_bench}
    columns = [c for c in _COUNT_ORDER if c in found] + sorted(found - set(_COUNT_ORDER))
    if benchmarks:
        blocks.append(("p", "Held-out benchmarks (never trained on):"))
        blocks.append(("table", ["benchmark"] + columns,
                       [[name] + [fmt_value(b.get(c)) for c in columns] for name, b in benchmarks.items()]))
    sizes = manifest.get("sizes", {})
    settings = {**{k: manifest.get(k) for k in ("seed", "val_size", "holdout")}, **manifest.get("rules", {})}
    blocks.append(("p", "Files: " + ", ".join(f"`{name}` {n}" for name, n in sizes.items()) + ". Settings: "
                        + ", ".join(f"{k} = {str(v).strip()!r}" if isinstance(v, str) else f"{k} = {v}"
                                    for k, v in settings.items()) + "."))
    return blocks + _finetune_drops(run)


def _finetune_drops(run: RunView) -> list[Block]:
    """The records each fine-tuning stage left out, per split and reason (train: not trained on; val: left out of
    the val loss, still sampled for pass@1)."""
    rows = []
    for stage in TRAIN_STAGES[1:]:
        info = read_json_if(run.out / stage / FINETUNE_INFO)
        if not info or "dropped" not in info:
            continue
        for split, meaning in (("train", "not trained on"), ("val", "left out of the val loss")):
            total = (info.get("records") or {}).get(split)
            drops = info["dropped"].get(split) or {}
            used = (info.get("examples") or {}).get(split)
            reasons = ", ".join(f"{reason}: {n}" for reason, n in drops.items() if n) or "none"
            rows.append([stage, split, fmt_count(total), fmt_count(used),
                         f"{reasons}" + (f" ({meaning})" if drops else "")])
    if not rows:
        return []
    return [("p", "Records each fine-tuning stage used, and those it left out with the reason:"),
            ("table", ["stage", "split", "records", "used", "dropped"], rows)]


def corpus_section(run: RunView) -> list[Block]:
    """The corpus manifest: per source and per rule the documents and bytes dropped, tokens per split."""
    blocks: list[Block] = [("h2", "Pretraining corpus")]
    manifest = read_corpus_manifest(corpus_folder(run.out))
    if manifest is None:
        return blocks + [("p", "No corpus manifest (the corpus stage has not run).")]
    sources = manifest["sources"]
    found = {rule for s in sources.values() for rule in s["dropped"]}
    rules = [r for r in CORPUS_RULES if r in found] + sorted(found - set(CORPUS_RULES))  # pipeline order
    rows = [["files"] + [fmt_value(s["files"]) for s in sources.values()]]
    if any(s.get("unreadable") for s in sources.values()):
        rows.append(["unreadable files skipped"] + [fmt_value(len(s.get("unreadable", []))) for s in sources.values()])
    rows.append(["documents in"] + [fmt_value(s["in"]["docs"]) for s in sources.values()])
    rows += [[f"dropped: {rule}"] + [fmt_value(s["dropped"].get(rule, {}).get("docs")) for s in sources.values()]
             for rule in rules]
    rows += [["documents kept"] + [fmt_value(s["out"]["docs"]) for s in sources.values()],
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


def configuration_section(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "Configuration")]
    if run.config is None:
        return blocks + [("p", f"(no {RESOLVED_CONFIG})")]
    return blocks + [("p", f"The resolved configuration (preset, then --config, then overrides), as "
                           f"`{RESOLVED_CONFIG}`; pass it back with `--config` to repeat the run."),
                     ("code", dumps_toml(run.config), "toml")]


def key_values_section(title: str, header: tuple[str, str], values: dict[str, str]) -> list[Block]:
    return [("h2", title), ("table", list(header), [[k, str(v)] for k, v in values.items()])]


def wall_time_section(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "Wall time per stage")]
    if not run.stages:
        return blocks + [("p", "No stages recorded.")]
    rows = [[name, format_duration(s.get("wall_s")), s.get("status", "?"), s.get("key", "")[:12]]
            for name, s in run.stages.items()]
    total = sum(s.get("wall_s") or 0.0 for s in run.stages.values())
    rows.append(["total", format_duration(total), "", ""])
    blocks.append(("p", "Wall time of the run that produced each stage's output (a cached stage keeps it)."))
    blocks.append(("table", ["stage", "wall time", "status (last run)", "cache key"], rows))
    return blocks
