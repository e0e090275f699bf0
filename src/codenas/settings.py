"""Settings: one frozen dataclass per concern, and everything generated from their fields.

Each setting is written once, as a dataclass field with its default and a one-line help::

    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps in total.", "min": 1})

From the fields come the click options of every command (``options``), the TOML schema of ``codenas run``
(``SECTIONS``: validation, documentation, the resolved ``config.resolved.toml``) and the mapping between them: a
field ``lr_decay_steps`` is the CLI flag ``--lr-decay-steps`` (also accepted as ``--lr_decay_steps``, the seed's
spelling) and the TOML key ``lr_decay_steps``. Library functions take the objects (``pretrain(...,
train=TrainSettings(...))``), never long keyword lists.

A command or a TOML section is a list of ``Part``\\s: a settings class, an optional ``prefix`` (fine-tuning's
val evaluation exposes ``SamplingSettings`` as ``eval_temperature``, ``eval_top_p``, ...) and optional
``defaults`` (an instance: fine-tuning uses other ``TrainSettings`` defaults than pretraining).

Field metadata: ``help`` (required, one line), ``min`` / ``max`` (inclusive bounds), ``gt`` (exclusive lower
bound), ``choices``, ``required`` (no usable default: `codenas run` refuses ``""``, and a command without
``--config`` makes the flag required). Types: ``int``, ``float``, ``str``, ``bool``, ``int | None`` (None =
"unset"; written ``0`` in TOML and on the command line, so ``0`` means unset: "all", "every core"),
``tuple[str, ...]`` and ``tuple[int, ...]`` (TOML lists; comma-separated on the command line). A class may
define ``_check(self)`` for rules across fields; its messages start with the field name, so they can be
qualified with the section.

To add a setting: add the field to its class; every command and section that uses the class gets it (give it a
value in the presets in configs/*.toml, which must set every key). To add a concern: write a frozen dataclass
deriving from ``Settings`` here, add a ``Part`` of it to ``SECTIONS`` (a new section, or an existing one) and
to the command's ``@options(...)`` in cli.py; then take the object in the library function. See docs/settings.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from codenas.benchmarks import HOLDOUTS, RUN_BENCHMARKS
from codenas.io import CodenasError
from codenas.progress import say


class Settings:
    """Base of every settings dataclass: field values are checked against their metadata on construction."""

    __dataclass_fields__: typing.ClassVar[dict[str, dataclasses.Field[Any]]]  # every subclass is a dataclass

    def __post_init__(self) -> None:
        cls: type = type(self)
        for f in fields(self):
            if "help" not in f.metadata:
                continue  # a field a subclass adds beside the settings (a path of the run, ...)
            problem = field_problem(f, getattr(self, f.name), type_hints(cls)[f.name])
            if problem:
                raise CodenasError(f"{f.name} {problem}")
        self._check()

    def _check(self) -> None:
        """Rules across fields (raise CodenasError with a message that starts with a field name)."""


def _h(default: Any, help: str, **rules: Any) -> Any:  # noqa: A002 - the metadata key every helper uses
    """A field with its default, its help and its validation rules (see the module docstring)."""
    if isinstance(default, list):
        raise TypeError("use a tuple default")
    return field(default=default, metadata={"help": help, **rules})


# --- validation from field metadata ----------------------------------------------------------------------


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[type, bool, type | None]:
    """(scalar type, optional, item type of a tuple or None) of a field annotation."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0], True, None
    if origin is tuple:
        return tuple, False, typing.get_args(tp)[0]
    return tp, False, None


