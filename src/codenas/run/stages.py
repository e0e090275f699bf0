"""The stages of ``codenas run``: what each one reads from the config and from upstream stages, and the library
function it calls. ``plan`` turns a resolved config into the ordered list of stages; ``run.pipeline`` runs them.

Every stage writes only inside its own folder, and its cache key covers exactly what decides that output:
its ``params`` (the config values it reads), its ``upstream`` stages and its ``inputs`` (hashes of files from
outside the run folder: MBPP, HumanEval, the corpus sources' listing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from codenas.benchmarks import BENCHMARKS
from codenas.data.benchmarks import NO_MBPP, NO_MBPP_FIX
from codenas.io import CodenasError, atomic_write_json, sha256_file
from codenas.names import (
    BASE_MODEL,
    BEST,
    CORPUS_STAGE,
    DATA_STAGE,
    IMPROVE_STAGE,
    LAST,
    MINE_STAGE,
    MINED_RECORDS,
    PLOTS_DIR,
    PRETRAIN_STAGE,
    REPORT_STAGE,
    RESULT,
    TOKENIZER_FILE,
    TRAIN_RECORDS,
    VAL_RECORDS,
    corpus_folder,
    data_folder,
    eval_folder,
    eval_stage,
    mined_folder,
    trained_by,
)
from codenas.progress import say
from codenas.run import cache
from codenas.run.config import finetune_stages, part_of, settings_of
from codenas.settings import (
    EVAL,
    LORA,
    TRAIN_FINETUNE,
    CorpusSettings,
    CorpusSourcesSettings,
    DataSettings,
    ImproveSettings,
    MineSettings,
    MineSourcesSettings,
    MixSettings,
    Part,
    PretrainSettings,
    TokenizerSettings,
    TrainSettings,
)

_LORA_ONLY_KEYS = tuple(LORA.keys().values())
IMPROVE = IMPROVE_STAGE  # the expert-iteration stage (and the name of its model in eval/ and the report)
MINE = MINE_STAGE  # the mined-records stage, when the plan has one: its proven records join the improve pool


@dataclass
class Stage:
    name: str  # "data", "corpus", "pretrain", "sft", "lora", "eval/<model>/<benchmark>", "report"
    folder: Path
    action: Callable[[Path, bool], None]  # (folder, resume) -> None; writes only inside folder
    params: dict[str, Any]
    upstream: tuple[str, ...] = ()
    inputs: dict[str, str | None] = field(default_factory=dict)
    distributed: bool = False  # under torchrun every rank runs it (DDP training); otherwise rank 0 alone


def plan(config: dict[str, dict[str, Any]], out: Path, mbpp: Path | None) -> list[Stage]:
    """The stages ``config`` asks for, in run order."""
    from codenas.data.mbpp import resolve_mbpp_path

    mbpp_path = resolve_mbpp_path(mbpp)
    stages = [_data_stage(config, out, mbpp_path), _corpus_stage(config, out, mbpp_path)]
    if config["mine"]["enabled"]:
        stages.append(_mine_stage(config, out, mbpp_path))
    stages.append(_pretrain_stage(config, out))
    methods = finetune_stages(config)
    stages += [_finetune_stage(config, out, method) for method in methods]
    models = (BASE_MODEL, *methods)
    if config[IMPROVE]["rounds"] > 0:
        stages.append(_improve_stage(config, out, methods[-1] if methods else PRETRAIN_STAGE,
                                     mined=any(s.name == MINE for s in stages)))
        models += (IMPROVE,)
    for bench in _benchmarks(config, mbpp_path):
        stages += [_eval_stage(config, out, model, bench) for model in models]
    stages.append(Stage(REPORT_STAGE, out / PLOTS_DIR, lambda folder, resume: _report(out), {},
                        upstream=tuple(s.name for s in stages)))
    return stages


def _benchmarks(config: dict[str, dict[str, Any]], mbpp_path: Path | None) -> list[str]:
    """The benchmarks to evaluate (their names are checked by the settings against the registry); one that
    ``data.holdout`` leaves in the training data is refused, one built from MBPP is skipped (with a note) when no
    MBPP file is available."""
    chosen = []
    holdout = config["data"]["holdout"]
    for name in config["eval"]["benchmarks"]:
        bench = BENCHMARKS[name]
        if holdout not in bench.held_out_with:
            needed = " or ".join(f"data.holdout = \"{h}\"" for h in bench.held_out_with)
            raise CodenasError(f"eval.benchmarks: {name} is only held out with {needed} (otherwise the model trains "
                               "on it)")
        if bench.needs_mbpp and mbpp_path is None:
            say(f"note: skipping {name}: {NO_MBPP}; to include it, {NO_MBPP_FIX}")
            continue
        chosen.append(name)
    return chosen


# --- data and corpus -----------------------------------------------------------------------------------------------


def _data_stage(config: dict, out: Path, mbpp_path: Path | None) -> Stage:
    from codenas.data.humaneval import HUMANEVAL_PATH

    params = dict(config["data"])
    settings = settings_of(config, "data")[DataSettings]
    inputs = {"humaneval": sha256_file(HUMANEVAL_PATH), "mbpp": sha256_file(mbpp_path) if mbpp_path else None}

    def action(folder: Path, resume: bool) -> None:
        from codenas.data.build import build_dataset

        # `data build` swaps in its folder whole and holds only its own files; it does not resume, so the
        # started marker has no use here (without it, a killed build is started afresh next time).
        (folder / cache.STARTED).unlink(missing_ok=True)
        build_dataset(mbpp=mbpp_path, out=folder, seed=settings.seed, val_size=settings.val_size,
                      holdout=settings.holdout, diff_inputs=settings.diff_inputs)

    return Stage(DATA_STAGE, data_folder(out), action, params, inputs=inputs)


# --- training ------------------------------------------------------------------------------------------------------


class _Start(TypedDict):
    """How a training call starts: resume from ``checkpoint_last``, or overwrite what is there."""

    resume: bool
    overwrite: bool


def _fresh_or_resumable(folder: Path, resume: bool) -> _Start:
    """The training call's ``resume``/``overwrite``: resume from ``checkpoint_last`` when an interrupted run of
    this stage left one (also when a kill between the renames of its replacement left it aside); otherwise start
    over, removing what the interrupted run wrote (the run decides, so nothing is refused)."""
    from codenas.io import recover_directory

    if resume and recover_directory(folder / LAST).is_dir():
        return {"resume": True, "overwrite": False}
    return {"resume": False, "overwrite": True}


def _pretrain_stage(config: dict, out: Path) -> Stage:
    from codenas.model.config import load_arch
    from codenas.paths import resolve_config

    params = dict(config["pretrain"])
    objects = settings_of(config, "pretrain")
    settings, training = objects[PretrainSettings], objects[TrainSettings]
    load_arch(settings.arch)  # a bad arch file fails here, before any stage runs, naming the file and field
    arch_sha = sha256_file(resolve_config(settings.arch, ".json"))

    def action(folder: Path, resume: bool) -> None:
        from codenas.model.tokenizer import load_tokenizer
        from codenas.train.pretrain import pretrain

        tokenizer = run_tokenizer(out)
        arch = dataclasses.replace(load_arch(settings.arch), vocab_size=load_tokenizer(tokenizer).get_vocab_size())
        result = pretrain(settings, training, arch=arch, tokenizer=tokenizer, out=folder, corpus=corpus_folder(out),
                          **_fresh_or_resumable(folder, resume))
        atomic_write_json(folder / RESULT, result)

    return Stage(PRETRAIN_STAGE, out / PRETRAIN_STAGE, action, params, upstream=(CORPUS_STAGE,),
                 inputs={"arch": arch_sha, "world_size": _world_size()}, distributed=True)


def run_tokenizer(out: Path) -> Path:
    """The run's tokenizer: the one its corpus build trained."""
    return corpus_folder(out) / TOKENIZER_FILE


