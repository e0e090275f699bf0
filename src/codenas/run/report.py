"""The run report: ``OUT/report.md`` and a self-contained ``OUT/report.html`` (images as data URIs), with plots.

It opens with a summary a newcomer can read (what was trained, the headline table, one sentence on what the
numbers mean), then shows what the models wrote (verdict classes, sample completions), then the details (pass@k,
problems solved by the benchmark's tests and under its differential tests, loss curves, per-problem changes,
a copying check that puts each solved problem's passing completion beside the nearest training record, data,
configuration, hardware, wall time).

Everything is read back from the run folder through the constants and readers of the module that wrote it:
``run.config`` (the resolved configuration), ``run.cache`` (``stages.json``), ``data.build`` (the manifest),
``train.loop`` (``metrics.jsonl``), ``train.pretrain``/``train.sft`` (settings files), ``run.stages`` (stage
results and folders) and ``eval.scoring``/``eval.generate`` (results and summaries), so the report can be
rebuilt from any finished or partial run. It is first built as a list of blocks (headings, paragraphs, tables,
code, images) and then written twice, as Markdown and as HTML, so both say the same.
"""

from __future__ import annotations

import base64
import difflib
import html
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from codenas.benchmarks import BENCHMARKS, description
from codenas.corpus.build import RULES as CORPUS_RULES
from codenas.corpus.build import read_manifest as read_corpus_manifest
from codenas.data.benchmarks import NO_MBPP, NO_MBPP_FIX, load_problems
from codenas.data.build import TRAIN, read_manifest
from codenas.data.decontam import normalised_solution
from codenas.eval.scoring import read_results, read_summary
from codenas.eval.verdicts import LABELS, PARSING, VERDICTS, classify
from codenas.io import CodenasError, atomic_write_text, read_json
from codenas.model.config import ArchConfig
from codenas.model.model import describe_layout
from codenas.progress import format_duration
from codenas.records import Record, read_records
from codenas.run import plots, system
from codenas.run.cache import STAGES_FILE, read_stages
from codenas.run.config import RESOLVED_CONFIG, dumps_toml, read_resolved_config
from codenas.run.stages import (
    BASE_MODEL,
    EVAL_DIR,
    IMPROVE,
    PLOTS_DIR,
    RESULT,
    TRAIN_STAGES,
    corpus_folder,
    eval_folder,
)
from codenas.train import improve as improve_mod
from codenas.train import pretrain as pretrain_mod
from codenas.train import sft as sft_mod
from codenas.train.loop import read_metrics

SECTIONS = ("Summary", "What the models wrote", "Sample completions", "pass@k before and after fine-tuning",
            "Solved problems", "Loss curves", "pass@1 vs step", "Expert iteration", "Per-problem changes",
            "Copying check", "Data", "Pretraining corpus", "Configuration", "Hardware", "Versions",
            "Wall time per stage")
# data manifest counts in pipeline order (manifest.json stores keys sorted)
_COUNT_ORDER = ("input", "held_out", "unused_prompt_split", "candidates", "unconvertible", "too_long", "too_complex",
                "failed_proof", "null_body_pass", "contaminated", "records", "train", "val")
_PASS_KEY = re.compile(r"^pass@(\d+)$")
PROMPT_TAIL_LINES = 4  # lines of the prompt shown above a sample's completion
COMPLETION_LINES = 20  # lines of a completion shown at most
COPY_NGRAM = 3  # the copying check compares normalised bodies as sets of token 3-grams
SAMPLES_SHOWN = 4  # samples per benchmark and model besides the newly solved or broken problems
CHANGES_SHOWN = 5  # newly solved and newly broken problems shown at most, each
# Chen et al. (2021), Table 1: Codex at 12M parameters, trained on ~100B tokens of code, solves 2.0% of HumanEval.
_SMALLEST_CODEX = "a 12M-parameter Codex model trained on about 100B tokens of code solved 2% of HumanEval " \
                  "(Chen et al., 2021)"

Block = tuple  # ("h1" | "h2" | "h3" | "p", text) | ("code", text, lang) | ("table", headers, rows) | ("img", path, alt)