def field_problem(f: dataclasses.Field, value: Any, tp: Any) -> str | None:
    """What is wrong with ``value`` for field ``f`` ("must be at least 1, got -3"), or None."""
    base, optional, item = _base_type(tp)
    if value is None:
        return None if optional else f"must be set, got {value!r}"
    if item is not None:  # a tuple
        if not isinstance(value, tuple):
            return f"must be a list, got {value!r}"
        for v in value:
            problem = _scalar_problem(f, v, item)
            if problem:
                if item is int and f.metadata.get("min") == 1:
                    return f"must hold positive integers, got {v!r}"
                return f"must hold only values that {problem}"
        return None
    return _scalar_problem(f, value, base)


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _scalar_problem(f: dataclasses.Field, value: Any, base: type) -> str | None:
    ok = isinstance(value, base) and (base is bool or not isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        return f"must be {_TYPE_NAMES[base]}, got {value!r}"
    m = f.metadata
    if "choices" in m and value not in m["choices"]:
        return f"must be one of {', '.join(map(str, m['choices']))}, got {value!r}"
    if "min" in m and value < m["min"]:
        return f"must be at least {m['min']}, got {value!r}"
    if "gt" in m and value <= m["gt"]:
        return f"must be greater than {m['gt']}, got {value!r}"
    if "max" in m and value > m["max"]:
        return f"must be at most {m['max']}, got {value!r}"
    if "lt" in m and value >= m["lt"]:
        return f"must be less than {m['lt']}, got {value!r}"
    return None


# --- the settings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSettings(Settings):
    """How `data build` splits and holds out records."""

    seed: int = _h(1234, "Seed of the train/val shuffle.")
    val_size: int = _h(50, "Records of the shuffled training pool that go to val.jsonl instead of train.jsonl.",
                       min=0)
    holdout: str = _h("mini", "HumanEval problems kept out of training: the fixed 20 (mini) or all 164 (humaneval).",
                      choices=HOLDOUTS)
    diff_inputs: int = _h(30, "Differential-test inputs per held-out problem, mutated from its asserts' inputs, with "
                              "outputs from its reference solution (0: none).", min=0)


@dataclass(frozen=True)
class CorpusSourcesSettings(Settings):
    """What the corpus stage of `codenas run` builds from (`codenas corpus build` takes them as arguments)."""

    sources: tuple[str, ...] = _h(("stdlib",), "Corpus sources: folders, files, stdlib, site-packages, fsspec URLs "
                                               "(see `codenas corpus build --help`).")

    def _check(self) -> None:
        if not self.sources:
            raise CodenasError("sources must name at least one source (e.g. [\"stdlib\"])")


EXECUTORS = ("local", "ray", "slurm")  # how `corpus build` runs its stages: codenas.corpus.executor


@dataclass(frozen=True)
class CorpusSettings(Settings):
    """How `corpus build` filters, deduplicates, splits and shards its sources (the run's ``[corpus]``)."""

    max_files: int | None = _h(None, "Read at most this many files per source (a deterministic sample by path hash; "
                                     "0: all).", min=1)
    text_field: str = _h("content", "Field holding the text in JSONL, Parquet and saved `datasets` sources.")
    drop_not_utf8: bool = _h(True, "Drop documents that are not valid UTF-8.")
    drop_autogenerated: bool = _h(True, "Drop auto-generated files (\"auto-generated\", \"do not edit\"... in their "
                                        "first lines).")
    drop_data_like: bool = _h(True, "Drop data-like files (see --max-line-length, --max-mean-line-length, "
                                    "--min-alnum-fraction).")
    drop_size: bool = _h(True, "Drop files outside --min-bytes..--max-bytes.")
    min_bytes: int = _h(64, "Smallest document kept, in bytes.", min=0)
    max_bytes: int = _h(1_000_000, "Largest document kept, in bytes.", min=1)
    max_line_length: int = _h(1000, "Data-like: longest line allowed, in characters.", min=1)
    max_mean_line_length: float = _h(100.0, "Data-like: largest mean line length allowed, in characters.", gt=0)
    min_alnum_fraction: float = _h(0.25, "Data-like: smallest share of alphanumeric characters allowed.", min=0,
                                   max=1)
    dedup_exact: bool = _h(True, "Drop exact duplicates (same content hash).")
    dedup_near: bool = _h(True, "Drop near duplicates (MinHash LSH).")
    near_threshold: float = _h(0.8, "Estimated Jaccard similarity (of 5-grams of code words) above which two "
                                    "documents are near duplicates; sets the LSH bands.", gt=0, lt=1)
    decontaminate: bool = _h(True, "Drop documents sharing a 13-gram of code tokens with a benchmark problem.")
    val_fraction: float = _h(0.01, "Share of documents (chosen by a hash of the document id) in the validation "
                                   "split; with two documents or more, at least one.", min=0, lt=1)
    seed: int = _h(0, "Seed of the split hash and of the MinHash functions.")
    tasks: int = _h(8, "Shards the work is cut into (the output depends on it, not on --workers).", min=1)
    workers: int | None = _h(None, "Processes working at once (0: one per core).", min=1)
    executor: str = _h("local", "Where the tasks run: local (this machine's cores), ray (the Ray cluster at "
                                "$RAY_ADDRESS, else one started here) or slurm (sbatch jobs; needs a shared work "
                                "folder, see docs/corpus.md).", choices=EXECUTORS)
    tokenizer_sample_bytes: int = _h(100_000_000, "With --vocab-size: train the tokenizer on at most this many bytes "
                                                  "of training documents.", min=1)

    def _check(self) -> None:
        if self.max_bytes <= self.min_bytes:
            raise CodenasError(f"max_bytes must be larger than min_bytes ({self.min_bytes}), got {self.max_bytes}")
        if not self.text_field:
            raise CodenasError("text_field must not be empty")

    def output_settings(self) -> dict[str, Any]:
        """The settings that decide the output (everything but ``workers`` and ``executor``)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("workers", "executor")}


@dataclass(frozen=True)
class MineSourcesSettings(Settings):
    """Whether `codenas run` mines function-level records for fine-tuning, and from what (`codenas data mine`
    takes the sources as arguments)."""

    enabled: bool = _h(False, "Run the mine stage (fine-tuning mixes its records in with finetune.mined_share).")
    sources: tuple[str, ...] = _h(("stdlib",), "Sources to mine: folders, files, stdlib, site-packages, fsspec URLs "
                                               "(as `codenas corpus build` takes them).")

    def _check(self) -> None:
        if self.enabled and not self.sources:
            raise CodenasError("sources must name at least one source (e.g. [\"stdlib\"]) when mining is enabled")


@dataclass(frozen=True)
class MineSettings(Settings):
    """`codenas data mine`: which functions become records (docs/mining.md lists every rule)."""

    max_files: int | None = _h(None, "Read at most this many files per source, a deterministic sample (0: all).",
                               min=1)
    text_field: str = _h("content", "Field holding the code in JSONL, Parquet and saved `datasets` sources.")
    min_body_lines: int = _h(1, "Shortest body kept, in code lines (blank and comment lines do not count).", min=1)
    max_body_lines: int = _h(12, "Longest body kept, in code lines.", min=1)
    min_docstring_chars: int = _h(20, "Shortest docstring kept, in characters.", min=0)
    max_docstring_chars: int = _h(1500, "Longest docstring kept, in characters (the prompt must fit a context).",
                                  min=1)
    max_constant_chars: int = _h(200, "A module-level constant the function reads is copied into the prompt when "
                                      "its assignment is at most this long (else imported from its module).", min=0)
    keep_private: bool = _h(False, "Keep _private functions (helpers of their module).")
    keep_generators: bool = _h(False, "Keep generators and async functions.")
    decontaminate: bool = _h(True, "Drop functions sharing a 13-gram with a held-out benchmark problem or repeating "
                                   "one's normalised body.")
    dedup_near: bool = _h(True, "Drop near duplicates of a kept function's body (MinHash LSH).")
    near_threshold: float = _h(0.8, "Estimated Jaccard similarity (5-grams of code words) of two bodies above which "
                                    "they are near duplicates.", gt=0, lt=1)
    proof_timeout: float = _h(10.0, "CPU seconds per doctest proof in the judge.", gt=0)
    seed: int = _h(0, "Seed of the MinHash functions.")
    tasks: int = _h(8, "Shards the reading and cutting is split into (the output does not depend on it).", min=1)
    workers: int | None = _h(None, "Processes cutting functions and judging doctests at once (0: one per core).",
                             min=1)

    def _check(self) -> None:
        if self.min_body_lines > self.max_body_lines:
            raise CodenasError(f"min_body_lines ({self.min_body_lines}) must not exceed max_body_lines "
                               f"({self.max_body_lines})")
        if self.min_docstring_chars > self.max_docstring_chars:
            raise CodenasError(f"min_docstring_chars ({self.min_docstring_chars}) must not exceed "
                               f"max_docstring_chars ({self.max_docstring_chars})")

    def output_settings(self) -> dict[str, Any]:
        """The settings that decide the output (all but ``workers`` and ``tasks``)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("workers", "tasks")}


