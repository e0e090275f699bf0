"""Pretraining: a GPT learns next-token prediction on a built corpus (default: the stdlib, built first).

``pretrain()`` wires the pieces: the built corpus's shards (``train.corpus``), one random-window batch source per
rank, a validation-loss evaluation over fixed windows (averaged over DDP ranks), full checkpoints via
``codenas.model.checkpoint``, and the shared loop (``train.loop``). Output folder::

    OUT/checkpoint_last/   weights + codenas.json + tokenizer.json + trainer_state.pt (for --resume)
    OUT/checkpoint_best/   the checkpoint with the lowest val loss so far
    OUT/metrics.jsonl      one row per logged step (loss, lr, tokens, tokens_per_s, val_loss)
    OUT/pretrain.json      the settings and corpus of the run
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from codenas.io import CodenasError, atomic_write_json, check_writable, output_lock
from codenas.model.checkpoint import load_checkpoint, load_trainer_state, save_checkpoint
from codenas.model.config import ArchConfig, load_arch
from codenas.model.loading import resolve_device
from codenas.model.memory import check_fits
from codenas.model.model import GPT, describe
from codenas.model.tokenizer import check_vocab_fits, load_tokenizer
from codenas.names import PRETRAIN_INFO
from codenas.paths import resolve_config
from codenas.progress import say
from codenas.settings import CorpusSettings, PretrainSettings, TrainSettings
from codenas.train import distributed
from codenas.train.corpus import RandomWindows, TokenCorpus, check_corpus, fixed_windows, prepare_corpus
from codenas.train.distributed import DistContext
from codenas.train.loop import check_start, clear_run, lm_loss, train


class GPTCheckpointer:
    """Full checkpoints (``codenas.model.checkpoint``) carrying the run's tokenizer."""

    def __init__(self, tokenizer_path: Path):
        self.tokenizer_path = Path(tokenizer_path)

    def save(self, path: Path, model: nn.Module, *, step: int, metrics: dict, trainer_state: dict | None) -> None:
        if not isinstance(model, GPT):
            raise TypeError(f"a full checkpoint holds a codenas GPT, not a {type(model).__name__}")
        save_checkpoint(path, model, tokenizer_path=self.tokenizer_path, step=step, metrics=metrics,
                        trainer_state=trainer_state)

    def restore(self, path: Path, model: nn.Module) -> dict:
        saved = load_checkpoint(path)
        if saved.arch != model.config:
            raise CodenasError(f"checkpoint arch {saved.arch.to_dict()} differs from this run's arch", path)
        model.load_state_dict(saved.model.state_dict())
        return load_trainer_state(path) or {}


def val_loss_evaluator(val_batches: list[dict[str, torch.Tensor]], ctx: DistContext):
    """An ``evaluate(model, step)`` giving the mean loss over ``val_batches`` (split across DDP ranks)."""

    def evaluate(model: nn.Module, step: int) -> dict[str, float]:
        total, count = 0.0, 0
        for batch in val_batches[ctx.rank::ctx.world_size]:
            loss = lm_loss(model, {k: v.to(ctx.device) for k, v in batch.items()})
            total, count = total + float(loss), count + 1
        total_all, count_all = distributed.all_reduce_sum([total, count], ctx)
        return {"val_loss": total_all / max(count_all, 1)}

    return evaluate


def _calling_after(evaluate, on_eval: Callable[[int, dict], None]):
    """``evaluate`` that also hands its metrics to ``on_eval(step, metrics)``."""

    def evaluate_and_report(model: nn.Module, step: int) -> dict[str, float]:
        metrics = evaluate(model, step)
        on_eval(step, metrics)
        return metrics

    return evaluate_and_report


def _prepare_corpus_once(ctx: DistContext, **kwargs) -> TokenCorpus:
    """Rank 0 builds the corpus (or finds it built) first; the other ranks then map the built shards."""
    if not ctx.is_main:
        distributed.barrier(ctx)
    corpus = prepare_corpus(**kwargs)
    if ctx.is_main:
        distributed.barrier(ctx)
    return corpus