def write_report(out: Path, *, hardware: dict[str, str] | None = None,
                 versions: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write ``out/report.md``, ``out/report.html`` and ``out/plots/*.png``; return the two report paths."""
    run = RunView(out)
    blocks: list[Block] = [("h1", f"codenas run report: {out.name}")]
    blocks += _summary(run)
    blocks += _verdicts(run)
    blocks += _samples(run)
    blocks += _passk(run)
    blocks += _solved(run)
    blocks += _loss_curves(run)
    blocks += _pass1_vs_step(run)
    blocks += _expert_iteration(run)
    blocks += _per_problem(run)
    blocks += _copying(run)
    blocks += _data(run)
    blocks += _corpus(run)
    blocks += _configuration(run)
    blocks += _key_values("Hardware", ("component", "value"),
                          hardware if hardware is not None else system.hardware())
    blocks += _key_values("Versions", ("package", "version"), versions if versions is not None else system.versions())
    blocks += _wall_time(run)
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, render_markdown(blocks))
    atomic_write_text(html_path, render_html(blocks, title=f"codenas run report: {out.name}"))
    return md_path, html_path


# --- reading the run folder ------------------------------------------------------------------------------------


class RunView:
    """The outputs of one run folder, each read once through its writer's reader."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.plots = self.out / PLOTS_DIR
        self.config = read_resolved_config(self.out)
        self.stages = read_stages(self.out / STAGES_FILE)
        self.manifest = read_manifest(self.out / "data")
        self.metrics = {stage: read_metrics(self.out / stage) for stage in TRAIN_STAGES}
        self.results_of = {stage: _read_json_if(self.out / stage / RESULT) for stage in (*TRAIN_STAGES, IMPROVE)}
        self.rounds = improve_mod.read_rounds(self.out / IMPROVE)
        self.summaries = eval_summaries(self.out)
        self.models = list(self.summaries)
        self.benchmarks = list(dict.fromkeys(b for per_bench in self.summaries.values() for b in per_bench))
        self.finetuned = [m for m in self.models if m != BASE_MODEL]
        self._problems: dict[str, dict[str, Record] | None] = {}
        self._results: dict[tuple[str, str], list[dict]] = {}
        self._training: dict[tuple[str, ...], TrainingIndex] = {}

    def results(self, model: str, bench: str) -> list[dict]:
        """Judged samples of ``model`` on ``bench`` (each with its verdict class)."""
        if (model, bench) not in self._results:
            self._results[model, bench] = [
                {**row, "verdict": row.get("verdict") or classify(row["completion"], row["status"], row["detail"],
                                                                  row.get("cut_reason"))}
                for row in read_results(eval_folder(self.out, model, bench))]
        return self._results[model, bench]

    def problems(self, bench: str) -> dict[str, Record] | None:
        """The benchmark's problems by id, as the eval stage loaded them (None when they cannot be loaded)."""
        if bench not in self._problems:
            try:
                records = load_problems(bench, self.out / "data")
                self._problems[bench] = {r.id: r for r in records} | {
                    r.meta["task_id"]: r for r in records if isinstance(r.meta.get("task_id"), str)}
            except CodenasError:
                self._problems[bench] = None
        return self._problems[bench]

    def benchmark_size(self, bench: str) -> int | None:
        """Problems in the benchmark file the data stage wrote."""
        counts = (self.manifest or {}).get("benchmarks", {}).get(bench, {})
        return counts.get("records")

    def skipped(self) -> dict[str, tuple[str, str]]:
        """Benchmarks the config lists that have no evaluation: name -> (reason, what to do)."""
        listed = (self.config or {}).get("eval", {}).get("benchmarks", [])
        no_mbpp = self.manifest is not None and self.manifest.get("inputs", {}).get("mbpp") is None
        out = {}
        for bench in listed:
            if bench in self.benchmarks:
                continue
            if no_mbpp and bench in BENCHMARKS and BENCHMARKS[bench].needs_mbpp:
                out[bench] = (NO_MBPP, NO_MBPP_FIX)
            else:
                out[bench] = ("its evaluation has not run yet", "run the same command again to finish the run")
        return out

    def solved(self, model: str, bench: str) -> dict[str, tuple[int, int]]:
        """task_id -> (passing samples, samples)."""
        counts: dict[str, tuple[int, int]] = {}
        for row in self.results(model, bench):
            c, n = counts.get(row["task_id"], (0, 0))
            counts[row["task_id"]] = (c + int(row["passed"]), n + 1)
        return counts

    def solved_diff(self, model: str, bench: str) -> dict[str, int]:
        """task_id -> samples that pass the differential tests too (the benchmark's tests alone where the problem
        has none: ``diff_passed`` null, or absent in results of older versions)."""
        counts: dict[str, int] = {}
        for row in self.results(model, bench):
            diff = row.get("diff_passed")
            counts[row["task_id"]] = counts.get(row["task_id"], 0) + int(row["passed"] if diff is None else diff)
        return counts

    def training_files(self, model: str) -> tuple[list[Path], str]:
        """The record files ``model`` was fine-tuned on (its stage's ``train_files``, else the data stage's
        train.jsonl) and a phrase saying which."""
        listed = (self.results_of.get(model) or {}).get("train_files")
        if isinstance(listed, list) and listed:
            paths = [Path(f["path"]) for f in listed if isinstance(f, dict) and isinstance(f.get("path"), str)]
            return paths, f"the records the {model} stage trained on ({', '.join(f'`{p.name}`' for p in paths)})"
        if model == BASE_MODEL:
            return [self.out / "data" / TRAIN], ("the data stage's training records (the base model was not "
                                                 "fine-tuned; its pretraining corpus is decontaminated)")
        return [self.out / "data" / TRAIN], f"the data stage's `{TRAIN}`"

    def training_index(self, paths: list[Path]) -> TrainingIndex:
        """The records of ``paths`` (those that can be read), indexed for the copying check."""
        key = tuple(str(p) for p in paths)
        if key not in self._training:
            records: list[Record] = []
            for path in paths:
                try:
                    records += read_records(path)
                except (CodenasError, OSError):
                    continue
            self._training[key] = TrainingIndex(records)
        return self._training[key]

    def changes(self, model: str, bench: str) -> tuple[list[str], list[str]]:
        """Problems ``model`` newly solves and newly breaks on ``bench``, compared with the base model."""
        if model == BASE_MODEL or bench not in self.summaries.get(BASE_MODEL, {}):
            return [], []
        before, after = self.solved(BASE_MODEL, bench), self.solved(model, bench)
        gained = sorted(t for t in after if after[t][0] > 0 and before.get(t, (0, 0))[0] == 0)
        lost = sorted(t for t in before if before[t][0] > 0 and after.get(t, (0, 0))[0] == 0)
        return gained, lost


def _read_json_if(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


class TrainingIndex:
    """Training records by the token 3-grams of their normalised bodies (``data.decontam``), to find the one
    nearest a completion."""

    def __init__(self, records: list[Record]):
        self.records = records
        self.tokens = [normalised_solution(r.solution) for r in records]
        self.grams = [_grams(t) for t in self.tokens]
        self.index: dict[tuple[str, ...], list[int]] = {}
        for i, grams in enumerate(self.grams):
            for gram in grams:
                self.index.setdefault(gram, []).append(i)

    def nearest(self, completion: str) -> tuple[Record, float, float] | None:
        """(the record whose body shares the largest share of 3-grams with the completion's (Jaccard), that
        share, and difflib's similarity ratio of the two token sequences); None when none shares a 3-gram."""
        tokens = normalised_solution(completion)
        grams = _grams(tokens)
        shared = Counter(i for gram in grams for i in self.index.get(gram, ()))
        if not shared:
            return None
        best = max(shared, key=lambda i: (shared[i] / (len(grams) + len(self.grams[i]) - shared[i]), -i))
        jaccard = shared[best] / (len(grams) + len(self.grams[best]) - shared[best])
        ratio = difflib.SequenceMatcher(None, tokens, self.tokens[best], autojunk=False).ratio()
        return self.records[best], jaccard, ratio


def _grams(tokens: tuple[str, ...]) -> set[tuple[str, ...]]:
    if len(tokens) <= COPY_NGRAM:
        return {tokens} if tokens else set()
    return {tokens[i:i + COPY_NGRAM] for i in range(len(tokens) - COPY_NGRAM + 1)}


def eval_summaries(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> benchmark -> summary.json for every evaluation under out/eval, in run order (base model first)."""
    eval_dir = Path(out) / EVAL_DIR
    found = [p for p in eval_dir.glob("*/*") if p.is_dir() and read_summary(p) is not None] \
        if eval_dir.is_dir() else []
    run_order = {name: i for i, name in enumerate(read_stages(Path(out) / STAGES_FILE))}
    found.sort(key=lambda d: (d.parent.name != BASE_MODEL,
                              run_order.get(f"{EVAL_DIR}/{d.parent.name}/{d.name}", 1 << 30), d.parent.name, d.name))
    summaries: dict[str, dict[str, dict[str, Any]]] = {}
    for folder in found:
        summaries.setdefault(folder.parent.name, {})[folder.name] = read_summary(folder)
    return summaries


def per_problem(results_dir: Path) -> dict[str, tuple[int, int]]:
    """task_id -> (passing samples, samples) from the judge's results in ``results_dir``."""
    counts: dict[str, tuple[int, int]] = {}
    for row in read_results(results_dir):
        c, n = counts.get(row["task_id"], (0, 0))
        counts[row["task_id"]] = (c + int(row["passed"]), n + 1)
    return counts


# --- summary ------------------------------------------------------------------------------------------------------


def _summary(run: RunView) -> list[Block]:
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
    if isinstance((run.results_of[stage] or {}).get("tokens"), int):
        return run.results_of[stage]["tokens"]
    rows = [r for r in run.metrics[stage] if isinstance(r.get("tokens"), int)]
    return rows[-1]["tokens"] if rows else None


def _wall(run: RunView, stage: str) -> str:
    return format_duration(run.stages.get(stage, {}).get("wall_s"))


def _what_was_trained(run: RunView) -> list[Block]:
    rows = []
    settings = _read_json_if(run.out / "pretrain" / pretrain_mod.PRETRAIN_INFO)
    result = run.results_of["pretrain"]
    sentences = []
    if settings and result:
        params = result["params"]
        corpus = settings.get("corpus", {})
        documents = corpus.get("train_documents")
        files = f" ({documents:,} files)" if isinstance(documents, int) else ""
        sentences.append(f"A GPT of {_params(params)} parameters ({_layout(settings['arch'])}) was pretrained from "
                         f"scratch on Python code{files}.")
        rows.append(["pretrain", "next-token prediction on the code corpus", f"{params:,} (all)",
                     f"{result['steps']:,}", _count(_tokens_seen(run, "pretrain")), _wall(run, "pretrain")])
    for stage in TRAIN_STAGES[1:]:
        info = _read_json_if(run.out / stage / sft_mod.SETTINGS)
        result = run.results_of[stage]
        if not info or not result:
            continue
        what = (f"LoRA (rank {info['lora']['rank']}, alpha {info['lora']['alpha']}) on the train records"
                if info.get("lora") else "full fine-tuning on the train records")
        rows.append([stage, what, f"{result['trainable_params']:,} of {result['total_params']:,}",
                     f"{result['steps']:,}", _count(_tokens_seen(run, stage)), _wall(run, stage)])
        sentences.append(f"It was then fine-tuned ({stage}) on {result['train_examples']:,} supervised records"
                         + _drops_text(info, "train", "not trained on") + ".")
    improved = run.results_of[IMPROVE]
    if improved:
        trained = [r for r in improved["rows"] if r["trained"]]
        rows.append([IMPROVE, f"expert iteration: {improved['rounds']} rounds of sampling a pool of "
                              f"{improved['pool']['problems']:,} problems, fine-tuning on the passing samples",
                     "-", _count(len(trained) * (run.config or {}).get(IMPROVE, {}).get("steps", 0) or None), "-",
                     _wall(run, IMPROVE)])
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


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _scored(run: RunView, model: str, bench: str) -> str:
    summary = run.summaries[model][bench]
    total = run.benchmark_size(bench)
    n = summary["n_problems"]
    return f"{n} of {total}" if total is not None and total != n else str(n)


def _pass1(summary: dict | None) -> float | None:
    return None if summary is None else _pass_values(summary).get(1)


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
            row.append(_pct(_pass1(run.summaries[model].get(bench))))
        for model in run.finetuned:
            value = _pass1(run.summaries[model].get(bench))
            change = None if value is None or base is None else 100 * (value - base)
            row.append("-" if change is None else "no change" if change == 0 else f"{change:+.1f} points")
        row.append(" → ".join(_pct(run.summaries[m][bench].get("parse_rate")) for m in models))
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
                               + (f" ({_count_solved(run.solved_diff(m, b))} under differential tests)"
                                  if "diff_pass_at_k" in run.summaries[m][b] else "")
                               for (m, b), n in solved.items()))
    for model in run.finetuned:
        loss = _val_loss_change(run, model)
        if loss:
            parts.append(f"the {model} model's val loss {loss}")
        shares = [(b, run.summaries[BASE_MODEL][b]["parse_rate"], run.summaries[model][b]["parse_rate"])
                  for b in run.benchmarks if b in run.summaries[model] and b in run.summaries.get(BASE_MODEL, {})]
        for bench, before, after in shares:
            parts.append(f"the share of {bench} completions that parse went from {_pct(before)} (base) to "
                         f"{_pct(after)} ({model})" if after != before else
                         f"the share of {bench} completions that parse stayed at {_pct(after)} ({model} and base)")
    return "; ".join(parts) + "."


