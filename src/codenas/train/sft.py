"""Fine-tuning on supervised records: full instruction tuning (SFT) or LoRA, on the shared training loop.

``finetune()`` wires the pieces: a base (``train.bases.load_base``: codenas checkpoint, bare weights file or
``hf:DIR``), masked padded batches of train records (``train.batching``), optional LoRA adapters
(``train.lora``), and an evaluation every ``eval_interval`` steps that measures the val loss (token-weighted
mean over every supervised val token) and the val pass@1 (``eval_samples`` samples per val record at
``temperature``, post-processed and judged by the eval stage). Output folder::

    OUT/step{N}/           the model (SFT: full checkpoint; LoRA: adapter) at each evaluation
    OUT/checkpoint_best/   the best so far: highest val pass@1, ties broken by lower val loss
    OUT/checkpoint_last/   the latest, with trainer_state.pt for --resume
    OUT/evals/step{N}/     samples.jsonl, results.jsonl, summary.json of that evaluation's pass@1
    OUT/metrics.jsonl      loss, lr, tokens/s per logged step; val_loss, val_pass@1, val_select per evaluation
    OUT/finetune.json      the settings of the run

``val_select`` is what "best" maximises: ``passed samples - val_loss / (1 + val_loss)``. The first term is an
integer and the second lies in [0, 1), so it orders runs by pass count first and by val loss second, exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from codenas.io import CodenasError, atomic_write_json, read_json
from codenas.model.checkpoint import META, load_trainer_state
from codenas.model.config import load_arch
from codenas.progress import say
from codenas.records import Record, read_records
from codenas.train import distributed
from codenas.train.bases import Base, load_base, load_model, save_model
from codenas.train.batching import SupervisedBatches, SupervisedExample, encode_records, eval_batches
from codenas.train.distributed import DistContext
from codenas.train.loop import LAST, TrainConfig, lm_loss, train
from codenas.train.lora import LoraSettings, apply_lora, count_parameters, restore_adapter, save_adapter

SELECT_METRIC = "val_select"


@dataclass(frozen=True)
class EvalSettings:
    """How the val pass@1 of each evaluation is measured (``samples=0`` measures the val loss only)."""

    samples: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    max_problems: int | None = None  # the first N val records (default: all)
    timeout: float = 3.0
    workers: int | None = None


def default_train_config(**overrides) -> TrainConfig:
    """The seed's fine-tuning defaults: lr 1e-4 (cosine to 1e-5), batch 8, no warmup, no weight decay."""
    settings = dict(lr=1e-4, min_lr=1e-5, batch_size=8, warmup_steps=0, weight_decay=0.0, eval_interval=100,
                    max_steps=1000, best_metric=SELECT_METRIC, best_mode="max", desc="finetune")
    return TrainConfig(**{**settings, **overrides})


class FinetuneCheckpointer:
    """Saves the model (SFT: the whole model in its base's layout; LoRA: only the adapter and a pointer to the
    base), and also as ``step{N}`` beside each ``checkpoint_last``."""

    def __init__(self, base: Base, adapter: bool):
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

    def __init__(self, base: Base, val_examples: list[SupervisedExample], problems: list[Record],
                 settings: EvalSettings, batch_size: int, out_dir: Path, seed: int, ctx: DistContext):
        self.base, self.problems, self.settings = base, problems, settings
        self.batches = eval_batches(val_examples, batch_size, base.pad_id)
        self.out_dir, self.seed, self.ctx = out_dir, seed, ctx

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        loss = self.val_loss(model)
        metrics = {"val_loss": loss}
        passed = 0
        if self.settings.samples and self.problems:
            passed, rate = self.pass_rate(model, step)
            metrics["val_pass@1"] = rate
        metrics[SELECT_METRIC] = passed - loss / (1 + loss)
        return metrics

    def val_loss(self, model: nn.Module) -> float:
        total, count = 0.0, 0
        for batch in self.batches[self.ctx.rank::self.ctx.world_size]:
            batch = {k: v.to(self.ctx.device) for k, v in batch.items()}
            n_tokens = int((batch["targets"] != -100).sum())
            total += float(lm_loss(model, batch)) * n_tokens
            count += n_tokens
        total, count = distributed.all_reduce_sum([total, count], self.ctx)
        return total / max(count, 1)

    def pass_rate(self, model: nn.Module, step: int) -> tuple[int, float]:
        """(passed samples, pass@1) of this evaluation; samples and verdicts go to OUT/evals/step{N}/."""
        from codenas.eval.generate import evaluate_model, sample_problems, score

        s = self.settings
        folder = self.out_dir / "evals" / f"step{step}"
        if self.ctx.world_size == 1:  # judge while sampling
            summary = evaluate_model(model, self.base.tokenizer, self.problems, folder, n=s.samples,
                                     temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                     seed=self.seed + step, eot_id=self.base.eot_id, workers=s.workers,
                                     timeout=s.timeout, ks=(1,))
            return sum(p["correct"] for p in summary["per_problem"].values()), summary["pass_at_k"]["pass@1"]
        mine = self.problems[self.ctx.rank::self.ctx.world_size]
        samples = sample_problems(model, self.base.tokenizer, mine, n=s.samples, temperature=s.temperature,
                                  top_p=s.top_p, max_new_tokens=s.max_new_tokens, seed=self.seed + step,
                                  eot_id=self.base.eot_id)
        gathered = distributed.gather_objects(samples, self.ctx)
        result = None
        if self.ctx.is_main:
            everything = [row for rank_samples in gathered for row in rank_samples]
            summary = score(everything, self.problems, folder, workers=s.workers,
                            timeout=s.timeout, ks=(1,))
            passed = sum(p["correct"] for p in summary["per_problem"].values())
            result = (passed, summary["pass_at_k"]["pass@1"])
        return distributed.broadcast_object(result, self.ctx)


