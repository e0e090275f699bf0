"""The report's opening and its results: the summary a newcomer can read (what was trained, the headline table, one
sentence on what the numbers mean), what the models wrote (verdict classes, sample completions), pass@k and the
problems solved by the benchmark's tests and under its differential tests. Each section is a list of blocks."""

from __future__ import annotations

from typing import Any

from codenas.benchmarks import description
from codenas.eval.verdicts import LABELS, PARSING, VERDICTS
from codenas.model.config import ArchConfig
from codenas.model.model import describe_layout
from codenas.names import (
    BASE_MODEL,
    FINETUNE_INFO,
    IMPROVE_STAGE,
    PASSK_PLOT,
    PRETRAIN_INFO,
    PRETRAIN_STAGE,
    TRAIN_STAGES,
    VERDICTS_PLOT,
)
from codenas.progress import format_duration
from codenas.records import Record
from codenas.run import plots
from codenas.run.report.read import RunView, read_json_if
from codenas.run.report.text import (
    CHANGES_SHOWN,
    COMPLETION_LINES,
    PROMPT_TAIL_LINES,
    SAMPLES_SHOWN,
    Block,
    clip,
    count_solved,
    fmt_count,
    fmt_params,
    fmt_pct,
    pass_values,
    prompt_tail,
    series_points,
)

# Chen et al. (2021), Table 1: Codex at 12M parameters, trained on ~100B tokens of code, solves 2.0% of HumanEval.
_SMALLEST_CODEX = "a 12M-parameter Codex model trained on about 100B tokens of code solved 2% of HumanEval " \
                  "(Chen et al., 2021)"


def summary_section(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "Summary")]
    blocks += _what_was_trained(run)
    if not run.summaries:
        blocks.append(("p", "No evaluation results yet."))
    else:
        blocks.append(("p", "How the models did on the held-out benchmarks:"))
        blocks.append(("table", *_headline(run)))
        blocks.append(("p", _meaning(run)))
        blocks += [("p", note) for note in _framing_notes(run)]
    for bench, (reason, fix) in run.skipped().items():
        blocks.append(("p", f"**{bench} was skipped**: {reason}. To include it, {fix}."))
    return blocks


def _layout(arch: dict[str, Any]) -> str:
    config = ArchConfig.from_dict(arch)
    return (f"{config.name}: " if config.name else "") + describe_layout(config)


def _tokens_seen(run: RunView, stage: str) -> int | None:
    """Training tokens of a stage: what its library call returned, else the last logged count."""
    results = run.results_of[stage] or {}
    if isinstance(results.get("tokens"), int):
        return results["tokens"]
    rows = [r for r in run.metrics[stage] if isinstance(r.get("tokens"), int)]
    return rows[-1]["tokens"] if rows else None


def _wall(run: RunView, stage: str) -> str:
    return format_duration(run.stages.get(stage, {}).get("wall_s"))


