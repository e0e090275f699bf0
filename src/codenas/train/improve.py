"""Expert iteration (rejection-sampling fine-tuning): sample a pool of problems that have tests, keep the
completions the judge passes, fine-tune on them with a replay share of the supervised records, repeat.

``improve()`` runs ``settings.rounds`` rounds into ``out``; each round continues from the previous round's model::

    OUT/pool.jsonl          the pool: one row per problem (id, source, file it came from)
    OUT/improve.json        what the rounds depend on (settings, starting model, pool, val and replay files)
    OUT/init/               the starting model merged into a standalone checkpoint, when it is a LoRA adapter
    OUT/round0/round.json   the starting model's val metrics (nothing is trained in round 0)
    OUT/round{r}/           sample/ (samples.jsonl, results.jsonl, summary.json of K samples per pool problem),
                            kept.jsonl (the passing samples kept, as records), train.jsonl (kept + replay records),
                            train/ (the fine-tuning run, ``train.sft.finetune``), model/ (LoRA: the merged model),
                            round.json (the round's row, written last)
    OUT/rounds.jsonl        one row per finished round (the fields of ``round.json``, see ``ROW_FIELDS``)
    OUT/checkpoint_best/    a copy of the model of the round with the best val result (round 0: the start)
    OUT/best.json           which round that is, and its metrics

A round counts once its ``round.json`` is written, as the last thing it does: a round is complete or it is
resumed (its judged samples are reused, its training restarts). A rerun skips the finished rounds, and may ask for
more rounds than before; any other change of settings, pool or starting model is refused. Every random choice of
round r is seeded with ``seed + r``, so a run killed between rounds and resumed ends with the same weights as one
that was not.

The pool holds problems with tests that are not held out: records whose ``proven`` is false (mined functions
without doctests) are skipped, and held-out problems (``mini``, every ``benchmarks/*.jsonl`` of the data folder,
MBPP's test split, the val records) are refused with an error naming them.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from codenas.io import (
    CodenasError,
    atomic_directory,
    atomic_write_json,
    locks_output,
    read_json,
    read_jsonl,
    sha256_file,
    write_jsonl,
)
from codenas.names import (
    ADAPTER_WEIGHTS,
    BENCHMARKS_DIR,
    IMPROVE_BEST,
    IMPROVE_INFO,
    IMPROVE_INIT,
    IMPROVE_KEPT,
    IMPROVE_MERGED,
    IMPROVE_POOL,
    IMPROVE_ROUND,
    IMPROVE_ROUNDS,
    IMPROVE_SAMPLE_DIR,
    IMPROVE_TRAIN_DIR,
    MINED_RECORDS,
    TRAIN_RECORDS,
    TRAINER_STATE,
    VAL_RECORDS,
    WEIGHTS,
)
from codenas.names import BEST as BEST_CHECKPOINT
from codenas.progress import say
from codenas.records import Record, read_records, write_records
from codenas.settings import (
    FINETUNE_EVAL,
    FINETUNE_SAMPLING,
    FINETUNE_TRAIN,
    EvalSettings,
    ImproveSettings,
    JudgeSettings,
    LoraSettings,
    SamplingSettings,
    TrainSettings,
)

POOL = IMPROVE_POOL
ROUNDS = IMPROVE_ROUNDS
SETTINGS = IMPROVE_INFO
BEST = IMPROVE_BEST
BEST_MODEL = BEST_CHECKPOINT
ROUND_FILE = IMPROVE_ROUND
SAMPLE_DIR = IMPROVE_SAMPLE_DIR
KEPT = IMPROVE_KEPT
TRAIN_DIR = IMPROVE_TRAIN_DIR
MERGED = IMPROVE_MERGED
INIT = IMPROVE_INIT
ROW_FIELDS = ("round", "pool_problems", "samples", "solved", "pass_at_k", "kept", "new_problems", "replay",
              "train_loss", "val_loss", "val_passed", "val_pass@1", "wall_s", "trained", "model")
"""A row of rounds.jsonl: pool problems sampled, samples per problem, problems with a passing sample (``solved``),
the pool's pass@1 and pass@K, samples kept, problems solved for the first time (``new_problems``), replay records,
the last logged training loss, the val loss / samples passed / pass@1 of the round's model, wall seconds, whether
it trained (false when no sample passed), and the round's model (a path relative to OUT)."""