def _val_loss_change(run: RunView, stage: str) -> str | None:
    points = _points(run.metrics.get(stage, []), "val_loss")
    if len(points) < 2:
        return None
    (s0, first), (s1, last) = points[0], points[-1]
    verb = "fell" if last < first else "rose" if last > first else "stayed"
    return f"{verb} from {first:.2f} (step {int(s0)}) to {last:.2f} (step {int(s1)})"


def _framing_notes(run: RunView) -> list[str]:
    notes = []
    params = (run.results_of.get("pretrain") or {}).get("params")
    best = max((_pass1(s) or 0.0 for per_bench in run.summaries.values() for s in per_bench.values()), default=0.0)
    if params is not None and best == 0.0 and params < 50e6:
        notes.append(f"A pass@1 of 0% is expected at this size: {_SMALLEST_CODEX}, and this model has "
                     f"{_params(params)} parameters and saw far fewer tokens. The verdict classes below (how many "
                     "completions are empty, do not parse, crash or give a wrong answer) show progress long before "
                     "pass@1 moves.")
    ks = [k for k in (run.config or {}).get("eval", {}).get("ks", []) if isinstance(k, int)]
    samples = (run.config or {}).get("eval", {}).get("samples")
    unmeasured = [k for k in ks if samples is not None and k > samples]
    if unmeasured:
        names = [f"pass@{k}" for k in unmeasured]
        names = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        notes.append(f"pass@k is shown only for k ≤ samples per problem: with eval.samples = {samples}, "
                     f"{names} cannot be measured (set eval.samples to at "
                     f"least {max(unmeasured)} to get {'them' if len(unmeasured) > 1 else 'it'}).")
    limit = (run.config or {}).get("eval", {}).get("limit")
    if limit and any(run.benchmark_size(b) and run.benchmark_size(b) > limit for b in run.benchmarks):
        notes.append(f"Subsets: eval.limit = {limit} scores only the first {limit} problems of each benchmark "
                     "(\"problems scored\" says how many of how many); set it to 0 to score them all.")
    return notes