def _what_was_trained(run: RunView) -> list[Block]:
    rows = []
    settings = read_json_if(run.out / PRETRAIN_STAGE / PRETRAIN_INFO)
    result = run.results_of[PRETRAIN_STAGE]
    sentences = []
    if settings and result:
        params = result["params"]
        corpus = settings.get("corpus", {})
        documents = corpus.get("train_documents")
        files = f" ({documents:,} files)" if isinstance(documents, int) else ""
        sentences.append(f"A GPT of {fmt_params(params)} parameters ({_layout(settings['arch'])}) was pretrained from "
                         f"scratch on Python code{files}.")
        rows.append([PRETRAIN_STAGE, "next-token prediction on the code corpus", f"{params:,} (all)",
                     f"{result['steps']:,}", fmt_count(_tokens_seen(run, PRETRAIN_STAGE)), _wall(run, PRETRAIN_STAGE)])
    for stage in TRAIN_STAGES[1:]:
        info = read_json_if(run.out / stage / FINETUNE_INFO)
        result = run.results_of[stage]
        if not info or not result:
            continue
        what = (f"LoRA (rank {info['lora']['rank']}, alpha {info['lora']['alpha']}) on the train records"
                if info.get("lora") else "full fine-tuning on the train records")
        rows.append([stage, what, f"{result['trainable_params']:,} of {result['total_params']:,}",
                     f"{result['steps']:,}", fmt_count(_tokens_seen(run, stage)), _wall(run, stage)])
        sentences.append(f"It was then fine-tuned ({stage}) on {result['train_examples']:,} supervised records"
                         + _drops_text(info, "train", "not trained on") + ".")
    improved = run.results_of[IMPROVE_STAGE]
    if improved:
        trained = [r for r in improved["rows"] if r["trained"]]
        steps = len(trained) * (run.config or {}).get(IMPROVE_STAGE, {}).get("steps", 0) or None
        rows.append([IMPROVE_STAGE, f"expert iteration: {improved['rounds']} rounds of sampling a pool of "
                                    f"{improved['pool']['problems']:,} problems, fine-tuning on the passing samples",
                     "-", fmt_count(steps), "-", _wall(run, IMPROVE_STAGE)])
        sentences.append(f"Then {improved['rounds']} rounds of expert iteration (sample, keep what passes its "
                         f"tests, fine-tune) ran; {len(trained)} of them had passing samples to train on, and the "
                         f"model of round {improved['best_round']} (best on the val records) was kept.")
    if not rows:
        return [("p", "No model has been trained yet.")]
    header = ["stage", "what", "parameters trained", "steps", "tokens seen", "wall time"]
    return [("p", " ".join(sentences)), ("table", header, rows)]


def _drops_text(info: dict, split: str, meaning: str) -> str:
    """``" of the 92 train records (15 not trained on: prompt fills the context 15)"``: the records of ``split`` the
    fine-tuning stage left out, by reason, as its settings file records them; "" when it dropped none."""
    drops = (info.get("dropped") or {}).get(split) or {}
    total = (info.get("records") or {}).get(split)
    if not any(drops.values()):
        return ""
    reasons = ", ".join(f"{reason} {n}" for reason, n in drops.items() if n)
    of = f" of the {total:,} {split} records" if isinstance(total, int) else ""
    return f"{of} ({sum(drops.values()):,} {meaning}: {reasons})"


def _scored(run: RunView, model: str, bench: str) -> str:
    summary = run.summaries[model][bench]
    total = run.benchmark_size(bench)
    n = summary["n_problems"]
    return f"{n} of {total}" if total is not None and total != n else str(n)


def _pass1(summary: dict | None) -> float | None:
    return None if summary is None else pass_values(summary).get(1)


