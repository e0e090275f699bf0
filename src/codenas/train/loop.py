"""The one training loop shared by pretraining, instruction tuning (SFT) and LoRA.

What varies between stages is plugged in; everything else lives here once:

- ``batches``: a ``BatchSource`` (``next_batch()`` -> dict of tensors, plus ``state_dict``/``load_state_dict`` so
  the data position is part of the resume state). Each DDP rank owns its own source (its own seeded stream).
- ``loss_fn(model, batch) -> loss`` (default ``lm_loss``: ``model(input_ids, targets, segment_ids=...)``).
- ``evaluate(model, step) -> metrics`` run on every rank every ``eval_interval`` steps and at the end (under
  ``no_grad``, eval mode, autocast); under DDP it should average its numbers over ranks itself
  (``codenas.train.distributed.all_reduce_sum``). ``best``, an ordered key of ``(metric, "min" | "max")`` pairs,
  picks the best checkpoint (fine-tuning: more val tests passed, then the lower val loss).
- ``checkpointer``: ``save(path, model, step=, metrics=, trainer_state=)`` and ``restore(path, model) -> state``,
  so a LoRA stage saves an adapter where pretraining saves a full checkpoint.

The loop: AdamW (weight decay on matrices and embeddings, none on biases and norm gains), or with
``optimizer="muon"`` torch's own ``torch.optim.Muon`` for the 2-D hidden matrices (at ``muon_lr``) and AdamW for
the embeddings, output head, norms and biases (at ``lr``); linear warmup then cosine decay to ``min_lr`` (every
group's lr follows the same schedule, scaled by its peak), gradient accumulation, gradient clipping, bf16 autocast,
optional ``torch.compile``, DDP under torchrun (only rank 0 writes). In a terminal a bar shows the step, loss,
tokens/s and ETA; otherwise rank 0 prints a compact line (``train_line``) every ``log_interval`` steps. At each
evaluation it saves ``out_dir/checkpoint_last`` (with ``trainer_state.pt``: optimizer, step, tokens, best metric,
every rank's RNG and batch-source state) and, when the key improves, ``out_dir/checkpoint_best``.
``resume=True`` continues from ``checkpoint_last`` exactly: N+M steps in one go give the same weights as N steps,
resume, M steps. Metrics go to ``out_dir/metrics.jsonl``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from codenas.io import (
    CodenasError,
    JsonlAppender,
    find_directory,
    read_json,
    read_jsonl,
    recover_directory,
    write_jsonl,
)
from codenas.model.checkpoint import META
from codenas.model.model import parameter_counts
from codenas.names import BEST, LAST, METRICS
from codenas.progress import eta, format_duration, is_terminal, progress, say
from codenas.settings import TrainSettings
from codenas.train import distributed
from codenas.train.distributed import DistContext
from codenas.train.mfu import device_peak_flops, mfu


class BatchSource(Protocol):
    """An endless, resumable stream of training batches (dicts of CPU tensors)."""

    def next_batch(self) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Checkpointer(Protocol):
    """Writes and reads what a stage keeps: a full checkpoint, or an adapter."""

    def save(self, path: Path, model: nn.Module, *, step: int, metrics: dict,
             trainer_state: dict | None) -> None: ...

    def restore(self, path: Path, model: nn.Module) -> dict:
        """Load the weights saved at ``path`` into ``model`` and return the trainer state saved with them."""
        ...


Evaluate = Callable[[nn.Module, int], dict[str, float]]
LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]


BestKey = tuple[tuple[str, str], ...]
"""An ordered key that picks the best checkpoint: ``(metric, "min" | "max")`` pairs compared in order, e.g.
``(("val_passed", "max"), ("val_loss", "min"))``: more val tests passed, then (on a tie) the lower val loss."""

VAL_LOSS: BestKey = (("val_loss", "min"),)


@dataclass
class TrainResult:
    """Where a run ended."""

    step: int
    tokens: int
    metrics: dict = field(default_factory=dict)  # the last evaluation
    best_value: float | None = None  # the best checkpoint's value of the key's first metric
    best_step: int | None = None
    best_metrics: dict | None = None  # the best checkpoint's values of every metric of the key
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token loss of a GPT-style forward ``model(input_ids, targets, segment_ids=...) -> (logits, loss)``."""
    _, loss = model(batch["input_ids"], batch["targets"], segment_ids=batch.get("segment_ids"))
    return loss