# --- what the models wrote ------------------------------------------------------------------------------------------


def _verdicts(run: RunView) -> list[Block]:
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
            rows.append([bench, model, str(n), _pct(summary["parse_rate"])]
                        + [f"{counts[v]} ({_pct(counts[v] / n if n else 0.0)})" for v in VERDICTS] + [errors or "-"])
            shares[f"{bench} · {model}"] = {LABELS[v]: 100 * counts[v] / n if n else 0.0 for v in VERDICTS}
    blocks.append(("table", header, rows))
    png = plots.plot_stacked(run.plots / "verdicts.png", shares, xlabel="share of samples (%)")
    blocks.append(("img", png, "share of samples in each verdict class, per benchmark and model"))
    return blocks


def _samples(run: RunView) -> list[Block]:
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
    clipped = _clip(row.get("detail", ""), 160).replace("`", "'")
    detail = f": `{clipped}`" if clipped and row["verdict"] not in ("empty", "cut") else ""
    if cut:  # what the judge says about the empty program it ran is beside the point
        detail = f"; post-processing kept none of it: {row.get('cut_reason') or 'no reason recorded'}"
    head = f"**{row['task_id']}**, {LABELS[row['verdict']]}{detail}" + (f" ({why})" if why else "")
    problem = (problems or {}).get(row["task_id"])
    text = "\n".join(_prompt_tail(problem.prompt) if problem else ["# (prompt not found)"])
    lines = (row["raw"] if cut else row["completion"]).rstrip().splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    shown = [_clip(line, 120) for line in lines[:COMPLETION_LINES]]
    if len(lines) > COMPLETION_LINES:
        shown.append(f"# ... {len(lines) - COMPLETION_LINES} more lines")
    written = f"written by {model}, raw (cut away by post-processing)" if cut else f"written by {model}"
    text += f"\n# ---- {written} ----\n" + ("\n".join(shown) if shown else "# (empty)")
    return [("p", head), ("code", text, "python")]