@dataclass(frozen=True)
class TokenizerSettings(Settings):
    """The byte-level BPE tokenizer, trained by the corpus build on its clean training documents."""

    vocab_size: int = _h(8192, "Tokens in the vocabulary (2 special tokens + 256 bytes + merges).", min=258)


@dataclass(frozen=True)
class PretrainSettings(Settings):
    """What pretraining trains: the architecture and its share of the corpus."""

    arch: str = _h("", "Arch JSON: a name in configs/ (e.g. tiny) or a path.", required=True)
    max_tokens: int | None = _h(None, "Use only the first N training tokens (0: all).", min=1)


OPTIMIZERS = ("adamw", "muon")
DTYPES = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainSettings(Settings):
    """Optimisation and bookkeeping of the training loop (``batch_size`` is per process)."""

    max_steps: int = _h(1000, "Optimizer steps in total.", min=1)
    batch_size: int = _h(16, "Sequences per micro-batch (per process).", min=1)
    grad_accum: int = _h(1, "Micro-batches accumulated per optimizer step.", min=1)
    lr: float = _h(6e-4, "Peak learning rate.", gt=0)
    min_lr: float = _h(6e-5, "Learning rate at the end of the cosine decay.", min=0)
    warmup_steps: int = _h(100, "Linear warmup steps.", min=0)
    lr_decay_steps: int | None = _h(None, "Step where the cosine reaches min_lr (0: max_steps).", min=1)
    weight_decay: float = _h(0.1, "AdamW weight decay (matrices and embeddings only).", min=0)
    beta1: float = _h(0.9, "AdamW beta1.", min=0, lt=1)
    beta2: float = _h(0.95, "AdamW beta2.", min=0, lt=1)
    grad_clip: float = _h(1.0, "Clip the gradient norm to this (0: off).", min=0)
    eval_interval: int = _h(250, "Evaluate and save checkpoints every N steps (0: only at the end).", min=0)
    eval_batches: int = _h(20, "Fixed validation batches per evaluation (pretraining).", min=1)
    log_interval: int = _h(10, "Append a row to metrics.jsonl every N steps.", min=1)
    seed: int = _h(1337, "Seed of init, batch order and dropout.")
    dtype: str = _h("auto", "bf16 autocast or fp32; auto = bf16 on a CUDA GPU that supports it, fp32 on CPUs "
                            "(bf16 autocast is slower than fp32 there).", choices=DTYPES)
    device: str = _h("auto", "cpu, cuda, cuda:1... (auto: CUDA if present).")
    compile: bool = _h(False, "torch.compile the model.")
    peak_flops: float = _h(0.0, "Device peak FLOP/s for the MFU logged beside tokens/s (0: the table's dense bf16 "
                                "peak of this GPU, e.g. 989e12 for H100/H200; CPUs have none).", min=0)
    optimizer: str = _h("adamw", "adamw, or muon: torch.optim.Muon for the 2-D hidden matrices, AdamW (at lr) for "
                                 "the embeddings, output head, norms and biases.", choices=OPTIMIZERS)
    muon_lr: float = _h(0.02, "Peak learning rate of the Muon-updated matrices (with optimizer muon).", gt=0)
    muon_momentum: float = _h(0.95, "Muon's momentum (with optimizer muon).", min=0, lt=1)
    muon_weight_decay: float = _h(0.0, "Decoupled weight decay of the Muon-updated matrices (with optimizer muon).",
                                  min=0)

    def _check(self) -> None:
        if self.min_lr > self.lr:
            raise CodenasError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")


