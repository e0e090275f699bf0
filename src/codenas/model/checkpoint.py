"""Checkpoints: one directory per saved model, written atomically and validated on load.

A checkpoint directory holds
- ``model.safetensors``: the weights (a tied ``lm_head.weight`` is stored once, as ``wte.weight``);
- ``codenas.json``: ``{"kind": "codenas", "arch": {...}, "tokenizer_sha256", "step", "metrics", "codenas_version"}``;
- ``tokenizer.json``: a copy of the tokenizer, whose sha256 must match ``codenas.json``;
- ``trainer_state.pt`` (optional): whatever the trainer needs to resume exactly (optimizer, scheduler, RNG
  states, data position), saved with ``torch.save``.

The directory is first written beside its destination and then renamed into place, so a reader never sees a
half-written checkpoint.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

import codenas
from codenas.io import CodenasError, atomic_directory, dumps_json, read_json, sha256_file
from codenas.model.config import ArchConfig
from codenas.model.model import GPT
from codenas.model.tokenizer import load_tokenizer, tokenizer_file
from codenas.names import CHECKPOINT_META, TOKENIZER_FILE, TRAINER_STATE, WEIGHTS

META = CHECKPOINT_META
TOKENIZER = TOKENIZER_FILE


@dataclass
class Checkpoint:
    model: GPT
    arch: ArchConfig
    tokenizer: Tokenizer
    meta: dict
    path: Path


def save_checkpoint(
    out_dir: Path,
    model: GPT,
    *,
    tokenizer_path: Path,
    step: int,
    metrics: dict | None = None,
    trainer_state: dict | None = None,
) -> None:
    """Write ``model`` (and optionally ``trainer_state``) as a checkpoint directory ``out_dir``, atomically."""
    tokenizer_path = tokenizer_file(tokenizer_path)
    if not tokenizer_path.is_file():
        raise CodenasError("tokenizer file not found", tokenizer_path)
    meta = {
        "kind": "codenas",
        "arch": model.config.to_dict(),
        "tokenizer_sha256": sha256_file(tokenizer_path),
        "step": step,
        "metrics": metrics or {},
        "codenas_version": codenas.__version__,
    }
    with atomic_directory(out_dir) as tmp:
        save_file(_weights_to_save(model), str(tmp / WEIGHTS))
        (tmp / META).write_text(dumps_json(meta), encoding="utf-8")
        shutil.copyfile(tokenizer_path, tmp / TOKENIZER)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)


def _weights_to_save(model: GPT) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, with a tied ``lm_head.weight`` left out (it is ``wte.weight``)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        del state["lm_head.weight"]
    return state


def read_meta(path: Path) -> dict:
    """The validated ``codenas.json`` of checkpoint directory ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise CodenasError("checkpoint directory not found", path)
    meta_path = path / META
    meta = read_json(meta_path)
    if isinstance(meta, dict) and meta.get("kind") == "lora":
        raise CodenasError("this is a LoRA adapter, not a full checkpoint: merge it first "
                           "(codenas lora merge ADAPTER --out DIR)", path)
    if not isinstance(meta, dict) or meta.get("kind") != "codenas":
        raise CodenasError('not a codenas checkpoint (expected "kind": "codenas")', meta_path)
    for key in ("arch", "tokenizer_sha256", "step"):
        if key not in meta:
            raise CodenasError(f"missing key {key!r}", meta_path)
    return meta


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint directory; the model comes back in eval mode on ``device``."""
    path = Path(path)
    meta = read_meta(path)
    arch = ArchConfig.from_dict(meta["arch"], path / META)
    tokenizer_file = path / TOKENIZER
    if not tokenizer_file.is_file():
        raise CodenasError("tokenizer file missing from checkpoint", tokenizer_file)
    if sha256_file(tokenizer_file) != meta["tokenizer_sha256"]:
        raise CodenasError(f"tokenizer sha256 does not match {META}", tokenizer_file)
    tokenizer = load_tokenizer(tokenizer_file)
    model = GPT(arch)
    _load_weights(model, path / WEIGHTS)
    model.to(device).eval()
    return Checkpoint(model=model, arch=arch, tokenizer=tokenizer, meta=meta, path=path)


def _load_weights(model: GPT, weights_file: Path) -> None:
    if not weights_file.is_file():
        raise CodenasError("weights file missing from checkpoint", weights_file)
    model.load_state_dict(read_state_dict(weights_file, model), strict=True)


def read_state_dict(path: Path, model: GPT) -> dict[str, torch.Tensor]:
    """The weights in ``path`` checked to fit ``model`` exactly (every name and shape), ready for
    ``load_state_dict(strict=True)``: a safetensors file, or a torch pickle of a state dict (``{"model": ...}``
    and ``torch.compile``/DDP name prefixes accepted, as the seed wrote them); a tied ``lm_head.weight`` that was
    stored once as ``wte.weight`` is filled in."""
    path = Path(path)
    state: object  # whatever the file holds, checked below
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and torch.load raise many types for a bad file
        raise CodenasError(f"cannot read weights: {e}", path) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CodenasError("not a state dict", path)
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    if model.config.tie_embeddings and "lm_head.weight" not in state and "wte.weight" in state:
        state["lm_head.weight"] = state["wte.weight"]
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CodenasError(f"weights do not fit the arch (missing {missing[:3]}, unexpected {unexpected[:3]})", path)
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CodenasError(
                f"weight {name!r} has shape {tuple(tensor.shape)}, the arch needs {tuple(expected[name].shape)}", path)
    return state


def load_trainer_state(path: Path) -> dict | None:
    """The ``trainer_state.pt`` dict of a checkpoint directory, or None if it has none.

    It is unpickled in full (RNG states and the like are not plain tensors): load only checkpoints you trust.
    """
    state_file = Path(path) / TRAINER_STATE
    if not state_file.is_file():
        return None
    try:
        return torch.load(state_file, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a corrupt file
        raise CodenasError(f"cannot read trainer state: {e}", state_file) from None