def _prompt_tail(prompt: str) -> list[str]:
    """The prompt's last ``def`` line (the function to write), then its last lines."""
    lines = prompt.rstrip().splitlines()
    tail = lines[-PROMPT_TAIL_LINES:]
    start = len(lines) - len(tail)
    signature = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].lstrip().startswith("def ")), None)
    head = []
    if signature is not None and signature < start:
        head = [lines[signature]] + (["    ..."] if signature < start - 1 else [])
    return [_clip(line, 120) for line in head + tail]


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else text[: width - 1] + "…"


# --- details ----------------------------------------------------------------------------------------------------------


def _passk(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "pass@k before and after fine-tuning")]
    if not run.summaries:
        return blocks + [("p", "No evaluation results yet.")]
    ks = sorted({k for per_bench in run.summaries.values() for s in per_bench.values() for k in _pass_values(s)})
    rows = []
    for bench in run.benchmarks:
        for model in run.models:
            summary = run.summaries[model].get(bench)
            if summary is not None:
                values = _pass_values(summary)
                rows.append([bench, model, _scored(run, model, bench),
                             str(summary["n_samples"] // max(summary["n_problems"], 1))]
                            + [_pct(values.get(k)) for k in ks])
    blocks.append(("p", "pass@k (Chen et al., 2021): the chance that at least one of k samples passes, estimated "
                        "without bias from all samples; shown only where every problem has at least k samples."))
    blocks.append(("table", ["benchmark", "model", "problems", "samples per problem"] + [f"pass@{k}" for k in ks],
                   rows))
    levels = sorted({s["isolation"] for per_bench in run.summaries.values() for s in per_bench.values()
                     if s.get("isolation")})
    if levels:
        blocks.append(("p", f"Samples judged in the sandbox with isolation {', '.join(levels)} "
                            "(docs/sandbox.md says what each level guarantees)."))
    groups = {f"{bench} pass@{k}": {m: 100 * _pass_values(run.summaries[m][bench]).get(k, 0.0) for m in run.models
                                    if bench in run.summaries[m]} for bench in run.benchmarks for k in ks}
    png = plots.plot_bars(run.plots / "passk.png", groups, ylabel="pass@k (%)")
    blocks.append(("img", png, "pass@k per benchmark, base model and fine-tuned models"))
    return blocks


def _count_solved(counts: dict[str, int]) -> int:
    return sum(1 for c in counts.values() if c)


def _diff_values(summary: dict[str, Any]) -> dict[int, float]:
    return _pass_values({"pass_at_k": summary.get("diff_pass_at_k", {})})


def _solved(run: RunView) -> list[Block]:
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
    ks = sorted({k for per_bench in run.summaries.values() for s in per_bench.values() for k in _pass_values(s)})
    rows = []
    for bench in run.benchmarks:
        for model in run.models:
            summary = run.summaries[model].get(bench)
            if summary is None:
                continue
            has_diff = "diff_pass_at_k" in summary
            values, diff = _pass_values(summary), _diff_values(summary)
            row = [bench, model, _scored(run, model, bench), str(_count_solved({t: c for t, (c, _) in
                                                                                 run.solved(model, bench).items()})),
                   str(_count_solved(run.solved_diff(model, bench))) if has_diff else "-",
                   str(summary.get("diff_problems", 0)) if has_diff else "0"]
            for k in ks:
                row += [_pct(values.get(k)), _pct(diff.get(k)) if has_diff else "-"]
            rows.append(row)
    header = ["benchmark", "model", "problems", "solved", "solved under differential tests",
              "with differential tests"] + [name for k in ks for name in (f"pass@{k}", f"diff pass@{k}")]
    blocks.append(("table", header, rows))
    return blocks


def _copying(run: RunView) -> list[Block]:
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
        text = "\n".join(_prompt_tail(problem.prompt) if problem else ["# (prompt not found)"])
        text += f"\n# ---- passing completion ({model}) ----\n" + _clipped_body(row["completion"])
        if near:
            text += (f"\n# ---- nearest training record {near[0].id} (Jaccard {near[1]:.2f}, ratio {near[2]:.2f}) "
                     f"----\n" + _signature(near[0].prompt) + _clipped_body(near[0].solution))
        blocks += [("p", head), ("code", text, "python")]
    return blocks


def _signature(prompt: str) -> str:
    """The prompt's last ``def`` line (the function the record's body belongs to), with a newline; or nothing."""
    lines = [line for line in prompt.splitlines() if line.lstrip().startswith("def ")]
    return _clip(lines[-1], 120) + "\n" if lines else ""


def _clipped_body(text: str) -> str:
    lines = text.rstrip().splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    shown = [_clip(line, 120) for line in lines[:COMPLETION_LINES]]
    if len(lines) > COMPLETION_LINES:
        shown.append(f"# ... {len(lines) - COMPLETION_LINES} more lines")
    return "\n".join(shown) if shown else "# (empty)"


def _loss_curves(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "Loss curves")]
    panels: dict[str, plots.Series] = {}
    for stage in TRAIN_STAGES:
        series = {label: _points(run.metrics[stage], key) for label, key in (("train", "loss"), ("val", "val_loss"))}
        series = {label: points for label, points in series.items() if points}
        if series:
            panels[stage] = series
    if not panels:
        return blocks + [("p", "No training metrics yet.")]
    png = plots.plot_curves(run.plots / "loss_curves.png", panels, ylabel="loss (nats/token)")
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


def _pass1_vs_step(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "pass@1 vs step")]
    panels: dict[str, plots.Series] = {}
    for stage in TRAIN_STAGES[1:]:
        points = _points(run.metrics[stage], "val_pass@1")
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
    png = plots.plot_curves(run.plots / "pass1_vs_step.png", panels, ylabel="pass@1 (%)", percent=True)
    blocks.append(("img", png, "pass@1 on validation problems during fine-tuning"))
    rows = [[stage, str(int(step)), f"{value:.1f}%"] for stage, series in panels.items()
            for points in series.values() for step, value in points]
    blocks.append(("table", ["stage", "step", "pass@1"], rows))
    return blocks