FINETUNE_TRAIN = TrainSettings(lr=1e-4, min_lr=1e-5, batch_size=8, warmup_steps=0, weight_decay=0.0,
                               eval_interval=100, seed=1234)
"""The seed's fine-tuning defaults: lr 1e-4 (cosine to 1e-5), batch 8, no warmup, no weight decay."""


@dataclass(frozen=True)
class LoraSettings(Settings):
    """LoRA adapters (peft); exposed with the prefix ``lora_`` (``--lora-rank``, ``lora_rank``)."""

    rank: int = _h(8, "LoRA rank r.", min=1)
    alpha: int = _h(16, "LoRA alpha (the update is scaled by alpha / r).", min=1)
    dropout: float = _h(0.05, "Dropout on the LoRA input.", min=0, lt=1)
    targets: tuple[str, ...] = _h((), "Module names to adapt, comma-separated (empty: qkv_proj,out_proj; "
                                      "hf: bases by layout).")


@dataclass(frozen=True)
class SamplingSettings(Settings):
    """How completions are sampled from a model."""

    samples: int = _h(1, "Samples per problem (pass@k needs samples >= k; fine-tuning: 0 = val loss only).",
                      min=0)
    temperature: float = _h(0.8, "Sampling temperature (0: greedy).", min=0)
    top_p: float = _h(0.95, "Nucleus sampling mass.", gt=0, max=1)
    max_new_tokens: int = _h(256, "Token budget per sample.", min=1)
    seed: int = _h(0, "Sampling seed.")
    max_batch_size: int | None = _h(None, "Rows (prompts x samples) decoded together; a finished row is refilled "
                                          "from the waiting prompts (0: as many as fit 1 GiB of KV cache on CPU, "
                                          "half the free GPU memory; at most 256).", min=1)
    compile: bool = _h(False, "Compile the decode step (torch.compile, CUDA graphs over bucketed shapes); CUDA only.")


@dataclass(frozen=True)
class JudgeSettings(Settings):
    """How the sandboxed judge runs each sample."""

    timeout: float = _h(3.0, "CPU seconds per sample (code that sleeps is stopped after max(5 x timeout, "
                             "timeout + 5) s of wall-clock time).", gt=0)
    memory_mb: int = _h(1024, "Address-space cap per sample, in MB.", min=64)
    workers: int | None = _h(None, "Sandbox worker processes (0: all cores).", min=1)
    require_isolation: bool = _h(False, "Refuse to judge unless the kernel confines each sample's writes (Landlock "
                                        "or a read-only mount namespace); without it the judge only warns.")


@dataclass(frozen=True)
class EvalSettings(Settings):
    """Which problems are evaluated and which pass@k are reported."""

    limit: int | None = _h(None, "Evaluate only the first N problems (0: all).", min=1)
    ks: tuple[int, ...] = _h((1, 10, 100), "pass@k values to report (comma-separated).", min=1)


FINETUNE_EVAL = EvalSettings(ks=(1,))
FINETUNE_SAMPLING = SamplingSettings(samples=1)


@dataclass(frozen=True)
class FinetuneSettings(Settings):
    """Which fine-tuning stages `codenas run` runs (the commands are `train sft` and `train lora`)."""

    method: str = _h("lora", "Fine-tuning stages to run: lora, sft, both (sft, then lora) or none.",
                     choices=("lora", "sft", "both", "none"))