def pretrain(settings: PretrainSettings = PretrainSettings(), training: TrainSettings = TrainSettings(), *,
             tokenizer: Path,
             out: Path, corpus: Path | str | None = None, corpus_settings: CorpusSettings | None = None,
             arch: ArchConfig | None = None, resume: bool = False, overwrite: bool = False,
             cache: Path | None = None, on_eval: Callable[[int, dict], None] | None = None,
             save_checkpoints: bool = True, desc: str = "pretrain") -> dict:
    """Pretrain a GPT of ``settings.arch`` (or of ``arch``, an already loaded config) on ``corpus`` into ``out``;
    resumable (``resume``), DDP-aware under torchrun.

    ``corpus`` is a built corpus folder, or a corpus source (default: the stdlib) that is first built with
    ``tokenizer`` and ``corpus_settings`` into the cache (``cache`` overrides its folder; see ``train.corpus``).
    Every input is checked before ``out`` is created: the arch (and that its training fits the device's memory),
    the tokenizer, the corpus, and the folder itself: one that holds an earlier run's checkpoint is refused unless
    ``resume`` (continue it) or ``overwrite`` (remove it and start over).

    ``on_eval(step, metrics)`` is called after each evaluation (it may raise to stop the run: the architecture
    search prunes trials this way); ``save_checkpoints=False`` writes only the logs (short proxy runs).

    Returns ``{"best_val_loss", "final_val_loss", "tokens", "steps", "params", "best_checkpoint",
    "last_checkpoint"}`` (checkpoint paths as strings, None when not written).
    """
    cfg = training
    out = check_writable(Path(out))
    if arch is None and not settings.arch:
        raise CodenasError("no architecture given (settings.arch or arch)")
    arch_cfg = arch if arch is not None else load_arch(settings.arch)
    tokenizer = Path(tokenizer)
    vocab = load_tokenizer(tokenizer).get_vocab_size()
    check_vocab_fits(vocab, arch_cfg.vocab_size, tokenizer)
    check_fits(arch_cfg, cfg.batch_size, resolve_device(cfg.device), optimizer=cfg.optimizer,
               path=None if arch is not None else resolve_config(settings.arch, ".json"))
    check_corpus(corpus)
    if save_checkpoints:
        check_start(out, resume=resume, overwrite=overwrite)
    with output_lock(out):
        if overwrite and distributed.context().is_main:
            clear_run(out, also=(PRETRAIN_INFO,))
        return _pretrain(settings, cfg, arch_cfg, vocab, tokenizer=tokenizer, out=out, corpus=corpus,
                         corpus_settings=corpus_settings, resume=resume, cache=cache, on_eval=on_eval,
                         save_checkpoints=save_checkpoints, desc=desc)


def _pretrain(settings: PretrainSettings, cfg: TrainSettings, arch_cfg: ArchConfig, vocab: int, *, tokenizer: Path,
              out: Path, corpus: Path | str | None, corpus_settings: CorpusSettings | None, resume: bool,
              cache: Path | None,
              on_eval: Callable[[int, dict], None] | None, save_checkpoints: bool, desc: str) -> dict:
    """``pretrain`` once its inputs are checked and ``out`` is locked."""
    ctx = distributed.setup(cfg.device)
    data = _prepare_corpus_once(ctx, tokenizer_path=tokenizer, corpus=corpus, max_tokens=settings.max_tokens,
                                settings=corpus_settings, cache=cache)
    torch.manual_seed(cfg.seed)
    model = GPT(arch_cfg)
    if ctx.is_main:
        say(f"{describe(model)} = {model.num_params():,} parameters")
        if vocab < arch_cfg.vocab_size:
            say(f"note: the tokenizer has {vocab} tokens, the arch's vocab_size is {arch_cfg.vocab_size}: "
                f"{arch_cfg.vocab_size - vocab} embedding rows stay unused")
        say(f"corpus: {data.meta['train_tokens']:,} train / {data.meta['val_tokens']:,} val tokens "
            f"({data.meta['cache']})")
        atomic_write_json(out / PRETRAIN_INFO, {"arch": arch_cfg.to_dict(), "train": asdict(cfg),
                                                "pretrain": asdict(settings), "tokenizer": str(tokenizer),
                                                "corpus": data.meta, "world_size": ctx.world_size})
    batches = RandomWindows(data.train, cfg.batch_size, arch_cfg.context_length, seed=cfg.seed, rank=ctx.rank)
    val = fixed_windows(data.val, cfg.eval_batches, cfg.batch_size, arch_cfg.context_length)
    evaluate = val_loss_evaluator(val, ctx)
    if on_eval is not None:
        evaluate = _calling_after(evaluate, on_eval)
    result = train(model, batches, cfg, out, evaluate=evaluate,
                   checkpointer=GPTCheckpointer(tokenizer) if save_checkpoints else None, ctx=ctx, resume=resume,
                   desc=desc)
    return {
        "best_val_loss": result.best_value,
        "final_val_loss": result.metrics.get("val_loss"),
        "tokens": result.tokens,
        "steps": result.step,
        "params": model.num_params(),
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
    }