def _expert_iteration(run: RunView) -> list[Block]:
    """The rounds of the improve stage (``train.improve``'s rounds.jsonl): the pool solved, what was kept, val."""
    blocks: list[Block] = [("h2", "Expert iteration")]
    if not run.rounds:
        return blocks + [("p", "No expert-iteration rounds (improve.rounds = 0, or the stage has not run).")]
    result = run.results_of[IMPROVE] or {}
    pool = result.get("pool", {})
    sources = ", ".join(f"{n:,} {source}" for source, n in pool.get("sources", {}).items())
    limit = (run.config or {}).get(IMPROVE, {}).get("pool_limit") or 0
    which = f"a seeded draw of {limit} of the pool's problems" if limit else "every pool problem"
    blocks.append(("p", f"Each round samples {which} (the pool: {pool.get('problems', '?')} problems"
                        + (f": {sources}" if sources else "") + "), keeps the distinct passing completions (at most "
                        "`improve.cap` per problem), fine-tunes on them with a replay share of the train records, "
                        "and measures the val records. Round 0 is the starting model. The round best on the val "
                        f"records (round {result.get('best_round', '?')}) is the `{IMPROVE}` model evaluated on the "
                        "held-out benchmarks; the rounds' models are never run on them."))
    rows = []
    for row in run.rounds:
        k = row["samples"]
        pass_k = (row["pass_at_k"] or {}).get(f"pass@{k}")
        rows.append([str(row["round"]), "-" if row["solved"] is None else f"{row['solved']}/{row['pool_problems']}",
                     "-" if pass_k is None else f"{_pct(pass_k)} (K={k})", str(row["kept"]), str(row["new_problems"]),
                     str(row["replay"]), _fmt(row["train_loss"]), _fmt(row["val_loss"]), _pct(row["val_pass@1"]),
                     format_duration(row["wall_s"])])
    blocks.append(("table", ["round", "pool problems solved", "pool pass@K", "samples kept", "new problems",
                             "replay records", "train loss", "val loss", "val pass@1", "wall time"], rows))
    if not any(row["kept"] for row in run.rounds):
        blocks.append(("p", "**No round had a passing sample to learn from**: the starting model solves nothing in "
                            "the pool. Expert iteration needs a model that passes some pool problems at K samples: "
                            "more samples per problem, easier problems in the pool (mined functions proven by "
                            "their doctests), or a stronger starting model."))
    return blocks


