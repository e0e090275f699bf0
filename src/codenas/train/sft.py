"""Fine-tuning on supervised records: full instruction tuning (SFT) or LoRA, on the shared training loop.

``finetune()`` wires the pieces: a base (``codenas.model.loading.load_model``: codenas checkpoint, bare weights
file or ``hf:DIR``), masked padded batches of train records (``train.batching``), optional LoRA adapters
(``train.lora``), and an evaluation every ``eval_interval`` steps that measures the val loss (token-weighted
mean over every supervised val token) and the val pass@1 (``eval_samples`` samples per val record at
``temperature``, post-processed and judged by the eval stage). Output folder::

    OUT/step{N}/           the model (SFT: full checkpoint; LoRA: adapter) at each evaluation
    OUT/checkpoint_best/   the best so far: most val samples passed, ties broken by lower val loss
    OUT/checkpoint_last/   the latest, with trainer_state.pt for --resume
    OUT/evals/step{N}/     samples.jsonl, results.jsonl, summary.json of that evaluation's pass@1
    OUT/metrics.jsonl      loss, lr, tokens/s per logged step; val_loss, val_passed, val_pass@1 per evaluation
    OUT/finetune.json      the settings of the run
    OUT/mined_train.jsonl  the mined records mixed in (with ``mined`` and a ``mix`` share > 0), as trained on

"Best" is the loop's ordered key ``BEST_KEY``: the val samples passed (``val_passed``, higher is better), then the
val loss (lower is better). With ``sampling.samples == 0`` only the val loss is measured and decides.
"""

from __future__ import annotations

import re
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from codenas.io import CodenasError, atomic_write_json, check_writable, output_lock, read_json
from codenas.model.checkpoint import META, load_trainer_state
from codenas.model.config import load_arch
from codenas.model.loading import LoadedModel, load_model, save_model
from codenas.model.model import parameter_counts
from codenas.names import EVALS_DIR, FINETUNE_INFO, MINED_TRAIN, VAL_RECORDS
from codenas.progress import say
from codenas.records import Record, read_records, write_records
from codenas.settings import (
    FINETUNE_EVAL,
    FINETUNE_TRAIN,
    EvalSettings,
    JudgeSettings,
    MixSettings,
    SamplingSettings,
    TrainSettings,
)
from codenas.train import distributed
from codenas.train.batching import SupervisedBatches, SupervisedExample, encode_records, eval_batches
from codenas.train.distributed import DistContext
from codenas.train.loop import LAST, VAL_LOSS, BestKey, check_start, clear_run, lm_loss, train
from codenas.train.lora import LoraSettings, apply_lora, restore_adapter, save_adapter

BEST_KEY: BestKey = (("val_passed", "max"), ("val_loss", "min"))
SETTINGS = FINETUNE_INFO
EVALS = EVALS_DIR


class FinetuneCheckpointer:
    """Saves the model (SFT: the whole model in its base's layout; LoRA: only the adapter and a pointer to the
    base), and also as ``step{N}`` beside each ``checkpoint_last``."""

    def __init__(self, base: LoadedModel, adapter: bool):
        self.base, self.adapter = base, adapter

    def _write(self, path: Path, model: nn.Module, **kwargs) -> None:
        if self.adapter:
            save_adapter(path, model, self.base, **kwargs)
        else:
            save_model(path, replace(self.base, model=model), **kwargs)

    def save(self, path: Path, model: nn.Module, *, step: int, metrics: dict, trainer_state: dict | None) -> None:
        self._write(path, model, step=step, metrics=metrics, trainer_state=trainer_state)
        if path.name == LAST:
            self._write(path.parent / f"step{step}", model, step=step, metrics=metrics)

    def restore(self, path: Path, model: nn.Module) -> dict:
        if self.adapter:
            trained_on = read_json(path / META).get("base_sha256")
            if trained_on and self.base.sha256 and trained_on != self.base.sha256:
                raise CodenasError(f"this adapter was trained on another base than {self.base.ref} (sha256 "
                                   "differs): resume with the same --init_checkpoint", path)
            restore_adapter(model, path)
        else:
            model.load_state_dict(load_model(str(path)).model.state_dict())
        return load_trainer_state(path) or {}