def _headline(run: RunView) -> tuple[list[str], list[list[str]]]:
    """Benchmark, what it is, problems scored of total, samples per problem, pass@1 and parse share per model."""
    header = ["benchmark", "what it is", "problems scored", "samples per problem"]
    for model in run.models:
        header.append(f"{model} pass@1")
    for model in run.finetuned:
        header.append(f"change ({model})")
    header.append("completions that parse (" + " → ".join(run.models) + ")")
    rows = []
    for bench in run.benchmarks:
        models = [m for m in run.models if bench in run.summaries[m]]
        first = run.summaries[models[0]][bench]
        row = [bench, description(bench), _scored(run, models[0], bench),
               str(first["n_samples"] // max(first["n_problems"], 1))]
        base = _pass1(run.summaries.get(BASE_MODEL, {}).get(bench))
        for model in run.models:
            row.append(fmt_pct(_pass1(run.summaries[model].get(bench))))
        for model in run.finetuned:
            value = _pass1(run.summaries[model].get(bench))
            change = None if value is None or base is None else 100 * (value - base)
            row.append("-" if change is None else "no change" if change == 0 else f"{change:+.1f} points")
        row.append(" → ".join(fmt_pct(run.summaries[m][bench].get("parse_rate")) for m in models))
        rows.append(row)
    return header, rows


def _meaning(run: RunView) -> str:
    """One plain sentence (or two) on what the numbers mean, from the data."""
    solved = {(m, b): sum(1 for c, _ in run.solved(m, b).values() if c) for m in run.models for b in run.benchmarks
              if b in run.summaries[m]}
    parts = []
    if not any(solved.values()):
        who = "either model" if len(run.models) == 2 else "any model" if len(run.models) > 2 else "the model"
        parts.append(f"No problem was solved by {who}")
    else:
        parts.append("; ".join(f"{m} solves {n} of {run.summaries[m][b]['n_problems']} {b} problems"
                               + (f" ({count_solved(run.solved_diff(m, b))} under differential tests)"
                                  if "diff_pass_at_k" in run.summaries[m][b] else "")
                               for (m, b), n in solved.items()))
    for model in run.finetuned:
        loss = _val_loss_change(run, model)
        if loss:
            parts.append(f"the {model} model's val loss {loss}")
        shares = [(b, run.summaries[BASE_MODEL][b]["parse_rate"], run.summaries[model][b]["parse_rate"])
                  for b in run.benchmarks if b in run.summaries[model] and b in run.summaries.get(BASE_MODEL, {})]
        for bench, before, after in shares:
            parts.append(f"the share of {bench} completions that parse went from {fmt_pct(before)} (base) to "
                         f"{fmt_pct(after)} ({model})" if after != before else
                         f"the share of {bench} completions that parse stayed at {fmt_pct(after)} ({model} and base)")
    return "; ".join(parts) + "."


def _val_loss_change(run: RunView, stage: str) -> str | None:
    points = series_points(run.metrics.get(stage, []), "val_loss")
    if len(points) < 2:
        return None
    (s0, first), (s1, last) = points[0], points[-1]
    verb = "fell" if last < first else "rose" if last > first else "stayed"
    return f"{verb} from {first:.2f} (step {int(s0)}) to {last:.2f} (step {int(s1)})"


def _framing_notes(run: RunView) -> list[str]:
    notes = []
    params = (run.results_of.get(PRETRAIN_STAGE) or {}).get("params")
    best = max((_pass1(s) or 0.0 for per_bench in run.summaries.values() for s in per_bench.values()), default=0.0)
    if params is not None and best == 0.0 and params < 50e6:
        notes.append(f"A pass@1 of 0% is expected at this size: {_SMALLEST_CODEX}, and this model has "
                     f"{fmt_params(params)} parameters and saw far fewer tokens. The verdict classes below (how many "
                     "completions are empty, do not parse, crash or give a wrong answer) show progress long before "
                     "pass@1 moves.")
    ks = [k for k in (run.config or {}).get("eval", {}).get("ks", []) if isinstance(k, int)]
    samples = (run.config or {}).get("eval", {}).get("samples")
    unmeasured = [k for k in ks if samples is not None and k > samples]
    if unmeasured:
        listed = [f"pass@{k}" for k in unmeasured]
        names = " and ".join([", ".join(listed[:-1]), listed[-1]] if len(listed) > 1 else listed)
        notes.append(f"pass@k is shown only for k ≤ samples per problem: with eval.samples = {samples}, "
                     f"{names} cannot be measured (set eval.samples to at "
                     f"least {max(unmeasured)} to get {'them' if len(unmeasured) > 1 else 'it'}).")
    limit = (run.config or {}).get("eval", {}).get("limit")
    if limit and any(run.benchmark_size(b) and run.benchmark_size(b) > limit for b in run.benchmarks):
        notes.append(f"Subsets: eval.limit = {limit} scores only the first {limit} problems of each benchmark "
                     "(\"problems scored\" says how many of how many); set it to 0 to score them all.")
    return notes


def verdicts_section(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "What the models wrote")]
    if not run.summaries:
        return blocks + [("p", "No evaluation results yet.")]
    blocks.append(("p", "Every sample falls in one class, read from what the sandbox reported: **empty** (the "
                        "model wrote nothing), **cut by post-processing** (the model wrote text, but none of it is a "
                        "function body or code the body needs: the samples below show the raw text and why it was "
                        "cut), **syntax error** (does not compile), **runtime error** (raises before the tests "
                        "finish; the most common exception types follow), **wrong answer** (runs, and a test "
                        "assertion fails), **timeout**, **passed**. A completion *parses* when it is neither empty, "
                        "cut nor a syntax error."))
    header = ["benchmark", "model", "samples", "parses"] + [LABELS[v] for v in VERDICTS] + ["runtime errors"]
    rows, shares = [], {}
    for bench in run.benchmarks:
        for model in run.models:
            summary = run.summaries[model].get(bench)
            if summary is None:
                continue
            counts, n = summary["verdicts"], summary["n_samples"]
            errors = ", ".join(f"{kind} {count}" for kind, count in list(summary["runtime_errors"].items())[:3])
            rows.append([bench, model, str(n), fmt_pct(summary["parse_rate"])]
                        + [f"{counts[v]} ({fmt_pct(counts[v] / n if n else 0.0)})" for v in VERDICTS] + [errors or "-"])
            shares[f"{bench} · {model}"] = {LABELS[v]: 100 * counts[v] / n if n else 0.0 for v in VERDICTS}
    blocks.append(("table", header, rows))
    png = plots.plot_stacked(run.plots / VERDICTS_PLOT, shares, xlabel="share of samples (%)")
    blocks.append(("img", png, "share of samples in each verdict class, per benchmark and model"))
    return blocks


def samples_section(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "Sample completions")]
    if not run.summaries:
        return blocks + [("p", "No evaluation results yet.")]
    blocks.append(("p", f"Per benchmark and model: the problems a fine-tuned model newly solves or newly breaks "
                        f"(compared with the base model), then one sample of each verdict class, up to "
                        f"{SAMPLES_SHOWN}. Each shows the function's signature and the last {PROMPT_TAIL_LINES} "
                        "lines of the prompt, then what the model wrote (after post-processing; its raw text when "
                        "post-processing cut all of it, with the reason), with the sandbox's verdict."))
    for bench in run.benchmarks:
        problems = run.problems(bench)
        changed: dict[str, str] = {}
        for model in run.finetuned:
            gained, lost = run.changes(model, bench)
            changed.update({t: f"newly solved by {model}" for t in gained[:CHANGES_SHOWN]})
            changed.update({t: f"newly broken by {model}" for t in lost[:CHANGES_SHOWN]})
        for model in run.models:
            rows = run.results(model, bench)
            if not rows:
                continue
            blocks.append(("h3", f"{bench}, {model}"))
            for row, why in _pick_samples(rows, changed):
                blocks += _sample_blocks(row, why, problems, model)
    return blocks