def _per_problem(run: RunView) -> list[Block]:
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
            rows = [[t, "solved after, not before", _cn(before.get(t)), _cn(after.get(t))] for t in gained]
            rows += [[t, "solved before, not after", _cn(before.get(t)), _cn(after.get(t))] for t in lost]
            if rows:
                blocks.append(("table", ["problem", "change", "base c/n", f"{model} c/n"], rows))
    return blocks


def _data(run: RunView) -> list[Block]:
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
    return blocks + _finetune_drops(run)


def _finetune_drops(run: RunView) -> list[Block]:
    """The records each fine-tuning stage left out, per split and reason (train: not trained on; val: left out of
    the val loss, still sampled for pass@1)."""
    rows = []
    for stage in TRAIN_STAGES[1:]:
        info = _read_json_if(run.out / stage / sft_mod.SETTINGS)
        if not info or "dropped" not in info:
            continue
        for split, meaning in (("train", "not trained on"), ("val", "left out of the val loss")):
            total = (info.get("records") or {}).get(split)
            drops = info["dropped"].get(split) or {}
            used = (info.get("examples") or {}).get(split)
            reasons = ", ".join(f"{reason}: {n}" for reason, n in drops.items() if n) or "none"
            rows.append([stage, split, _count(total), _count(used), f"{reasons}" + (f" ({meaning})" if drops else "")])
    if not rows:
        return []
    return [("p", "Records each fine-tuning stage used, and those it left out with the reason:"),
            ("table", ["stage", "split", "records", "used", "dropped"], rows)]