@dataclass(frozen=True)
class ImproveSettings(Settings):
    """Expert iteration (`codenas train improve`, the run's ``[improve]`` stage): sample, keep what passes, fine-tune.

    The rest of each round's training (batch size, dtype, optimizer, LoRA rank...), the judge and the val pass@1
    sampling are those of fine-tuning (``[finetune]``)."""

    rounds: int = _h(0, "Rounds of sample -> judge -> keep the passing samples -> fine-tune (0: off).", min=0)
    samples: int = _h(8, "Completions sampled per pool problem in each round (the pool's pass@K).", min=1)
    temperature: float = _h(0.8, "Sampling temperature of the pool's completions.", gt=0)
    top_p: float = _h(0.95, "Nucleus sampling mass of the pool's completions.", gt=0, max=1)
    max_new_tokens: int = _h(128, "Token budget per pool completion.", min=1)
    cap: int = _h(2, "Passing samples kept per problem and round (distinct ones), so easy problems do not dominate.",
                  min=1)
    replay: float = _h(0.5, "Share of each round's training records drawn from the supervised train records.",
                       min=0, lt=1)
    method: str = _h("sft", "How each round fine-tunes: sft (all weights) or lora (adapters, merged after the "
                            "round; rank and targets from [finetune]).", choices=("sft", "lora"))
    lr: float = _h(1e-4, "Peak learning rate of each round (cosine to a tenth of it).", gt=0)
    steps: int = _h(100, "Optimizer steps per round.", min=1)
    pool_limit: int | None = _h(None, "Sample at most this many pool problems per round, a seeded draw per round "
                                      "(0: all).", min=1)
    seed: int = _h(0, "Seed of sampling, pool draws, replay draws and training; round r uses seed + r.")


@dataclass(frozen=True)
class MixSettings(Settings):
    """What `codenas run` fine-tunes on besides the data stage's train.jsonl: mined records (the mine stage)."""

    mined_share: float = _h(0.0, "Share of the fine-tuning examples that are mined records (all of train.jsonl is "
                                 "always used; 0: none). Needs mine.enabled.", min=0, lt=1)
    mined_proven_only: bool = _h(False, "Mix in only mined records proven by their doctests.")


@dataclass(frozen=True)
class BenchmarkSettings(Settings):
    """The held-out benchmarks `codenas run` evaluates every model on."""

    benchmarks: tuple[str, ...] = _h(("mini", "mbpp-test"), f"Benchmarks: {', '.join(RUN_BENCHMARKS)}.",
                                     choices=RUN_BENCHMARKS)

    def _check(self) -> None:
        if not self.benchmarks:
            raise CodenasError("benchmarks must name at least one benchmark")


PRUNERS = ("hyperband", "halving", "none")
SEARCH_OBJECTIVES = ("loss", "params", "flops", "latency")


@dataclass(frozen=True)
class SearchSettings(Settings):
    """The budgets and proxy runs of `codenas search` (its search space has its own flags: ``parse_space``)."""

    max_params: int | None = _h(None, "Parameter budget: larger shapes are recorded as infeasible, never trained, and "
                                      "sampled again.", min=1, required=True)
    max_latency_ms: float | None = _h(None, "Generation-latency budget in ms per token (batch 1, KV cache, measured "
                                            "here); unset: no limit.", gt=0)
    trials: int = _h(20, "Shapes trained in total for the study (infeasible ones do not count); a rerun trains only "
                         "the missing ones.", min=0)
    budget_tokens: int = _h(2_000_000, "Training tokens per trial (the proxy run).", min=1)
    vocab_size: int = _h(8192, "Vocabulary of the tokenizer trained when --tokenizer is not given.", min=258)
    max_files: int | None = _h(None, "Build the corpus from at most this many files per source, a deterministic "
                                     "sample (0: all; ignored for a built corpus).", min=1)
    storage: str = _h("", "Optuna storage URL, e.g. postgresql://user@host/db to share a search (empty: "
                          "sqlite:///OUT/study.db).")
    study_name: str = _h("codenas-search", "Study name inside the storage.")
    seed: int = _h(0, "Seed of the sampler and of every proxy run.")
    worker: int = _h(0, "This process's index among workers sharing --storage (each needs its own).", min=0)
    batch_size: int = _h(16, "Sequences per step in the proxy runs.", min=1)
    lr: float = _h(3e-3, "Peak AdamW learning rate of the proxy runs (with muon: of the embeddings, head, norms, "
                         "biases); 3x a final run's, so short runs get past the unigram plateau.", gt=0)
    muon_lr: float = _h(0.06, "Peak learning rate of the Muon-updated matrices in trials that pick muon.", gt=0)
    evals: int = _h(4, "Evaluations per trial (the pruner decides after each).", min=1)
    eval_batches: int = _h(8, "Fixed validation batches per evaluation.", min=1)
    pruner: str = _h("hyperband", "Stop weak trials early: Hyperband, successive halving, or never (with several "
                                  "objectives any but none stops a trial dominated at an evaluation).",
                     choices=PRUNERS)
    device: str = _h("auto", "cpu, cuda, cuda:1... (auto: CUDA if present).")
    dtype: str = _h("auto", "Precision of the proxy runs: bf16 autocast or fp32; auto = bf16 on a CUDA GPU that "
                            "supports it, fp32 on CPUs.", choices=DTYPES)
    objectives: tuple[str, ...] = _h(("loss",), "What the search minimises: loss, then optionally params, flops "
                                                "(per token) and/or latency (a multi-objective search).",
                                     choices=SEARCH_OBJECTIVES)
    extrapolate_to: int = _h(0, "Score each trial by its held-out loss extrapolated to this many training tokens (the "
                                "final run's budget): it also trains on half the budget, and the two losses are "
                                "extended linearly in log(tokens); such trials are not pruned. 0: score by the "
                                "proxy's final loss.", min=0)

    def _check(self) -> None:
        if self.extrapolate_to and self.extrapolate_to <= self.budget_tokens:
            raise CodenasError(f"extrapolate_to ({self.extrapolate_to:,}) must be above budget_tokens "
                               f"({self.budget_tokens:,}), or 0")
        if not self.objectives or self.objectives[0] != "loss":
            raise CodenasError(f"objectives must start with loss, got {','.join(self.objectives) or 'nothing'}")
        if len(set(self.objectives)) != len(self.objectives):
            raise CodenasError(f"objectives must not repeat, got {','.join(self.objectives)}")