def _pick_samples(rows: list[dict], changed: dict[str, str]) -> list[tuple[dict, str]]:
    """A sample of each changed problem (a passing one if there is), then samples of other problems: one per
    verdict class (the classes that parse first), filled up to ``SAMPLES_SHOWN`` with further problems."""
    picked: list[tuple[dict, str]] = []
    for task, why in changed.items():
        mine = [r for r in rows if r["task_id"] == task]
        if mine:
            picked.append((next((r for r in mine if r["passed"]), mine[0]), why))
    shown = {r["task_id"] for r, _ in picked}
    extra: list[dict] = []
    for verdict in [v for v in VERDICTS if v in PARSING] + [v for v in VERDICTS if v not in PARSING]:
        row = next((r for r in rows if r["verdict"] == verdict and r["task_id"] not in shown), None)
        if row is not None and len(extra) < SAMPLES_SHOWN:
            extra.append(row)
            shown.add(row["task_id"])
    for row in rows:
        if len(extra) >= SAMPLES_SHOWN:
            break
        if row["task_id"] not in shown:
            extra.append(row)
            shown.add(row["task_id"])
    return picked + [(row, "") for row in extra]


def _sample_blocks(row: dict, why: str, problems: dict[str, Record] | None, model: str) -> list[Block]:
    cut = row["verdict"] == "cut" and isinstance(row.get("raw"), str)
    clipped = clip(row.get("detail", ""), 160).replace("`", "'")
    detail = f": `{clipped}`" if clipped and row["verdict"] not in ("empty", "cut") else ""
    if cut:  # what the judge says about the empty program it ran is beside the point
        detail = f"; post-processing kept none of it: {row.get('cut_reason') or 'no reason recorded'}"
    head = f"**{row['task_id']}**, {LABELS[row['verdict']]}{detail}" + (f" ({why})" if why else "")
    problem = (problems or {}).get(row["task_id"])
    text = "\n".join(prompt_tail(problem.prompt) if problem else ["# (prompt not found)"])
    lines = (row["raw"] if cut else row["completion"]).rstrip().splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    shown = [clip(line, 120) for line in lines[:COMPLETION_LINES]]
    if len(lines) > COMPLETION_LINES:
        shown.append(f"# ... {len(lines) - COMPLETION_LINES} more lines")
    written = f"written by {model}, raw (cut away by post-processing)" if cut else f"written by {model}"
    text += f"\n# ---- {written} ----\n" + ("\n".join(shown) if shown else "# (empty)")
    return [("p", head), ("code", text, "python")]