def _corpus_stage(config: dict, out: Path, mbpp_path: Path | None) -> Stage:
    """The pretraining corpus (``codenas.corpus``): the sources of ``[corpus]``, filtered, deduplicated,
    decontaminated against the benchmarks, a BPE of ``tokenizer.vocab_size`` tokens trained on its clean training
    documents, and tokenized with it."""
    from codenas.corpus.sources import listing_digest, resolve_sources

    objects = settings_of(config, "corpus")
    sources, settings = list(objects[CorpusSourcesSettings].sources), objects[CorpusSettings]
    vocab_size = settings_of(config, "tokenizer")[TokenizerSettings].vocab_size
    # workers change nothing in the output
    params = {"sources": sources, **settings.output_settings(), "vocab_size": vocab_size}
    inputs = {"sources": listing_digest(resolve_sources(sources, settings.max_files)),
              "mbpp": sha256_file(mbpp_path) if mbpp_path else None}

    def action(folder: Path, resume: bool) -> None:
        from codenas.corpus.build import build_corpus, split_line

        manifest = build_corpus(sources, corpus_folder(out), vocab_size=vocab_size, settings=settings,
                                mbpp=mbpp_path)
        say(f"corpus: {split_line(manifest)}")
        atomic_write_json(folder / RESULT, {"documents": manifest["documents"], "tokens": manifest["tokens"],
                                            "rules": manifest["rules"], "contaminated": len(manifest["contaminated"])})

    return Stage(CORPUS_STAGE, out / CORPUS_STAGE, action, params, inputs=inputs)