# --- parts, sections and commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A settings class as one command or section exposes it: with a key ``prefix`` and its own ``defaults``."""

    cls: type
    prefix: str = ""
    defaults: Any = None

    def default_object(self) -> Any:
        return self.defaults if self.defaults is not None else self.cls()

    def keys(self) -> dict[str, str]:
        """Field name -> exposed key (TOML key; the CLI flag is the key with '_' -> '-')."""
        return {f.name: self.prefix + f.name for f in fields(self.cls)}


TRAIN_FINETUNE = (
    Part(TrainSettings, defaults=FINETUNE_TRAIN),
    Part(SamplingSettings, prefix="eval_", defaults=FINETUNE_SAMPLING),
    Part(JudgeSettings, prefix="eval_"),
    Part(EvalSettings, prefix="eval_", defaults=FINETUNE_EVAL),
)
LORA = Part(LoraSettings, prefix="lora_")
EVAL = (Part(SamplingSettings), Part(JudgeSettings), Part(EvalSettings))

SECTIONS: dict[str, tuple[Part, ...]] = {
    "data": (Part(DataSettings),),
    "corpus": (Part(CorpusSourcesSettings), Part(CorpusSettings)),
    "mine": (Part(MineSourcesSettings), Part(MineSettings)),
    "tokenizer": (Part(TokenizerSettings),),
    "pretrain": (Part(PretrainSettings), Part(TrainSettings)),
    "finetune": (Part(FinetuneSettings), *TRAIN_FINETUNE, LORA, Part(MixSettings)),
    "improve": (Part(ImproveSettings),),
    "eval": (Part(BenchmarkSettings), *EVAL),
}
"""The TOML schema of `codenas run` (and of every command's ``--config``): section -> the parts it holds."""

OTHER_COMMANDS: dict[str, tuple[Part, ...]] = {
    "search": (Part(SearchSettings),),
}
"""Commands outside `codenas run` (flags only, no TOML section and no ``--config``) -> the parts they expose."""

# Keys renamed when the schema became generated (section, old key) -> new key; the old spellings still work.
RENAMED = {("finetune", "lora_r"): "lora_rank", ("finetune", "targets"): "lora_targets",
           ("finetune", "eval_problems"): "eval_limit"}

# Keys that no longer decide anything (section, old key) -> what does it now; an old config holding them still
# reads, with a note, and they leave the run's cache keys.
_CORPUS_DECIDES = "every pretraining corpus is a corpus build: [corpus] max_files and val_fraction decide it"
DROPPED = {("pretrain", "max_files"): _CORPUS_DECIDES, ("pretrain", "val_fraction"): _CORPUS_DECIDES,
           ("tokenizer", "max_files"): "the corpus build trains the tokenizer on its clean training documents",
           ("tokenizer", "val_fraction"): "the corpus build trains the tokenizer on its clean training documents"}


def upgrade_keys(config: dict[str, Any]) -> dict[str, Any]:
    """Rename old keys of a (partial) config in place (``finetune.lora_r`` -> ``lora_rank``...) and drop the keys
    that no longer do anything (saying so); returns it.

    ``finetune.eval_problems = 0`` meant "val loss only": it becomes ``eval_samples = 0``.
    """
    for (section, old), why in DROPPED.items():
        values = config.get(section)
        if isinstance(values, dict) and old in values:
            values.pop(old)
            say(f"note: config key {section}.{old} is no longer used and is ignored ({why})")
    for (section, old), new in RENAMED.items():
        values = config.get(section)
        if not isinstance(values, dict) or old not in values:
            continue
        if new in values:
            raise CodenasError(f"config keys {section}.{old} and {section}.{new} are the same setting: give one")
        value = values.pop(old)
        if old == "eval_problems" and value == 0:
            values["eval_samples"] = 0
        values[new] = value
    return config


# --- TOML side -------------------------------------------------------------------------------------------------