def lr_at(step: int, cfg: TrainSettings) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, cosine decay, then ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = cfg.lr_decay_steps or cfg.max_steps
    if step >= decay_steps:
        return cfg.min_lr
    progress_frac = (step - cfg.warmup_steps) / max(1, decay_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress_frac)) * (cfg.lr - cfg.min_lr)


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 math is native here: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def autocast_dtype(cfg_dtype: str, device: torch.device) -> torch.dtype | None:
    """bf16 when asked (``auto``: on a CUDA GPU that supports bf16), else None (full fp32).

    ``auto`` picks fp32 on every CPU: bf16 autocast there is several times slower than fp32 without AVX512-BF16 or
    AMX, and was still about 10x slower with AVX512-BF16 on the tiny model (it casts more than it saves).
    """
    if cfg_dtype == "fp32" or (cfg_dtype == "auto" and not (device.type == "cuda" and has_fast_bf16(device))):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CodenasError("this GPU does not support bf16; use --dtype fp32")
    return torch.bfloat16


# What torch warns on every bf16 autocast step of an RMSNorm (its fp32 weight meets a bf16 input, so it takes the
# unfused path): the result is right, and the warning says nothing a user can act on.
_AUTOCAST_NOISE = r"Mismatch dtype between input and weight"


@contextlib.contextmanager
def quiet_autocast(device_type: str, dtype: torch.dtype):
    """``torch.autocast`` without torch's warning about norms whose weight and input dtypes differ."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_AUTOCAST_NOISE, category=UserWarning)
        with torch.autocast(device_type=device_type, dtype=dtype):
            yield


def make_optimizer(model: nn.Module, cfg: TrainSettings, device: torch.device) -> torch.optim.AdamW | MuonWithAdamW:
    """The optimizer of ``cfg.optimizer`` over the trainable parameters of ``model``.

    ``adamw``: AdamW, weight decay on tensors with >= 2 dims, none on biases and norm gains. ``muon``: Muon for
    the 2-D hidden matrices (``is_hidden_matrix``) and AdamW as above for everything else (``MuonWithAdamW``).
    Each param group carries ``lr_scale`` (its peak lr / ``cfg.lr``) so the schedule sets every group's lr.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    muon = [p for n, p in named if cfg.optimizer == "muon" and is_hidden_matrix(n, p)]
    muon_ids = {id(p) for p in muon}
    rest = [p for _, p in named if id(p) not in muon_ids]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    adamw = torch.optim.AdamW(groups, lr=cfg.lr,
                              betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    if cfg.optimizer == "adamw":
        return adamw
    if not muon:
        raise CodenasError("optimizer muon: the model has no trainable 2-D hidden matrix")
    if not hasattr(torch.optim, "Muon"):
        raise CodenasError(f"optimizer muon needs torch.optim.Muon (torch >= 2.9); this is torch {torch.__version__}")
    return MuonWithAdamW(torch.optim.Muon(
        [{"params": muon, "lr_scale": cfg.muon_lr / cfg.lr}], lr=cfg.muon_lr, momentum=cfg.muon_momentum,
        weight_decay=cfg.muon_weight_decay), adamw)


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """A 2-D weight inside the transformer blocks (not an embedding, position table or output head)."""
    embedding = any(part in name for part in ("wte", "wpe", "lm_head", "embed"))
    return p.dim() == 2 and not embedding


class MuonWithAdamW:
    """Muon and AdamW stepped together, seen by the loop as one optimizer (param groups, state, step).

    ``param_groups`` lists Muon's groups then AdamW's, so the schedule sets all of them; ``state_dict`` holds both
    optimizers' states for exact resume.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    def step(self, closure=None) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise CodenasError("the checkpoint's optimizer state is not Muon + AdamW: resume with the same "
                               "optimizer setting")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])

    def __repr__(self) -> str:
        return f"MuonWithAdamW({self.muon!r}, {self.adamw!r})"


class _Prefetcher:
    """Wraps a ``BatchSource``: draws the next batch while the device still works on the current step, pins it
    (CUDA) and starts its copy to the device without blocking. ``state_dict`` is the source's state before the
    batch drawn ahead, so a checkpoint resumes at the first batch the model has not trained on."""

    def __init__(self, source: BatchSource, device: torch.device):
        self.source, self.device, self.pin = source, device, device.type == "cuda"
        self._ahead: tuple[dict, dict[str, torch.Tensor]] | None = None

    def _draw(self) -> tuple[dict, dict[str, torch.Tensor]]:
        state = copy.deepcopy(self.source.state_dict())
        batch = self.source.next_batch()
        if self.pin:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        return state, {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def prefetch(self) -> None:
        if self._ahead is None:
            self._ahead = self._draw()

    def next_batch(self) -> dict[str, torch.Tensor]:
        _, batch = self._ahead if self._ahead is not None else self._draw()
        self._ahead = None
        return batch

    def state_dict(self) -> dict:
        return self._ahead[0] if self._ahead is not None else self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._ahead = None
        self.source.load_state_dict(state)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def is_better(metrics: dict, best: dict | None, key: BestKey) -> bool:
    """Whether ``metrics`` beats ``best`` under the ordered ``key`` (ties on every metric are not better)."""
    if best is None:
        return True
    for name, mode in key:
        new, old = metrics[name], best[name]
        if new != old:
            return new < old if mode == "min" else new > old
    return False


# The compact console line: (metrics.jsonl key, how it is shown), in order; a key missing from a row is left out,
# so a stage that also logs e.g. ``mfu`` gets it on the line by adding it to the row.
LINE_FIELDS = (("loss", "loss {:.4f}"), ("lr", "lr {:.2e}"), ("tokens_per_s", "{:,.0f} tok/s"),
               ("mfu", "MFU {:.1%}"))
# How evaluation metrics are shown on the console (words, not metrics.jsonl keys); others by their key.
METRIC_FORMATS = {"val_loss": "val loss {:.4f}", "val_pass@1": "val pass@1 {:.1%}",
                  "val_passed": "{:.0f} val samples passed"}


def train_line(desc: str, step: int, max_steps: int, row: dict[str, Any], eta_s: float | None) -> str:
    """``pretrain step 40/1200 | loss 5.1234 | lr 1.00e-03 | 3,210 tok/s | ETA 4 min 10 s``."""
    parts = [f"{desc} step {step}/{max_steps}"]
    parts += [fmt.format(row[key]) for key, fmt in LINE_FIELDS if isinstance(row.get(key), int | float)]
    parts.append(f"ETA {format_duration(eta_s)}")
    return " | ".join(parts)


def metrics_text(metrics: dict[str, Any]) -> str:
    """Evaluation metrics for the console: ``val loss 3.8210, 1 val samples passed, val pass@1 10.0%``."""
    parts = []
    for key, value in metrics.items():
        if key in METRIC_FORMATS:
            parts.append(METRIC_FORMATS[key].format(value))
        elif isinstance(value, int | float):
            parts.append(f"{key} {value:.4g}")
    return ", ".join(parts)


def write_failure(error: BaseException, path: Path, step: int) -> str:
    """What a failed checkpoint write says: the cause, the free space, and which checkpoint a resume starts from
    (the atomic writers leave the previous one whole)."""
    path = Path(path)
    cause = error.strerror if isinstance(error, OSError) and error.strerror else \
        (str(error).strip().splitlines() or [type(error).__name__])[0]
    last = find_directory(path.parent / LAST)
    earlier = find_directory(path)  # the same checkpoint as last written: about the size of this one
    try:
        free = shutil.disk_usage(path.parent).free
        need = sum(f.stat().st_size for f in earlier.iterdir() if f.is_file()) if earlier is not None else 0
        space = f"{free / 2**20:.1f} MiB free" + (f", about {need / 2**20:.1f} MiB needed: the disk is full"
                                                  if need > free else "")
    except OSError:
        space = "free space unknown"
    kept = (f"{LAST} of step {checkpoint_step(last)} is intact: free space, then rerun with --resume"
            if last is not None else "no checkpoint to resume from yet")
    return f"cannot write the checkpoint of step {step} ({cause}; {space}); {kept}"


def checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint (or adapter) folder was saved at, from its ``codenas.json``; None when unreadable."""
    try:
        step = read_json(Path(path) / META).get("step")
    except (CodenasError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def check_start(out_dir: Path, *, resume: bool, overwrite: bool) -> int | None:
    """Before anything is created: whether a run may start in ``out_dir``. ``resume`` needs a ``checkpoint_last``
    (its step is returned); a fresh run refuses a folder that holds an earlier run's checkpoint unless
    ``overwrite`` (then ``clear_run`` removes that run once the folder is locked)."""
    out_dir = Path(out_dir)
    last = find_directory(out_dir / LAST)  # also the copy a kill between a checkpoint's renames left aside
    if resume:
        if overwrite:
            raise CodenasError("--resume continues the run in this folder and --overwrite starts over: give one")
        if last is None:
            raise CodenasError("nothing to resume from (no checkpoint_last folder)", out_dir / LAST)
        return checkpoint_step(last)
    if overwrite:
        return None
    held = last or find_directory(out_dir / BEST)
    if held is not None:
        step = checkpoint_step(held)
        at = f" at step {step}" if step is not None else ""
        if last is None:
            raise CodenasError(f"holds a run{at} with only a {BEST} (nothing to resume from): --overwrite to start "
                               "over", out_dir)
        raise CodenasError(f"holds a run{at}: --resume to continue, --overwrite to start over", out_dir)
    return None


def clear_run(out_dir: Path, also: tuple[str, ...] = ()) -> None:
    """Remove what an earlier run wrote in ``out_dir`` (its checkpoints, metrics and the entries named in
    ``also``) before a run starts over; call it while holding the folder's lock."""
    out_dir = Path(out_dir)
    for name in (LAST, BEST, METRICS, *also):
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def read_metrics(out_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``out_dir/metrics.jsonl`` (a torn last line is ignored); none when it is absent."""
    path = Path(out_dir) / METRICS
    return [row for _, row in read_jsonl(path, allow_torn_tail=True)] if path.is_file() else []


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log rows past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if path.is_file():
        write_jsonl(path, [row for _, row in read_jsonl(path, allow_torn_tail=True) if row.get("step", 0) <= step])


class _Trainer:
    """State of one run; ``train()`` below is the public entry point."""

    def __init__(self, model: nn.Module, batches: BatchSource, cfg: TrainSettings, out_dir: Path, ctx: DistContext,
                 evaluate: Evaluate | None, checkpointer: Checkpointer | None, loss_fn: LossFn, *, resume: bool,
                 desc: str, best: BestKey):
        for _, mode in best:
            if mode not in ("min", "max"):
                raise CodenasError(f"best checkpoint key: mode must be min or max, got {mode!r}")
        self.cfg, self.out_dir, self.ctx = cfg, Path(out_dir), ctx
        self.desc, self.best = desc, tuple(best)
        self.batches = _Prefetcher(batches, ctx.device)
        self.evaluate, self.checkpointer, self.loss_fn = evaluate, checkpointer, loss_fn
        self.model = model.to(ctx.device)
        self.n_params = parameter_counts(self.model)[1]
        self.peak_flops = device_peak_flops(ctx.device, cfg.peak_flops)
        self.optimizer = make_optimizer(self.model, cfg, ctx.device)
        self.amp_dtype = autocast_dtype(cfg.dtype, ctx.device)
        self.step, self.tokens = 0, 0
        self.best_metrics: dict | None = None
        self.best_step: int | None = None
        self.metrics: dict = {}
        if resume:
            self._resume()
        else:
            _seed_everything(cfg.seed * 1_000_003 + ctx.rank)
            if ctx.is_main:
                _truncate_metrics(self.out_dir / METRICS, 0)  # a fresh run starts a fresh log
        # torch.compile of a module returns a module (OptimizedModule); its annotation says only a callable
        self.train_model: nn.Module = cast(nn.Module, torch.compile(self.model)) if cfg.compile else self.model
        if ctx.is_distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.train_model, device_ids=device_ids)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return quiet_autocast(self.ctx.device.type, self.amp_dtype)

    def _resume(self) -> None:
        path = recover_directory(self.out_dir / LAST)  # a kill between a checkpoint's renames left it aside
        if self.checkpointer is None or not path.is_dir():
            raise CodenasError("nothing to resume from (no checkpoint_last folder)", path)
        state = self.checkpointer.restore(path, self.model)
        if not state:
            raise CodenasError("checkpoint has no trainer state to resume from", path)
        saved_optimizer = state.get("config", {}).get("optimizer", "adamw")
        if saved_optimizer != self.cfg.optimizer:
            raise CodenasError(f"checkpoint was trained with optimizer {saved_optimizer}; resume with the same "
                               f"(now {self.cfg.optimizer})", path)
        if len(state["ranks"]) != self.ctx.world_size:
            raise CodenasError(f"checkpoint was written by {len(state['ranks'])} processes; "
                               f"resume with the same number (now {self.ctx.world_size})", path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.tokens, self.metrics = state["step"], state["tokens"], state.get("metrics", {})
        self.best_metrics, self.best_step = state["best_metrics"], state["best_step"]
        mine = state["ranks"][self.ctx.rank]
        self.batches.load_state_dict(mine["batches"])
        _set_rng_state(mine["rng"])
        if self.ctx.is_main:
            _truncate_metrics(self.out_dir / METRICS, self.step)
            say(f"{self.desc}: resuming from {path} (step {self.step} of {self.cfg.max_steps})")

    def _train_step(self) -> torch.Tensor:
        """One optimizer step (``grad_accum`` micro-batches); returns the mean micro-batch loss (no device sync)."""
        lr = lr_at(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        total = torch.zeros((), device=self.ctx.device)
        for micro in range(self.cfg.grad_accum):
            batch = self.batches.next_batch()
            last_micro = micro == self.cfg.grad_accum - 1
            ddp = self.train_model if isinstance(self.train_model, DistributedDataParallel) else None
            with ddp.no_sync() if ddp is not None and not last_micro else contextlib.nullcontext():
                with self.autocast():
                    loss = self.loss_fn(self.train_model, batch) / self.cfg.grad_accum
                loss.backward()
            self.batches.prefetch()  # the device is still busy with this backward: prepare the next batch now
            total += loss.detach()
            self.tokens += batch["input_ids"].numel() * self.ctx.world_size
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                           self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total

    def _evaluate(self) -> dict:
        if self.evaluate is None:
            return {}
        self.model.eval()
        with torch.no_grad(), self.autocast():
            metrics = dict(self.evaluate(self.model, self.step))
        self.model.train()
        missing = [name for name, _ in self.best if name not in metrics]
        if missing:
            raise CodenasError(f"evaluation returned no {missing[0]!r} (got {sorted(metrics)})")
        return metrics

    def _checkpoint(self, metrics: dict) -> None:
        """Save best (if improved) and last; every rank takes part (their states are gathered)."""
        self.metrics = metrics
        improved = bool(metrics) and is_better(metrics, self.best_metrics, self.best)
        improved = distributed.broadcast_object(improved, self.ctx)
        if improved:
            self.best_metrics, self.best_step = {name: metrics[name] for name, _ in self.best}, self.step
        ranks = distributed.gather_objects({"rng": _rng_state(), "batches": self.batches.state_dict()}, self.ctx)
        checkpointer = self.checkpointer
        if checkpointer is not None and self.ctx.is_main:
            # best first: a failed write then leaves checkpoint_last (the resume point) as it was, whose state
            # names the best checkpoint still in place
            if improved:
                self._save(checkpointer, BEST, metrics=metrics, trainer_state=None)
            state = {"optimizer": self.optimizer.state_dict(), "step": self.step, "tokens": self.tokens,
                     "best_metrics": self.best_metrics, "best_step": self.best_step, "metrics": metrics,
                     "ranks": ranks, "config": asdict(self.cfg)}
            self._save(checkpointer, LAST, metrics=metrics, trainer_state=state)
        distributed.barrier(self.ctx)

    def _save(self, checkpointer: Checkpointer, name: str, *, metrics: dict, trainer_state: dict | None) -> None:
        """Save a checkpoint; a failed write (a full disk...) is one error naming the folder and what is left."""
        path = self.out_dir / name
        try:
            checkpointer.save(path, self.model, step=self.step, metrics=metrics, trainer_state=trainer_state)
        except (OSError, RuntimeError, SafetensorError) as e:  # the writers' own error types (torch: RuntimeError)
            raise CodenasError(write_failure(e, path, self.step), path) from None

    def _train_stats(self, mean_loss: torch.Tensor | float, tokens_before: int, start_time: float) -> dict:
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start_time
        tokens_per_s = (self.tokens - tokens_before) / max(elapsed, 1e-9)
        stats = {"loss": float(mean_loss), "lr": lr_at(self.step - 1, self.cfg), "tokens": self.tokens,
                 "tokens_per_s": tokens_per_s}
        if self.peak_flops:  # per device: tokens/s counts every rank's tokens
            stats["mfu"] = mfu(self.n_params, tokens_per_s / self.ctx.world_size, self.peak_flops)
        return stats

    def run(self) -> TrainResult:
        cfg, main = self.cfg, self.ctx.is_main
        log = JsonlAppender(self.out_dir / METRICS) if main else None
        bar = progress(total=cfg.max_steps, initial=self.step, desc=self.desc, unit="step",
                       line_interval=None) if main else None
        lines = main and not is_terminal()
        window_loss: torch.Tensor | float = 0.0  # a tensor once a step is added: summed without a device sync
        window_steps, window_tokens, window_start = 0, self.tokens, time.perf_counter()
        first_step, run_start = self.step, time.perf_counter()
        self.model.train()
        try:
            while self.step < cfg.max_steps:
                window_loss += self._train_step()
                window_steps += 1
                row: dict[str, Any] = {}
                evaluating = (cfg.eval_interval and self.step % cfg.eval_interval == 0) or self.step == cfg.max_steps
                if evaluating or self.step % cfg.log_interval == 0:
                    row = self._train_stats(window_loss / window_steps, window_tokens, window_start)
                    if bar is not None:
                        mfu_text = {"mfu": f"{row['mfu']:.1%}"} if "mfu" in row else {}
                        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}", **mfu_text)
                    if lines:
                        left = eta(self.step - first_step, cfg.max_steps - first_step,
                                   time.perf_counter() - run_start)
                        say(train_line(self.desc, self.step, cfg.max_steps, row, left))
                    window_loss, window_steps = 0.0, 0
                if evaluating:
                    metrics = self._evaluate()
                    row.update(metrics)
                if row:
                    window_tokens, window_start = self.tokens, time.perf_counter()
                    if log is not None:  # before the checkpoint: a resume from it then finds every row logged
                        log.append({"step": self.step, **row})
                if evaluating:
                    self._checkpoint(metrics)
                    if main:
                        say(f"{self.desc} step {self.step}: {metrics_text(metrics)}")
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        saved = self.checkpointer is not None
        best_value = None if self.best_metrics is None else self.best_metrics[self.best[0][0]]
        return TrainResult(step=self.step, tokens=self.tokens, metrics=self.metrics, best_value=best_value,
                           best_step=self.best_step, best_metrics=self.best_metrics,
                           last_checkpoint=self.out_dir / LAST if saved else None,
                           best_checkpoint=self.out_dir / BEST if saved and self.best_step is not None else None)


def train(model: nn.Module, batches: BatchSource, cfg: TrainSettings, out_dir: Path, *,
          evaluate: Evaluate | None = None, checkpointer: Checkpointer | None = None,
          loss_fn: LossFn = lm_loss, ctx: DistContext | None = None, resume: bool = False, desc: str = "train",
          best: BestKey = VAL_LOSS) -> TrainResult:
    """Train ``model`` on ``batches`` for ``cfg.max_steps`` optimizer steps (see the module docstring).

    ``resume`` continues from ``out_dir/checkpoint_last``; ``best`` is the ordered key that picks
    ``checkpoint_best``; ``desc`` labels the progress bar.

    ``ctx`` comes from ``codenas.train.distributed.setup`` (called here when omitted); the caller seeds and builds
    the model identically on every rank and gives each rank its own batch source.
    """
    ctx = ctx or distributed.setup(cfg.device)
    return _Trainer(model, batches, cfg, out_dir, ctx, evaluate, checkpointer, loss_fn, resume=resume, desc=desc,
                    best=best).run()