class Evaluator:
    """``evaluate(model, step)`` for the loop: val loss over every val example, val pass@1 by sampling.

    Under DDP each rank takes every ``world_size``-th val batch and problem; rank 0 judges all the samples.
    """

    def __init__(self, base: LoadedModel, val_examples: list[SupervisedExample], problems: list[Record],
                 sampling: SamplingSettings, judge: JudgeSettings, batch_size: int, out_dir: Path, ctx: DistContext):
        self.base, self.problems, self.sampling, self.judge = base, problems, sampling, judge
        self.batches = eval_batches(val_examples, batch_size, base.pad_id)
        self.out_dir, self.ctx = out_dir, ctx

    @property
    def samples_pass(self) -> bool:
        return bool(self.sampling.samples and self.problems)

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        metrics = {"val_loss": self.val_loss(model)}
        if self.samples_pass:
            metrics["val_passed"], metrics["val_pass@1"] = self.pass_rate(model, step)
        return metrics

    def val_loss(self, model: nn.Module) -> float:
        total, count = 0.0, 0
        for batch in self.batches[self.ctx.rank::self.ctx.world_size]:
            batch = {k: v.to(self.ctx.device) for k, v in batch.items()}
            n_tokens = int((batch["targets"] != -100).sum())
            total += float(lm_loss(model, batch)) * n_tokens
            count += n_tokens
        total_all, count_all = distributed.all_reduce_sum([total, count], self.ctx)
        return total_all / max(count_all, 1)

    def pass_rate(self, model: nn.Module, step: int) -> tuple[int, float]:
        """(passed samples, pass@1) of this evaluation; samples and verdicts go to OUT/evals/step{N}/."""
        from codenas.eval.generate import evaluate_model, sample_problems, score

        s = replace(self.sampling, seed=self.sampling.seed + step)
        folder = self.out_dir / EVALS / f"step{step}"
        if self.ctx.world_size == 1:  # judge while sampling
            summary = evaluate_model(model, self.base.tokenizer, self.problems, folder, s, self.judge, ks=(1,),
                                     eot_id=self.base.eot_id)
            return sum(p["correct"] for p in summary["per_problem"].values()), summary["pass_at_k"]["pass@1"]
        mine = self.problems[self.ctx.rank::self.ctx.world_size]
        samples = sample_problems(model, self.base.tokenizer, mine, s, eot_id=self.base.eot_id)
        gathered = distributed.gather_objects(samples, self.ctx)
        result = None
        if self.ctx.is_main:
            everything = [row for rank_samples in gathered for row in rank_samples]
            summary = score(everything, self.problems, folder, self.judge, ks=(1,))
            passed = sum(p["correct"] for p in summary["per_problem"].values())
            result = (passed, summary["pass_at_k"]["pass@1"])
        return distributed.broadcast_object(result, self.ctx)


def _read_val(data_path: Path, val_path: Path | None) -> tuple[Path, list[Record]]:
    """The val records: ``val_path``, else ``val.jsonl`` beside the train records."""
    path = Path(val_path) if val_path is not None else Path(data_path).parent / VAL_RECORDS
    if val_path is None and not path.is_file():
        raise CodenasError(f"no --val_path given and no {VAL_RECORDS} beside the training records", data_path)
    return path, read_records(path)


def finetune(*, init_checkpoint: str, data_path: Path, out: Path, val_path: Path | None = None,
             arch_json: str | None = None, tokenizer_path: Path | None = None,
             training: TrainSettings = FINETUNE_TRAIN, lora: LoraSettings | None = None,
             sampling: SamplingSettings = SamplingSettings(), judge: JudgeSettings = JudgeSettings(),
             evaluation: EvalSettings = FINETUNE_EVAL, mined: Path | None = None, mix: MixSettings = MixSettings(),
             resume: bool = False, overwrite: bool = False) -> dict:
    """Fine-tune ``init_checkpoint`` on ``data_path`` records into ``out`` (full SFT, or LoRA when ``lora``).

    At each evaluation the val loss is measured and, unless ``sampling.samples`` is 0, ``sampling.samples``
    completions of each of the first ``evaluation.limit`` val records are judged (``judge``). Resumable
             evaluation: EvalSettings = FINETUNE_EVAL, resume: bool = False, overwrite: bool = False) -> dict:
    """
    cfg = training
    out = check_writable(Path(out))
    base = load_model(init_checkpoint, arch=load_arch(arch_json) if arch_json else None,
                      tokenizer_path=Path(tokenizer_path) if tokenizer_path else None)
    if base.adapter is not None:
        raise CodenasError("this is a LoRA adapter, not a base: merge it first (codenas lora merge)", base.adapter)
    train_records = read_records(data_path)
    train_files = [{"path": str(Path(data_path).resolve()), "records": len(train_records)}]
    chosen: list[Record] = []
    if mined is not None and mix.mined_share > 0:
        from codenas.train.mix import choose_mined

        chosen = choose_mined(read_records(mined), len(train_records), mix.mined_share,
                              proven_only=mix.mined_proven_only, seed=cfg.seed)
        train_files.append({"path": str((out / MINED_TRAIN).resolve()), "records": len(chosen),
                            "from": str(Path(mined).resolve())})
        train_records = train_records + chosen
    val_file, val_records = _read_val(data_path, val_path)
    examples, dropped = encode_records(train_records, base.tokenizer, base.eot_id, base.context_length)
    val_examples, val_dropped = encode_records(val_records, base.tokenizer, base.eot_id, base.context_length)
    if not examples:
        raise CodenasError(f"no training record fits the context of {base.context_length} tokens "
                           f"({dropped} of {len(train_records)} dropped: {PROMPT_FILLS_CONTEXT})", data_path)
    drops = drop_counts(train=dropped, val=val_dropped)
    check_start(out, resume=resume, overwrite=overwrite)
    with output_lock(out):
        ctx = distributed.setup(cfg.device)
        if overwrite and ctx.is_main:
            clear_run(out, also=(SETTINGS, EVALS, MINED_TRAIN,
                                 *(p.name for p in out.iterdir() if _STEP_DIR.fullmatch(p.name))))
        if chosen and ctx.is_main:
            write_records(out / MINED_TRAIN, chosen)
            say(f"mixing in {len(chosen)} mined records from {mined} (mined_share {mix.mined_share}"
                f"{', proven only' if mix.mined_proven_only else ''})")
        return _finetune(base, examples, val_examples, train_records, val_records, val_file, drops, ctx,
                         data_path=data_path, out=out, training=cfg, lora=lora, sampling=sampling, judge=judge,
                         evaluation=evaluation, resume=resume, mix=mix, train_files=train_files)