def passk_section(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "pass@k before and after fine-tuning")]
    if not run.summaries:
        return blocks + [("p", "No evaluation results yet.")]
    ks = sorted({k for per_bench in run.summaries.values() for s in per_bench.values() for k in pass_values(s)})
    rows = []
    for bench in run.benchmarks:
        for model in run.models:
            summary = run.summaries[model].get(bench)
            if summary is not None:
                values = pass_values(summary)
                rows.append([bench, model, _scored(run, model, bench),
                             str(summary["n_samples"] // max(summary["n_problems"], 1))]
                            + [fmt_pct(values.get(k)) for k in ks])
    blocks.append(("p", "pass@k (Chen et al., 2021): the chance that at least one of k samples passes, estimated "
                        "without bias from all samples; shown only where every problem has at least k samples."))
    blocks.append(("table", ["benchmark", "model", "problems", "samples per problem"] + [f"pass@{k}" for k in ks],
                   rows))
    levels = sorted({s["isolation"] for per_bench in run.summaries.values() for s in per_bench.values()
                     if s.get("isolation")})
    if levels:
        blocks.append(("p", f"Samples judged in the sandbox with isolation {', '.join(levels)} "
                            "(docs/sandbox.md says what each level guarantees)."))
    groups = {f"{bench} pass@{k}": {m: 100 * pass_values(run.summaries[m][bench]).get(k, 0.0) for m in run.models
                                    if bench in run.summaries[m]} for bench in run.benchmarks for k in ks}
    png = plots.plot_bars(run.plots / PASSK_PLOT, groups, ylabel="pass@k (%)")
    blocks.append(("img", png, "pass@k per benchmark, base model and fine-tuned models"))
    return blocks


def _diff_values(summary: dict[str, Any]) -> dict[int, float]:
    return pass_values({"pass_at_k": summary.get("diff_pass_at_k", {})})


def solved_section(run: RunView) -> list[Block]:
    """Problems solved by the benchmark's tests and under its differential tests, side by side, with pass@k."""
    blocks: list[Block] = [("h2", "Solved problems")]
    if not run.summaries:
        return blocks + [("p", "No evaluation results yet.")]
    blocks.append(("p", "A problem is *solved* when at least one of its samples passes the benchmark's tests, and "
                        "*solved under differential tests* when at least one also passes its differential tests: "
                        "inputs mutated from the problem's own asserts, with the reference solution's outputs "
                        "(built by the data stage, `meta[\"diff_tests\"]`), which catch answers that only fit weak "
                        "asserts. A problem without differential tests (none of its asserts has literal inputs, "
                        "or its reference was unstable) counts its benchmark result in both columns; the column "
                        "*with differential tests* says how many have them. diff pass@k counts a sample as "
                        "passing only if it passes both."))
    ks = sorted({k for per_bench in run.summaries.values() for s in per_bench.values() for k in pass_values(s)})
    rows = []
    for bench in run.benchmarks:
        for model in run.models:
            summary = run.summaries[model].get(bench)
            if summary is None:
                continue
            has_diff = "diff_pass_at_k" in summary
            values, diff = pass_values(summary), _diff_values(summary)
            solved = count_solved({t: c for t, (c, _) in run.solved(model, bench).items()})
            row = [bench, model, _scored(run, model, bench), str(solved),
                   str(count_solved(run.solved_diff(model, bench))) if has_diff else "-",
                   str(summary.get("diff_problems", 0)) if has_diff else "0"]
            for k in ks:
                row += [fmt_pct(values.get(k)), fmt_pct(diff.get(k)) if has_diff else "-"]
            rows.append(row)
    header = ["benchmark", "model", "problems", "solved", "solved under differential tests",
              "with differential tests"] + [name for k in ks for name in (f"pass@{k}", f"diff pass@{k}")]
    blocks.append(("table", header, rows))
    return blocks