def _corpus(run: RunView) -> list[Block]:
    """The corpus manifest: per source and per rule the documents and bytes dropped, tokens per split."""
    blocks: list[Block] = [("h2", "Pretraining corpus")]
    manifest = read_corpus_manifest(corpus_folder(run.out))
    if manifest is None:
        return blocks + [("p", "No corpus manifest (the corpus stage has not run).")]
    sources = manifest["sources"]
    found = {rule for s in sources.values() for rule in s["dropped"]}
    rules = [r for r in CORPUS_RULES if r in found] + sorted(found - set(CORPUS_RULES))  # pipeline order
    rows = [["files"] + [_fmt(s["files"]) for s in sources.values()]]
    if any(s.get("unreadable") for s in sources.values()):
        rows.append(["unreadable files skipped"] + [_fmt(len(s.get("unreadable", []))) for s in sources.values()])
    rows.append(["documents in"] + [_fmt(s["in"]["docs"]) for s in sources.values()])
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


def _configuration(run: RunView) -> list[Block]:
    blocks: list[Block] = [("h2", "Configuration")]
    if run.config is None:
        return blocks + [("p", f"(no {RESOLVED_CONFIG})")]
    return blocks + [("p", f"The resolved configuration (preset, then --config, then overrides), as "
                           f"`{RESOLVED_CONFIG}`; pass it back with `--config` to repeat the run."),
                     ("code", dumps_toml(run.config), "toml")]


def _key_values(title: str, header: tuple[str, str], values: dict[str, str]) -> list[Block]:
    return [("h2", title), ("table", list(header), [[k, str(v)] for k, v in values.items()])]


def _wall_time(run: RunView) -> list[Block]:
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


# --- small helpers ----------------------------------------------------------------------------------------------------


def _points(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    points = []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float) and isinstance(row.get("step"), int | float) and math.isfinite(value):
            points.append((row["step"], float(value)))
    return points


def _pass_values(summary: dict[str, Any]) -> dict[int, float]:
    return {int(m.group(1)): float(v) for k, v in summary["pass_at_k"].items()
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


# --- rendering ---------------------------------------------------------------------------------------------------


def render_markdown(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"{'#' * int(kind[1])} {block[1]}")
        elif kind == "p":
            parts.append(block[1])
        elif kind == "code":
            fence = "````" if "```" in block[1] else "```"
            parts.append(f"{fence}{block[2]}\n{block[1].rstrip()}\n{fence}")
        elif kind == "table":
            parts.append(_markdown_table(block[1], block[2]))
        elif kind == "img":
            parts.append(f"![{block[2]}]({PLOTS_DIR}/{block[1].name})")
    return "\n\n".join(parts) + "\n"


def render_html(blocks: list[Block], *, title: str) -> str:
    """HTML with the same content; images are embedded as base64 data URIs, styles inline (no external files)."""
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                           for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(block[1].read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}"></p>')
    style = ("body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222;"
             "line-height:1.45}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
             "table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccc;"
             "padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}"
             "td:not(:first-child){font-variant-numeric:tabular-nums}"
             "pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.88em;line-height:1.3}"
             "code{font-family:ui-monospace,Menlo,Consolas,monospace}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """Escape, then render the inline Markdown forms the report uses: **bold**, *italic* and `code`."""
    text = html.escape(text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", text)
