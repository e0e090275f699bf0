"""The names of what codenas writes: each stage's files, the run folder's layout, and the special tokens.

Every module that writes or reads one of these files takes its name from here, so that a reader (the report, the
run's stages, a later stage) never spells a writer's file name again. This module imports only the standard
library (and only ``pathlib``), so the lightest module can use it without loading torch, tokenizers or datatrove.
"""

from __future__ import annotations

from pathlib import Path

# --- special tokens ---------------------------------------------------------------------------------------------

EOT = "<|endoftext|>"  # id 0: ends each pretraining document and each supervised answer; sampling stops at it
PAD = "<|pad|>"  # id 1: fills batches; never trained on

# --- records and built folders (data build, corpus build, data mine) ---------------------------------------------

MANIFEST = "manifest.json"  # a built folder's description (data build, corpus build, data mine)
TRAIN_RECORDS = "train.jsonl"  # data build's training records
VAL_RECORDS = "val.jsonl"  # data build's validation records
BENCHMARKS_DIR = "benchmarks"  # data build's held-out benchmarks, one <name>.jsonl each
MINED_RECORDS = "records.jsonl"  # data mine's proven records
MBPP_FILE = "mbpp.jsonl"  # the downloaded MBPP in the user's cache
LOCK_FILE = ".codenas.lock"  # in an output folder while a command writes it
FORCED_VAL = "forced_val.json"  # corpus work folder: the document put in val so that val is not empty
EXECUTOR_PID = "executor.pid"  # corpus work folder, while a local build runs: its process group
MINE_SELECTED = "selected.jsonl"  # mine work folder: the functions selected for proof
MINE_SELECTED_COUNTS = "selected.json"  # mine work folder: the selection's counts
MINE_PROOFS = "proofs.jsonl"  # mine work folder: the proofs judged so far

# --- tokenizer, checkpoints and adapters ------------------------------------------------------------------------

TOKENIZER_FILE = "tokenizer.json"
WEIGHTS = "model.safetensors"
CHECKPOINT_META = "codenas.json"  # arch, tokenizer sha256, step, metrics; an adapter's pointer to its base
TRAINER_STATE = "trainer_state.pt"  # optimizer, RNG and data position, for exact resume
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # PEFT's
PEFT_README = "README.md"  # PEFT's model-card template (not kept)
HF_CONFIG = "config.json"  # a transformers model folder's
HF_TOKENIZER_CONFIG = "tokenizer_config.json"  # a transformers tokenizer's

# --- training -------------------------------------------------------------------------------------------------

LAST = "checkpoint_last"
BEST = "checkpoint_best"
METRICS = "metrics.jsonl"  # one JSON object per logged step
PRETRAIN_INFO = "pretrain.json"  # pretraining's settings
FINETUNE_INFO = "finetune.json"  # fine-tuning's settings, trainable and total parameter counts
MINED_TRAIN = "mined_train.jsonl"  # the mined records a fine-tuning run trained on
EVALS_DIR = "evals"  # fine-tuning's OUT/evals/step{N}/: samples, results and summary of each evaluation
IMPROVE_POOL = "pool.jsonl"
IMPROVE_ROUNDS = "rounds.jsonl"
IMPROVE_INFO = "improve.json"
IMPROVE_BEST = "best.json"
IMPROVE_ROUND = "round.json"
IMPROVE_SAMPLE_DIR = "sample"
IMPROVE_KEPT = "kept.jsonl"
IMPROVE_TRAIN_DIR = "train"
IMPROVE_MERGED = "model"
IMPROVE_INIT = "init"

# --- evaluation -----------------------------------------------------------------------------------------------

SAMPLES = "samples.jsonl"
RESULTS = "results.jsonl"
RESULTS_JOURNAL = "results.partial.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS_TABLE = "checkpoints.json"
PASS_AT_1_PLOT = "pass_at_1.png"

# --- search ---------------------------------------------------------------------------------------------------

TRIALS = "trials.jsonl"
PARETO_FILE = "pareto.json"
PARETO_PLOT = "pareto.png"
BEST_ARCH = "best_arch.json"

# --- the run folder -------------------------------------------------------------------------------------------
# OUT/config.resolved.toml  stages.json  report.md  report.html  plots/*.png
# OUT/data/  corpus/built/  mine/built/  pretrain/  sft/  lora/  improve/  eval/<model>/<benchmark>/

RESOLVED_CONFIG = "config.resolved.toml"
STAGES_FILE = "stages.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
PLOTS_DIR = "plots"  # the report stage's folder
STARTED, DONE = ".started", ".done"  # markers in each stage's folder, holding its key
RESULT = "result.json"  # in a stage's folder: what its library call returned
BUILT = "built"  # the corpus and mine stages' output, inside their folders

# stage names, each also its folder in the run
DATA_STAGE = "data"
CORPUS_STAGE = "corpus"
MINE_STAGE = "mine"
PRETRAIN_STAGE = "pretrain"
SFT_STAGE = "sft"
LORA_STAGE = "lora"
IMPROVE_STAGE = "improve"  # also the name of its model in eval/ and the report
REPORT_STAGE = "report"
EVAL_DIR = "eval"  # the evaluation stages are eval/<model>/<benchmark>
TRAIN_STAGES = (PRETRAIN_STAGE, SFT_STAGE, LORA_STAGE)
BASE_MODEL = "base"  # the pretrained model, as named in eval/ and the report

# the report's plots, in PLOTS_DIR
VERDICTS_PLOT = "verdicts.png"
PASSK_PLOT = "passk.png"
LOSS_PLOT = "loss_curves.png"
PASS1_VS_STEP_PLOT = "pass1_vs_step.png"


def data_folder(out: Path) -> Path:
    """The data stage's records and benchmarks inside a run folder."""
    return Path(out) / DATA_STAGE


def corpus_folder(out: Path) -> Path:
    """The built corpus (and the run's tokenizer) inside a run folder."""
    return Path(out) / CORPUS_STAGE / BUILT


def mined_folder(out: Path) -> Path:
    """The mine stage's output (`codenas data mine`'s records.jsonl and manifest.json) inside a run folder."""
    return Path(out) / MINE_STAGE / BUILT


def eval_folder(out: Path, model: str, bench: str) -> Path:
    """Where the evaluation of ``model`` (``base``, ``sft``, ``lora``) on ``bench`` writes its samples and results."""
    return Path(out) / EVAL_DIR / model / bench


def eval_stage(model: str, bench: str) -> str:
    """The name of the stage that evaluates ``model`` on ``bench`` (its folder relative to the run folder)."""
    return f"{EVAL_DIR}/{model}/{bench}"


def trained_by(model: str) -> str:
    """The training stage that produced ``model``."""
    return PRETRAIN_STAGE if model == BASE_MODEL else model