@dataclass(frozen=True)
class PoolProblem:
    record: Record
    file: str  # the pool file it came from


# --- the pool ------------------------------------------------------------------------------------------------------


def held_out(data_dir: Path | None, val_path: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """Problem id -> the held-out set it belongs to: ``mini``, each ``benchmarks/NAME.jsonl`` of the data folder,
    and the val records. MBPP test ids (11-510) are refused by ``is_mbpp_test`` even without a data folder.
    Returns (problem id -> set, prompt text -> set): a held-out problem under another id is refused by its prompt."""
    from codenas.data.humaneval import load_mini

    records = [(r, "mini") for r in load_mini()]
    if data_dir is not None and (Path(data_dir) / BENCHMARKS_DIR).is_dir():
        for path in sorted((Path(data_dir) / BENCHMARKS_DIR).glob("*.jsonl")):
            records += [(r, path.stem) for r in read_records(path)]
    if val_path is not None and Path(val_path).is_file():
        records += [(r, Path(val_path).name) for r in read_records(val_path)]
    ids: dict[str, str] = {}
    prompts: dict[str, str] = {}
    for rec, name in records:  # the first set that holds a problem names it
        ids.setdefault(rec.id, name)
        prompts.setdefault(rec.prompt, name)
    return ids, prompts


def is_mbpp_test(problem_id: str) -> bool:
    """Whether an id is one of MBPP's test split (``mbpp_11`` ... ``mbpp_510``), held out by ``data build``."""
    from codenas.data.mbpp import mbpp_split

    number = problem_id.removeprefix("mbpp_")
    return problem_id.startswith("mbpp_") and number.isdigit() and mbpp_split(int(number)) == "test"


def _pool_file(spec: Path) -> Path:
    path = Path(spec)
    if path.is_dir():
        path = path / MINED_RECORDS
    if not path.is_file():
        raise CodenasError("pool file not found (a record file, or a `data mine` folder with records.jsonl)", path)
    return path


def build_pool(files: Sequence[Path], data_dir: Path | None, val_path: Path | None) -> tuple[list[PoolProblem], dict]:
    """The pool's problems from record files (in file order; an id seen twice is taken once) and its counts
    (``problems``, ``unproven`` skipped, ``duplicates``, per ``sources``). Held-out problems are an error naming
    them (by id, or by a prompt identical to a held-out problem's)."""
    if not files:
        raise CodenasError("no pool given (--pool FILE: the data stage's train.jsonl, a mined records folder...)")
    held, held_prompts = held_out(data_dir, val_path)
    problems: list[PoolProblem] = []
    seen: set[str] = set()
    refused: dict[str, list[str]] = {}
    counts = {"unproven": 0, "duplicates": 0}
    first_bad: Path | None = None
    for spec in files:
        path = _pool_file(spec)
        for rec in read_records(path):
            name = held.get(rec.id) or ("mbpp-test" if is_mbpp_test(rec.id) else held_prompts.get(rec.prompt))
            if name is not None:
                refused.setdefault(name, []).append(rec.id)
                first_bad = first_bad or path
                continue
            if rec.proven is False:
                counts["unproven"] += 1
                continue
            if rec.id in seen:
                counts["duplicates"] += 1
                continue
            seen.add(rec.id)
            problems.append(PoolProblem(rec, str(path)))
    if refused:
        parts = [f"{name}: {', '.join(ids[:5])}" + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
                 for name, ids in refused.items()]
        raise CodenasError(f"the pool holds held-out problems, which are never trained on ({'; '.join(parts)}); "
                           "remove them from the pool", first_bad)
    if not problems:
        raise CodenasError("the pool has no problem with tests (every record was unproven or a duplicate)",
                           _pool_file(files[0]))
    sources: dict[str, int] = {}
    for p in problems:
        sources[p.record.source] = sources.get(p.record.source, 0) + 1
    return problems, {"problems": len(problems), **counts, "sources": sources}


def read_pool(out: Path) -> list[dict]:
    """The rows of ``OUT/pool.jsonl`` (id, source, file); none when it is absent."""
    path = Path(out) / POOL
    return [row for _, row in read_jsonl(path)] if path.is_file() else []


def read_rounds(out: Path) -> list[dict]:
    """The rows of ``OUT/rounds.jsonl`` (``ROW_FIELDS``), round 0 first; none when it is absent."""
    path = Path(out) / ROUNDS
    return [row for _, row in read_jsonl(path)] if path.is_file() else []


# --- one round -----------------------------------------------------------------------------------------------------


def keep_passing(problems: Sequence[Record], rows: Sequence[dict], samples: int, cap: int,
                 round_no: int) -> tuple[list[Record], dict]:
    """The passing samples to train on, as records (prompt + the passing completion as solution), and counts.

    ``rows`` are the judge's results, ``samples`` per problem in problem order. Per problem, in sample order:
    empty completions are not kept (they would teach the model to stop), a completion equal to one kept before
    (ignoring trailing whitespace) is a duplicate, and at most ``cap`` are kept. Counts: ``passed``, ``empty``,
    ``duplicates``, ``capped``, ``kept``, ``solved`` (problems with a passing sample) and ``solved_ids``.
    """
    if len(rows) != len(problems) * samples:
        raise CodenasError(f"expected {len(problems) * samples} judged samples, got {len(rows)}")
    kept: list[Record] = []
    counts = {"passed": 0, "empty": 0, "duplicates": 0, "capped": 0}
    solved: list[str] = []
    for i, problem in enumerate(problems):
        seen: set[str] = set()
        for j in range(samples):
            row = rows[i * samples + j]
            if row["task_id"] != problem.id:
                raise CodenasError(f"judged sample {i * samples + j + 1} is of {row['task_id']}, not {problem.id}")
            if not row["passed"]:
                continue
            counts["passed"] += 1
            if not solved or solved[-1] != problem.id:
                solved.append(problem.id)
            completion = row["completion"]
            key = "\n".join(line.rstrip() for line in completion.strip("\n").split("\n"))
            if not key.strip():
                counts["empty"] += 1
            elif key in seen:
                counts["duplicates"] += 1
            elif len(seen) >= cap:
                counts["capped"] += 1
            else:
                seen.add(key)
                kept.append(Record(id=f"{problem.id}@r{round_no}s{j}", source=problem.source, prompt=problem.prompt,
                                   solution=completion, tests=problem.tests, entry_point=problem.entry_point,
                                   meta={"improve": {"problem": problem.id, "round": round_no, "sample": j}}))
    return kept, {**counts, "kept": len(kept), "solved": len(solved), "solved_ids": solved}


def replay_draw(records: Sequence[Record], n_kept: int, share: float, seed: int) -> list[Record]:
    """``share`` of the round's training records from the supervised ``records`` (a seeded draw without
    replacement, at most all of them): ``round(share * n_kept / (1 - share))`` beside ``n_kept`` kept samples."""
    wanted = min(len(records), round(share * n_kept / (1 - share)))
    return random.Random(seed).sample(list(records), wanted) if wanted else []


def _round_training(base: TrainSettings, s: ImproveSettings, round_no: int) -> TrainSettings:
    """Fine-tuning's training settings with the round's steps, learning rate and seed; one evaluation, at the end."""
    return replace(base, max_steps=s.steps, lr=s.lr, min_lr=s.lr / 10, warmup_steps=min(base.warmup_steps, s.steps),
                   lr_decay_steps=None, eval_interval=0, seed=s.seed + round_no)


def _pool_sampling(s: ImproveSettings, val_sampling: SamplingSettings, round_no: int) -> SamplingSettings:
    return SamplingSettings(samples=s.samples, temperature=s.temperature, top_p=s.top_p,
                            max_new_tokens=s.max_new_tokens, seed=s.seed + round_no,
                            max_batch_size=val_sampling.max_batch_size, compile=val_sampling.compile)


def _round_problems(pool: list[PoolProblem], s: ImproveSettings, round_no: int) -> list[Record]:
    """The pool problems sampled this round: all, or a seeded draw of ``pool_limit`` in pool order."""
    records = [p.record for p in pool]
    if s.pool_limit is None or s.pool_limit >= len(records):
        return records
    chosen = set(random.Random(s.seed + round_no).sample(range(len(records)), s.pool_limit))
    return [r for i, r in enumerate(records) if i in chosen]


def _last_loss(run_dir: Path) -> float | None:
    from codenas.train.loop import read_metrics

    losses = [row["loss"] for row in read_metrics(run_dir) if isinstance(row.get("loss"), int | float)]
    return losses[-1] if losses else None


# --- the command ---------------------------------------------------------------------------------------------------


@locks_output("out")
def improve(*, init_checkpoint: str, pool: Sequence[Path], out: Path, data_dir: Path | None = None,
            val_path: Path | None = None, replay_path: Path | None = None,
            settings: ImproveSettings = ImproveSettings(), training: TrainSettings = FINETUNE_TRAIN,
            lora: LoraSettings = LoraSettings(), val_sampling: SamplingSettings = FINETUNE_SAMPLING,
            judge: JudgeSettings = JudgeSettings(), evaluation: EvalSettings = FINETUNE_EVAL) -> dict:
    """Run (or resume) ``settings.rounds`` rounds of expert iteration from ``init_checkpoint`` into ``out``.

    ``pool``: record files (or `data mine` folders) whose problems are sampled; ``val_path`` (default
    ``data_dir/val.jsonl``): the records val pass@1 is measured on; ``replay_path`` (default
    ``data_dir/train.jsonl``): the supervised records replayed beside the kept samples. ``training``, ``lora``
    (with ``settings.method == "lora"``), ``val_sampling``, ``judge`` and ``evaluation`` are fine-tuning's settings
    (``[finetune]``); the round's steps, lr and seed come from ``settings``. Returns ``{"rounds", "best_round",
    "best_checkpoint", "pool", "rows"}``.
    """
    from codenas.model.loading import is_adapter
    from codenas.train import distributed

    s, out = settings, Path(out)
    if distributed.context().is_distributed:
        raise CodenasError("train improve runs in one process: run it without torchrun (or set improve.rounds = 0)")
    if s.rounds < 1:
        raise CodenasError(f"rounds must be at least 1 to improve a model, got {s.rounds}")
    val_path = Path(val_path) if val_path is not None else _in_data(data_dir, VAL_RECORDS, "--val-path")
    replay_path = Path(replay_path) if replay_path is not None else _in_data(data_dir, TRAIN_RECORDS, "--replay-path")
    problems, pool_counts = build_pool([Path(p) for p in pool], data_dir, val_path)
    replay_records = read_records(replay_path)
    init_sha = _model_digest(init_checkpoint)
    _check_same_config(out, {
        "init_checkpoint": str(init_checkpoint), "init_sha256": init_sha,
        "pool": [{"file": str(_pool_file(Path(p)).resolve()), "sha256": sha256_file(_pool_file(Path(p)))}
                 for p in pool],
        "val": {"file": str(val_path.resolve()), "sha256": sha256_file(val_path)},
        "replay": {"file": str(replay_path.resolve()), "sha256": sha256_file(replay_path)},
        "settings": {k: v for k, v in asdict(s).items() if k != "rounds"}, "training": asdict(training),
        "lora": asdict(lora) if s.method == "lora" else None, "val_sampling": asdict(val_sampling),
        "judge": {k: v for k, v in asdict(judge).items() if k != "workers"}, "evaluation": asdict(evaluation)})
    write_jsonl(out / POOL, ({"id": p.record.id, "source": p.record.source, "file": p.file} for p in problems))
    say(f"pool: {pool_counts['problems']} problems ("
        + ", ".join(f"{n} {source}" for source, n in pool_counts["sources"].items())
        + f"); skipped {pool_counts['unproven']} unproven, {pool_counts['duplicates']} duplicates")

    start = str(init_checkpoint)
    if is_adapter(start):  # fine-tuning starts from a standalone model
        from codenas.train.lora import merge_adapter

        if not (out / INIT).is_dir():
            merge_adapter(Path(start), out / INIT, overwrite=True)
        start = str((out / INIT).resolve())

    rows = [_round_zero(out, start, val_path, training, val_sampling, judge, evaluation)]
    model = start
    for r in range(1, s.rounds + 1):
        folder = out / f"round{r}"
        if (folder / ROUND_FILE).is_file():
            row = read_json(folder / ROUND_FILE)
        else:
            row = _run_round(r, folder, out, model, problems, rows, replay_records, val_path, s, training, lora,
                             val_sampling, judge, evaluation)
        rows.append(row)
        write_jsonl(out / ROUNDS, ({k: row.get(k) for k in ROW_FIELDS} for row in rows))
        model = str((out / row["model"]).resolve())
    best = _keep_best(out, rows, start)
    say(f"best: round {best['round']} ({_val_text(best)}) -> {out / BEST_MODEL}")
    return {"rounds": s.rounds, "best_round": best["round"], "best_checkpoint": str(out / BEST_MODEL),
            "pool": pool_counts, "rows": [{k: row.get(k) for k in ROW_FIELDS} for row in rows]}


def _in_data(data_dir: Path | None, name: str, flag: str) -> Path:
    if data_dir is None:
        raise CodenasError(f"give the data folder (--data-dir) or {flag}")
    path = Path(data_dir) / name
    if not path.is_file():
        raise CodenasError(f"no {name} in the data folder (`codenas data build` writes it)", data_dir)
    return path


def _model_digest(spec: str) -> str | None:
    """The sha256 of a model folder's weights (so a rerun notices another starting model), when there is one."""
    folder = Path(spec)
    for name in (WEIGHTS, ADAPTER_WEIGHTS):
        if (folder / name).is_file():
            return sha256_file(folder / name)
    return None


def _check_same_config(out: Path, config: dict) -> None:
    """Write ``OUT/improve.json``; when it is there already, the rounds in ``out`` must come from the same
    settings, pool and starting model (more rounds may be asked for)."""
    path = out / SETTINGS
    if path.is_file():
        old = read_json(path)
        differ = sorted(k for k in set(old) | set(config) if old.get(k) != _jsonable(config.get(k)))
        if differ:
            raise CodenasError(f"this folder holds rounds made with other {', '.join(differ)}: choose a new --out "
                               "(or delete this one) to start again", out)
    atomic_write_json(path, config)


def _jsonable(value):
    return json.loads(json.dumps(value))


def _val_metrics(metrics: dict) -> dict:
    return {"val_loss": metrics.get("val_loss"), "val_passed": metrics.get("val_passed"),
            "val_pass@1": metrics.get("val_pass@1")}


def _val_text(row: dict) -> str:
    parts = [f"val loss {row['val_loss']:.4f}"] if row.get("val_loss") is not None else []
    if row.get("val_pass@1") is not None:
        parts.append(f"val pass@1 {100 * row['val_pass@1']:.1f}% ({row['val_passed']:.0f} passed)")
    return ", ".join(parts) or "no val metrics"


def _round_zero(out: Path, start: str, val_path: Path, training: TrainSettings, val_sampling: SamplingSettings,
                judge: JudgeSettings, evaluation: EvalSettings) -> dict:
    """Round 0: the starting model's val loss and val pass@1, measured as every round's model is."""
    from codenas.model.loading import load_model
    from codenas.train import distributed
    from codenas.train.batching import encode_records
    from codenas.train.loop import autocast_dtype
    from codenas.train.sft import Evaluator

    folder = out / "round0"
    if (folder / ROUND_FILE).is_file():
        return read_json(folder / ROUND_FILE)
    began = time.perf_counter()
    ctx = distributed.setup(training.device)
    base = load_model(start, device=ctx.device)
    val_records = read_records(val_path)
    val_examples, _ = encode_records(val_records, base.tokenizer, base.eot_id, base.context_length)
    evaluator = Evaluator(base, val_examples, val_records[: evaluation.limit], val_sampling, judge,
                          training.batch_size, folder, ctx)
    amp = autocast_dtype(training.dtype, ctx.device)
    base.model.eval()
    with torch.no_grad(), torch.autocast(ctx.device.type, dtype=amp) if amp else contextlib.nullcontext():
        metrics = evaluator(base.model, 0)
    row = {"round": 0, "pool_problems": 0, "samples": 0, "solved": None, "pass_at_k": {}, "kept": 0,
           "new_problems": 0, "replay": 0, "train_loss": None, **_val_metrics(metrics),
           "wall_s": time.perf_counter() - began, "trained": False, "model": _relative(out, start)}
    atomic_write_json(folder / ROUND_FILE, row)
    say(f"round 0 (the starting model): {_val_text(row)}")
    return row


def _relative(out: Path, path: str) -> str:
    """A model path as rounds.jsonl holds it: relative to OUT when inside it, else absolute."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(out.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def _run_round(r: int, folder: Path, out: Path, model: str, pool: list[PoolProblem], rows: list[dict],
               replay_records: list[Record], val_path: Path, s: ImproveSettings, training: TrainSettings,
               lora: LoraSettings, val_sampling: SamplingSettings, judge: JudgeSettings,
               evaluation: EvalSettings) -> dict:
    """Sample, judge, keep, fine-tune and evaluate one round; returns its row (also written to round.json)."""
    from codenas.eval.generate import evaluate_model
    from codenas.eval.scoring import read_results
    from codenas.model.loading import load_model
    from codenas.train.sft import finetune

    began = time.perf_counter()
    problems = _round_problems(pool, s, r)
    sampling = _pool_sampling(s, val_sampling, r)
    ks = sorted({1, s.samples})
    say(f"round {r}: sampling {len(problems)} pool problems x {s.samples} samples")
    loaded = load_model(model, device=_device(training.device))
    summary = evaluate_model(loaded.model.eval(), loaded.tokenizer, problems, folder / SAMPLE_DIR, sampling, judge,
                             ks=ks, eot_id=loaded.eot_id)
    del loaded
    kept, counts = keep_passing(problems, read_results(folder / SAMPLE_DIR), s.samples, s.cap, r)
    solved_before = {i for prev in range(1, r) for i in _solved_ids(out / f"round{prev}")}
    new = [i for i in counts["solved_ids"] if i not in solved_before]
    write_records(folder / KEPT, kept)
    pass_at_k = summary["pass_at_k"]
    row = {"round": r, "pool_problems": len(problems), "samples": s.samples, "solved": counts["solved"],
           "pass_at_k": pass_at_k, "kept": len(kept), "new_problems": len(new), "replay": 0, "train_loss": None}
    pool_text = f"pool pass@{s.samples} {100 * pass_at_k.get(f'pass@{s.samples}', 0.0):.1f}%"
    if not kept:
        why = "no sample passed" if not counts["passed"] else "every passing sample was empty"
        say(f"round {r}: {why} ({counts['passed']} of {len(problems) * s.samples} passed, {pool_text}): nothing "
            f"to train on; the model stays that of round {r - 1}")
        previous = rows[-1]
        row.update({**_val_metrics(previous), "wall_s": time.perf_counter() - began, "trained": False,
                    "model": previous["model"], "solved_ids": counts["solved_ids"]})
        atomic_write_json(folder / ROUND_FILE, row)
        return row
    replay = replay_draw(replay_records, len(kept), s.replay, s.seed + r)
    write_records(folder / TRAIN_RECORDS, kept + replay)
    say(f"round {r}: {counts['solved']} of {len(problems)} problems solved ({pool_text}), {len(new)} for the first "
        f"time; kept {len(kept)} samples ({counts['duplicates']} duplicates, {counts['capped']} over the cap of "
        f"{s.cap}, {counts['empty']} empty), + {len(replay)} replay records")
    result = finetune(init_checkpoint=model, data_path=folder / TRAIN_RECORDS, val_path=val_path,
                      out=folder / TRAIN_DIR, training=_round_training(training, s, r),
                      lora=lora if s.method == "lora" else None, sampling=val_sampling, judge=judge,
                      evaluation=evaluation, overwrite=True)
    trained = Path(result["best_checkpoint"] or result["last_checkpoint"])
    if s.method == "lora":
        from codenas.train.lora import merge_adapter

        trained = merge_adapter(trained, folder / MERGED, overwrite=True)
    row.update({"replay": len(replay), "train_loss": _last_loss(folder / TRAIN_DIR),
                **_val_metrics(result["final_metrics"]), "wall_s": time.perf_counter() - began, "trained": True,
                "model": _relative(out, str(trained)), "solved_ids": counts["solved_ids"]})
    atomic_write_json(folder / ROUND_FILE, row)
    say(f"round {r}: {_val_text(row)}")
    return row


def _device(device: str) -> str:
    from codenas.model.loading import resolve_device

    return str(resolve_device(device))


def _solved_ids(folder: Path) -> list[str]:
    path = folder / ROUND_FILE
    return read_json(path).get("solved_ids", []) if path.is_file() else []


def _best_row(rows: list[dict]) -> dict:
    """The round whose model did best on the val records: most val samples passed, then the lower val loss, then
    the earlier round."""
    def key(row: dict) -> tuple:
        passed = row.get("val_passed")
        loss = row.get("val_loss")
        return (-(passed if passed is not None else -1), loss if loss is not None else float("inf"), row["round"])

    return min(rows, key=key)


def _keep_best(out: Path, rows: list[dict], start: str) -> dict:
    """Copy the best round's model to ``OUT/checkpoint_best`` (unless it is there already) and write best.json."""
    best = _best_row(rows)
    source = Path(start) if best["round"] == 0 else (out / best["model"])
    record = {"round": best["round"], "model": best["model"], **_val_metrics(best)}
    if not ((out / BEST).is_file() and read_json(out / BEST) == record and (out / BEST_MODEL).is_dir()):
        with atomic_directory(out / BEST_MODEL) as tmp:
            for item in source.iterdir():
                if item.name == TRAINER_STATE or item.name.startswith("."):
                    continue
                if item.is_dir():
                    shutil.copytree(item, tmp / item.name)
                else:
                    shutil.copy2(item, tmp / item.name)
        atomic_write_json(out / BEST, record)
    return best


def rounds_table(rows: list[dict]):
    """A rich Table of the rounds (``ROW_FIELDS``), for the CLI to print."""
    from rich.table import Table

    table = Table(title="expert iteration")
    for name in ("round", "pool solved", "pool pass@K", "kept", "new problems", "replay", "train loss", "val loss",
                 "val pass@1", "wall"):
        table.add_column(name, justify="right")
    for row in rows:
        k = row["samples"]
        pass_k = row["pass_at_k"].get(f"pass@{k}") if row["pass_at_k"] else None
        table.add_row(str(row["round"]), "-" if row["solved"] is None else f"{row['solved']}/{row['pool_problems']}",
                      "-" if pass_k is None else f"{100 * pass_k:.1f}% (K={k})", str(row["kept"]),
                      str(row["new_problems"]), str(row["replay"]),
                      "-" if row["train_loss"] is None else f"{row['train_loss']:.4f}",
                      "-" if row["val_loss"] is None else f"{row['val_loss']:.4f}",
                      "-" if row["val_pass@1"] is None else f"{100 * row['val_pass@1']:.1f}%",
                      f"{row['wall_s']:.0f} s")
    return table