def section_keys(section: str) -> dict[str, tuple[Part, str]]:
    """Exposed key -> (part, field name) of a section."""
    out: dict[str, tuple[Part, str]] = {}
    for part in SECTIONS[section]:
        for name, key in part.keys().items():
            if key in out:
                raise TypeError(f"section {section}: key {key} is defined twice")
            out[key] = (part, name)
    return out


def to_toml_value(part: Part, name: str, value: Any) -> Any:
    """A field value as TOML holds it: None -> 0, tuples -> lists."""
    if value is None:
        return 0
    return list(value) if isinstance(value, tuple) else value


def from_toml_value(part: Part, name: str, value: Any) -> Any:
    """A TOML value as the field holds it: 0 -> None for optional integers, lists -> tuples."""
    base, optional, _ = _base_type(type_hints(part.cls)[name])
    if optional and value == 0 and not isinstance(value, bool):
        return None
    return tuple(value) if isinstance(value, list) else value


def check_keys(config: Mapping[str, Any], path: str | os.PathLike | None = None) -> None:
    """Every section and key of a (partial) config is known; an unknown one is an error naming it."""
    for section, values in config.items():
        if section not in SECTIONS:
            raise CodenasError(f"unknown config section {section!r} (known: {', '.join(SECTIONS)})", path)
        if not isinstance(values, dict):
            raise CodenasError(f"config section {section!r} must be a table", path)
        known = section_keys(section)
        for key in values:
            if key not in known:
                raise CodenasError(f"unknown config key {section}.{key} (known: {', '.join(known)})", path)


def build_section(section: str, values: Mapping[str, Any], path: str | os.PathLike | None = None,
                  parts: tuple[Part, ...] | None = None, *, complete: bool = False) -> dict[Part, Any]:
    """The settings objects of ``section`` from TOML ``values`` (missing keys take the part's defaults).

    Every value is checked; an error names the key (``pretrain.max_steps must be at least 1, got -3``) and the
    file when there is one. With ``complete``, a field marked ``required`` must have been given a value.
    """
    keys = section_keys(section)
    objects: dict[Part, Any] = {}
    for part in parts or SECTIONS[section]:
        kwargs = {}
        hints = type_hints(part.cls)
        for f in fields(part.cls):
            key = part.prefix + f.name
            if key not in values:
                continue
            value = from_toml_value(part, f.name, values[key])
            problem = field_problem(f, value, hints[f.name])
            if problem:
                raise CodenasError(f"{section}.{key} {problem}", path)
            kwargs[f.name] = value
        assert all(keys[part.prefix + n][0] == part for n in kwargs)
        objects[part] = _construct(part, kwargs, f"{section}.", path)
        for f in fields(part.cls):
            if complete and f.metadata.get("required") and getattr(objects[part], f.name) == "":
                raise CodenasError(f"{section}.{part.prefix}{f.name} must be given ({flag(part.prefix + f.name)})",
                                   path)
    return objects