def _read_val(data_path: Path, val_path: Path | None) -> tuple[Path, list[Record]]:
    """The val records: ``val_path``, else ``val.jsonl`` beside the train records."""
    path = Path(val_path) if val_path is not None else Path(data_path).parent / "val.jsonl"
    if val_path is None and not path.is_file():
        raise CodenasError("no --val_path given and no val.jsonl beside the training records", data_path)
    return path, read_records(path)


def finetune(*, init_checkpoint: str, data_path: Path, out: Path, val_path: Path | None = None,
             arch_json: str | None = None, tokenizer_path: Path | None = None, config: TrainConfig | None = None,
             lora: LoraSettings | None = None, eval_settings: EvalSettings = EvalSettings()) -> dict:
    """Fine-tune ``init_checkpoint`` on ``data_path`` records into ``out`` (full SFT, or LoRA when ``lora``).

    Resumable (``config.resume``) and DDP-aware under torchrun. Returns ``{"mode", "trainable_params",
    "total_params", "steps", "best_step", "best_metrics", "final_metrics", "best_checkpoint", "last_checkpoint",
    "train_examples", "dropped_examples"}``.
    """
    cfg = config or default_train_config()
    out = Path(out)
    ctx = distributed.setup(cfg.device)
    base = load_base(init_checkpoint, arch=load_arch(arch_json) if arch_json else None,
                     tokenizer_path=Path(tokenizer_path) if tokenizer_path else None)
    train_records = read_records(data_path)
    val_file, val_records = _read_val(data_path, val_path)
    examples, dropped = encode_records(train_records, base.tokenizer, base.eot_id, base.context_length)
    val_examples, _ = encode_records(val_records, base.tokenizer, base.eot_id, base.context_length)
    torch.manual_seed(cfg.seed)  # LoRA's initial A matrices: the same on every rank and every resume
    model = apply_lora(base.model, lora) if lora is not None else base.model
    trainable, total = count_parameters(model)
    if ctx.is_main:
        say(f"{'LoRA' if lora else 'full fine-tuning'}: {trainable:,} trainable of {total:,} parameters")
        say(f"{len(examples)} train examples ({dropped} dropped: prompt fills the context), "
            f"{len(val_records)} val records")
        atomic_write_json(out / "finetune.json", {
            "init_checkpoint": base.ref, "data_path": str(Path(data_path).resolve()),
            "val_path": str(val_file.resolve()), "lora": asdict(lora) if lora else None, "train": asdict(cfg),
            "eval": asdict(eval_settings), "trainable_params": trainable, "total_params": total,
            "world_size": ctx.world_size})
    batches = SupervisedBatches(examples, cfg.batch_size, base.pad_id, seed=cfg.seed, rank=ctx.rank,
                                world_size=ctx.world_size)
    problems = val_records[: eval_settings.max_problems]
    evaluator = Evaluator(base, val_examples, problems, eval_settings, cfg.batch_size, out, cfg.seed, ctx)
    checkpointer = FinetuneCheckpointer(base, adapter=lora is not None)
    result = train(model, batches, cfg, out, evaluate=evaluator, checkpointer=checkpointer, ctx=ctx)
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
    }