PROMPT_FILLS_CONTEXT = "prompt fills the context"  # a record with no solution token left after truncation
_STEP_DIR = re.compile(r"step\d+")


def drop_counts(*, train: int, val: int) -> dict[str, dict[str, int]]:
    """The records fine-tuning leaves out, per split and reason (what ``finetune.json`` and the result hold):
    train records are not trained on; val records are left out of the val loss (pass@1 still samples them)."""
    return {"train": {PROMPT_FILLS_CONTEXT: train} if train else {},
            "val": {PROMPT_FILLS_CONTEXT: val} if val else {}}


def _finetune(base: LoadedModel, examples: list[SupervisedExample], val_examples: list[SupervisedExample],
              train_records: list[Record], val_records: list[Record], val_file: Path,
              drops: dict[str, dict[str, int]], ctx: DistContext, *, data_path: Path, out: Path,
              training: TrainSettings, lora: LoraSettings | None, sampling: SamplingSettings, judge: JudgeSettings,
              evaluation: EvalSettings, resume: bool, mix: MixSettings, train_files: list[dict]) -> dict:
    """``finetune`` once its inputs are read and checked and ``out`` is locked."""
    cfg = training
    torch.manual_seed(cfg.seed)  # LoRA's initial A matrices: the same on every rank and every resume
    model = apply_lora(base.model, lora) if lora is not None else base.model
    trainable, total = parameter_counts(model)
    dropped = sum(drops["train"].values())
    if ctx.is_main:
        say(f"{'LoRA' if lora else 'full fine-tuning'}: {trainable:,} trainable of {total:,} parameters")
        val_dropped = sum(drops["val"].values())
        say(f"{len(examples)} of {len(train_records)} train records used ({dropped} dropped: "
            f"{PROMPT_FILLS_CONTEXT}), {len(val_records)} val records"
            + (f" ({val_dropped} left out of the val loss: {PROMPT_FILLS_CONTEXT})" if val_dropped else ""))
        atomic_write_json(out / SETTINGS, {
            "init_checkpoint": base.ref, "data_path": str(Path(data_path).resolve()),
            "val_path": str(val_file.resolve()), "lora": asdict(lora) if lora else None, "train": asdict(cfg),
            "sampling": asdict(sampling), "judge": asdict(judge), "eval": asdict(evaluation),
            "trainable_params": trainable, "total_params": total, "mix": asdict(mix), "train_files": train_files,
            "world_size": ctx.world_size, "records": {"train": len(train_records), "val": len(val_records)},
            "examples": {"train": len(examples), "val": len(val_examples)}, "dropped": drops})
    batches = SupervisedBatches(examples, cfg.batch_size, base.pad_id, seed=cfg.seed, rank=ctx.rank,
                                world_size=ctx.world_size)
    problems = val_records[: evaluation.limit]
    evaluator = Evaluator(base, val_examples, problems, sampling, judge, cfg.batch_size, out, ctx)
    checkpointer = FinetuneCheckpointer(base, adapter=lora is not None)
    result = train(model, batches, cfg, out, evaluate=evaluator, checkpointer=checkpointer, ctx=ctx, resume=resume,
                   desc="lora" if lora is not None else "sft", best=BEST_KEY if evaluator.samples_pass else VAL_LOSS)
    return {
        "mode": "lora" if lora is not None else "sft",
        "trainable_params": trainable,
        "total_params": total,
        "steps": result.step,
        "best_step": result.best_step,
        "final_metrics": result.metrics,
        "best_metrics": read_json(result.best_checkpoint / META)["metrics"] if result.best_checkpoint else None,
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "last_checkpoint": str(result.last_checkpoint),
        "train_examples": len(examples),
        "dropped_examples": dropped,
        "dropped": drops,
        "train_files": train_files,
    }