def _construct(part: Part, kwargs: dict[str, Any], where: str, path: str | os.PathLike | None) -> Any:
    try:
        return dataclasses.replace(part.default_object(), **kwargs)
    except CodenasError as e:
        names = {f.name for f in fields(part.cls)}
        qualified = f"{where}{part.prefix}{e.message}" if e.message.split(" ", 1)[0] in names else \
            f"[{where.rstrip('.')}] {e.message}"
        raise CodenasError(qualified, path) from None


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise CodenasError("config file not found", path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise CodenasError(f"invalid TOML: {e}", path) from None


def read_config_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """A (partial) config file with the sections of `codenas run`; every section and value checked."""
    config = upgrade_keys(read_toml(path))
    check_keys(config, path)
    for section, values in config.items():
        build_section(section, values, path)
    return config


# --- CLI side --------------------------------------------------------------------------------------------------


class _Option(click.Option):
    """An option whose help shows only its first (dashed) name; the seed's underscore spelling still parses."""

    def get_help_record(self, ctx: click.Context):
        opts = self.opts
        self.opts = opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def flag(key: str) -> str:
    """The CLI flag of a TOML key: ``lr_decay_steps`` -> ``--lr-decay-steps``."""
    return "--" + key.replace("_", "-")


def _click_type(f: dataclasses.Field, tp: Any) -> Any:
    base, optional, item = _base_type(tp)
    m = f.metadata
    if item is not None:  # a tuple
        return _ListType(item, f.metadata.get("choices"))
    if "choices" in m:
        return click.Choice([str(c) for c in m["choices"]])
    if base is int:
        low = m.get("min")
        if optional and low is not None and low > 0 and not m.get("required"):
            low = 0  # 0 means unset
        return int if low is None and m.get("max") is None else click.IntRange(min=low, max=m.get("max"))
    if base is float:
        low, low_open = (m["gt"], True) if "gt" in m else (m.get("min"), False)
        high, high_open = (m["lt"], True) if "lt" in m else (m.get("max"), False)
        return click.FloatRange(min=low, max=high, min_open=low_open, max_open=high_open)
    return str


class _ListType(click.ParamType):
    """A comma-separated list on the command line (``--ks 1,10``)."""

    def __init__(self, item: type, choices: tuple | None):
        self.item, self.choices = item, choices
        self.name = "list"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        out = []
        for text in (t.strip() for t in str(value).split(",")):
            if not text:
                continue
            try:
                out.append(self.item(text))
            except ValueError:
                self.fail(f"{text!r} is not {_TYPE_NAMES[self.item]}", param, ctx)
            if self.choices and out[-1] not in self.choices:
                self.fail(f"{text!r} is not one of {', '.join(self.choices)}", param, ctx)
        return tuple(out)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _option(part: Part, f: dataclasses.Field, config: bool) -> Callable:
    key = part.prefix + f.name
    tp = type_hints(part.cls)[f.name]
    default = getattr(part.default_object(), f.name)
    help_text = f.metadata["help"]
    if _base_type(tp)[0] is bool:
        return click.option(f"{flag(key)}/--no-{key.replace('_', '-')}", key, default=default, show_default=True,
                            help=help_text)
    decls = [flag(key)] + ([f"--{key}"] if "_" in key else [])
    if isinstance(default, tuple):
        default = _show(default)
    shown = default is not None and default != ""
    if f.metadata.get("required") and not config:  # without --config the flag is the only source
        return click.option(*decls, key, cls=_Option, type=_click_type(f, tp), required=True, help=help_text)
    return click.option(*decls, key, cls=_Option, type=_click_type(f, tp), default=default, show_default=shown,
                        help=help_text)


def options(*parts: Part, config: bool = True) -> Callable:
    """Decorator: one click option per field of ``parts`` (and ``--config FILE`` unless ``config=False``)."""

    def decorate(command: Callable) -> Callable:
        decorators = [_option(part, f, config) for part in parts for f in fields(part.cls)]
        if config:
            decorators.append(click.option(
                "--config", "config_file", type=click.Path(dir_okay=False), default=None,
                help="TOML file with the sections of `codenas run`; flags given here override its values."))
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return decorate


def from_command(ctx: click.Context, section: str, *parts: Part, config_file: str | None = None,
                 given: Mapping[str, Any] | None = None) -> dict[type, Any]:
    """The settings objects of a command: defaults, then ``config_file``'s ``[section]``, then the flags given
    (``given``: values of keys the command received under another name, e.g. an old flag).

    Returns ``{settings class: object}``.
    """
    params = ctx.params
    file_values: dict[str, Any] = {}
    if config_file:
        file_values = read_config_file(config_file).get(section, {})
    out: dict[type, Any] = {}
    for part in parts:
        values = {k: v for k, v in file_values.items() if k in set(part.keys().values())}
        for name, key in part.keys().items():
            if ctx.get_parameter_source(key) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
                values[key] = to_toml_value(part, name, params[key])
            elif given and key in given:
                values[key] = to_toml_value(part, name, given[key])
        out[part.cls] = build_section(section, values, config_file, parts=(part,), complete=True)[part]
    return out


def from_config_file(section: str, part: Part, config_file: str | os.PathLike | None) -> Any:
    """The settings object of ``part`` from ``config_file``'s ``[section]`` (defaults without a file): for a
    command that reads a section it has no flags for (`train pretrain` reads ``[corpus]`` to build its corpus)."""
    values = read_config_file(config_file).get(section, {}) if config_file else {}
    return build_section(section, values, config_file, parts=(part,), complete=True)[part]


def from_params(params: Mapping[str, Any], part: Part) -> Any:
    """The settings object of ``part`` from a command's parsed flags (for a command without ``--config``)."""
    kwargs = {name: from_toml_value(part, name, params[key]) for name, key in part.keys().items()}
    return _construct(part, kwargs, "", None)


def toml_literal(value: Any) -> str:
    """A value as a TOML literal (strings quoted, booleans lowercase, lists in brackets)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def markdown_reference() -> str:
    """The key reference of docs/settings.md: per section, each key (= flag) with its default and help; then the
    flags of the commands outside `codenas run`."""
    blocks = []
    for section, parts in SECTIONS.items():
        lines = [f"### [{section}]", "", "| key / flag | default | help |", "|---|---|---|"]
        for part in parts:
            obj = part.default_object()
            for f in fields(part.cls):
                key = part.prefix + f.name
                default = to_toml_value(part, f.name, getattr(obj, f.name))
                shown = "(required)" if f.metadata.get("required") and default == "" else f"`{toml_literal(default)}`"
                lines.append(f"| `{key}` / `{flag(key)}` | {shown} | {f.metadata['help']} |")
        blocks.append("\n".join(lines))
    for command, parts in OTHER_COMMANDS.items():
        lines = [f"### codenas {command} (flags only)", "", "| flag | default | help |", "|---|---|---|"]
        for part in parts:
            obj = part.default_object()
            for f in fields(part.cls):
                default = getattr(obj, f.name)
                shown = ("(required)" if f.metadata.get("required") else "(unset)") if default is None else \
                    "(empty)" if default == "" else f"`{_show(default)}`"
                lines.append(f"| `{flag(part.prefix + f.name)}` | {shown} | {f.metadata['help']} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