def _mine_stage(config: dict, out: Path, mbpp_path: Path | None) -> Stage:
    """Function-level records mined from the sources of ``[mine]`` (``codenas.corpus.mine``), decontaminated
    against the benchmarks; fine-tuning mixes them in (``finetune.mined_share``)."""
    from codenas.corpus.sources import listing_digest, resolve_sources

    objects = settings_of(config, "mine")
    sources, settings = list(objects[MineSourcesSettings].sources), objects[MineSettings]
    params = {"sources": sources, **settings.output_settings()}  # workers and tasks change nothing in the output
    inputs = {"sources": listing_digest(resolve_sources(sources, settings.max_files or 0)),
              "mbpp": sha256_file(mbpp_path) if mbpp_path else None}

    def action(folder: Path, resume: bool) -> None:
        from codenas.corpus.mine import mine

        manifest = mine(sources, mined_folder(out), settings=settings, mbpp=mbpp_path)
        atomic_write_json(folder / RESULT, {**{k: manifest[k] for k in ("records", "proven", "unproven", "functions",
                                                                          "files", "rules", "elapsed")},
                                            "contaminated": len(manifest["contaminated"])})

    return Stage(MINE, out / MINE, action, params, inputs=inputs)


def _world_size() -> str:
    """torchrun's process count: batch sizes are per process, so it changes what a training stage computes."""
    from codenas.train.distributed import context

    return str(context().world_size)


def best_model(folder: Path) -> Path:
    """The model a training stage hands on: its best checkpoint (or adapter), else its last one."""
    for name in (BEST, LAST):
        if (folder / name).is_dir():
            return folder / name
    raise CodenasError("training stage left no checkpoint", folder)


def _finetune_stage(config: dict, out: Path, method: str) -> Stage:
    """Instruction tuning (``sft``) or LoRA of the pretrained base on the train records (with a share of mined
    records when ``finetune.mined_share`` > 0); pass@1 on val records (sampled as the eval section says) picks the
    best checkpoint."""
    params = {k: v for k, v in config["finetune"].items() if k != "method"}
    if method == "sft":
        params = {k: v for k, v in params.items() if k not in _LORA_ONLY_KEYS}
    training, sampling, judge, evaluation = (part_of(config, "finetune", part) for part in TRAIN_FINETUNE)
    lora = part_of(config, "finetune", LORA) if method == "lora" else None
    mix = part_of(config, "finetune", Part(MixSettings))
    upstream: tuple[str, ...] = (DATA_STAGE, PRETRAIN_STAGE)
    if mix.mined_share > 0:
        if not config["mine"]["enabled"]:
            raise CodenasError("finetune.mined_share > 0 needs the mine stage: set mine.enabled = true")
        upstream += (MINE,)

    def action(folder: Path, resume: bool) -> None:
        from codenas.train.sft import finetune

        result = finetune(init_checkpoint=str(best_model(out / PRETRAIN_STAGE)),
                          data_path=data_folder(out) / TRAIN_RECORDS, val_path=data_folder(out) / VAL_RECORDS,
                          out=folder, training=training, lora=lora, sampling=sampling, judge=judge,
                          evaluation=evaluation,
                          mined=mined_folder(out) / MINED_RECORDS if mix.mined_share > 0 else None, mix=mix,
                          **_fresh_or_resumable(folder, resume))
        atomic_write_json(folder / RESULT, result)

    return Stage(method, out / method, action, params, upstream=upstream,
                 inputs={"world_size": _world_size()}, distributed=True)


def _improve_stage(config: dict, out: Path, source: str, mined: bool) -> Stage:
    """Expert iteration from the last fine-tuned model (``train.improve``): each round samples the pool (the
    data stage's train.jsonl, and the mined records when the run mines), keeps the passing samples and fine-tunes
    on them with fine-tuning's training, LoRA, judge and val settings; the round best on the val records is kept."""
    if int(_world_size()) > 1:
        raise CodenasError("improve.rounds > 0 runs in one process: set improve.rounds = 0 under torchrun, or run "
                           "`codenas train improve` on its own afterwards")
    settings = settings_of(config, IMPROVE)[ImproveSettings]
    finetune_params = {k: v for k, v in config["finetune"].items() if k != "method"}
    if settings.method == "sft":
        finetune_params = {k: v for k, v in finetune_params.items() if k not in _LORA_ONLY_KEYS}
    params = {**config[IMPROVE], "finetune": finetune_params}
    training, sampling, judge, evaluation = (part_of(config, "finetune", part) for part in TRAIN_FINETUNE)
    lora = part_of(config, "finetune", LORA)
    pool = [data_folder(out) / TRAIN_RECORDS] + ([mined_folder(out)] if mined else [])

    def action(folder: Path, resume: bool) -> None:
        from codenas.train.improve import improve

        result = improve(init_checkpoint=str(best_model(out / source)), pool=pool, out=folder,
                         data_dir=data_folder(out), settings=settings, training=training, lora=lora,
                         val_sampling=sampling, judge=judge, evaluation=evaluation)
        atomic_write_json(folder / RESULT, result)

    return Stage(IMPROVE, out / IMPROVE, action, params, upstream=(DATA_STAGE, source, *((MINE,) if mined else ())))


# --- evaluation and report -----------------------------------------------------------------------------------------


def _eval_stage(config: dict, out: Path, model: str, bench: str) -> Stage:
    """Sample the model on a held-out benchmark (the first ``limit`` problems) and judge the samples."""
    params = {**{k: v for k, v in config["eval"].items() if k != "benchmarks"}, "benchmark": bench}
    source = trained_by(model)
    sampling, judge, evaluation = (part_of(config, "eval", part) for part in EVAL)

    def action(folder: Path, resume: bool) -> None:
        from codenas.data.benchmarks import load_problems
        from codenas.eval.checkpoints import evaluate_checkpoints
        from codenas.eval.verdicts import shares_text

        row = evaluate_checkpoints([str(best_model(out / source))], load_problems(bench, data_folder(out)), folder,
                                   sampling, judge, evaluation)[0]
        passed = ", ".join(f"{k} {100 * v:.1f}%" for k, v in row["pass_at_k"].items())
        say(f"{model} on {bench} ({row['n_problems']} problems): {passed}; {shares_text(row)}")

    return Stage(eval_stage(model, bench), eval_folder(out, model, bench), action, params,
                 upstream=(DATA_STAGE, source))


def _report(out: Path) -> None:
    from codenas.run.report import write_report

    md, html = write_report(out)
    say(f"report: {md} and {html}")
