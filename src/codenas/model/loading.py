"""Loading every kind of model through one function, ``load_model``, and saving a full model in its own layout.

``load_model(spec)`` accepts:
- a codenas checkpoint folder (``codenas.json`` of kind ``codenas``); ``arch``/``tokenizer_path``, when given,
  must match what the checkpoint carries;
- a bare weights file (``.safetensors``, or a ``.pt``/``.bin`` state dict as the seed wrote them), which needs
  both ``arch`` and ``tokenizer_path``;
- ``hf:DIR`` (or any folder with a transformers ``config.json``): a local transformers causal LM;
- a LoRA adapter folder: the base it points to is loaded (checked unchanged by its sha256) and the adapter merged
  in, so evaluation and sampling always see one plain model (``LoadedModel.adapter`` says where it came from).

``save_model`` writes a full model in its own kind's layout (a codenas checkpoint, or a ``save_pretrained`` folder
with a ``codenas.json`` of kind ``hf``). Fine-tuning (``codenas.train``) and evaluation (``codenas.eval``) both
load through here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer
from torch import nn

from codenas.io import CodenasError, atomic_directory, atomic_write_json, read_json, sha256_file
from codenas.model.checkpoint import (
    META,
    TRAINER_STATE,
    WEIGHTS,
    load_checkpoint,
    read_meta,
    read_state_dict,
    save_checkpoint,
)
from codenas.model.config import ArchConfig
from codenas.model.hf import HF_PREFIX, HFCausalLM, hf_dir, load_hf, save_hf
from codenas.model.model import GPT
from codenas.model.tokenizer import check_vocab_fits, eot_id, load_tokenizer, pad_id, tokenizer_file

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast
from codenas.names import ADAPTER_CONFIG, HF_CONFIG, TOKENIZER_FILE


@dataclass
class LoadedModel:
    """A loaded model with everything fine-tuning, saving and sampling need to know about it."""

    model: nn.Module  # a GPT, or an HFCausalLM: forward(idx, targets=None) -> (logits, loss)
    tokenizer: Tokenizer
    eot_id: int
    pad_id: int
    context_length: int
    ref: str  # how to load it again: an absolute path, or "hf:/abs/DIR"
    sha256: str | None  # of the weights file, so an adapter can tell when its base changed
    arch: ArchConfig | None  # None for hf: models
    meta: dict  # the codenas.json it came with (step, metrics, ...), {} if none
    tokenizer_file: Path | None = None  # the tokenizer.json to copy into codenas checkpoints
    hf_tokenizer: PreTrainedTokenizerFast | None = None  # the transformers tokenizer of hf: models (saved alongside)
    adapter: Path | None = None  # the LoRA adapter folder merged into the model, if any

    @property
    def kind(self) -> str:
        return "hf" if isinstance(self.model, HFCausalLM) else "codenas"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def is_adapter(spec: str) -> bool:
    return not spec.startswith(HF_PREFIX) and (Path(spec) / ADAPTER_CONFIG).is_file()


def _is_hf_spec(spec: str) -> bool:
    if spec.startswith(HF_PREFIX):
        return True
    path = Path(spec)
    return path.is_dir() and (path / HF_CONFIG).is_file() and not (path / ADAPTER_CONFIG).is_file()


def load_model(spec: str, *, arch: ArchConfig | None = None, tokenizer_path: Path | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Load any model codenas writes or fine-tunes from (see the module docstring for the accepted specs)."""
    spec = str(spec)
    if is_adapter(spec):
        if arch is not None or tokenizer_path is not None:
            raise CodenasError("an arch or tokenizer does not apply to a LoRA adapter (it points to its base)", spec)
        loaded = _load_merged_adapter(Path(spec).resolve())
    elif _is_hf_spec(spec):
        if arch is not None or tokenizer_path is not None:
            raise CodenasError("--arch_json and --tokenizer_path do not apply to hf: bases (they carry their own)")
        loaded = _load_hf(spec)
    else:
        path = Path(spec).expanduser().resolve()
        loaded = _load_codenas_dir(path, arch, tokenizer_path) if path.is_dir() else _load_weights_file(
            path, arch, tokenizer_path)
    loaded.model.to(resolve_device(device))
    return loaded


def check_loadable(spec: str) -> None:
    """The checks of ``load_model`` that need no weights read (files present, metadata valid), for commands that
    validate every input before creating their output; ``load_model`` still checks the weights themselves."""
    spec = str(spec)
    if is_adapter(spec):
        adapter_dir = Path(spec).resolve()
        pointer = read_json(adapter_dir / META)
        if not isinstance(pointer, dict) or pointer.get("kind") != "lora" or "base" not in pointer:
            raise CodenasError('not a codenas LoRA adapter (expected "kind": "lora" with a "base")', adapter_dir / META)
        base = str(pointer["base"])
        if base.startswith(HF_PREFIX) or not Path(base).is_file():  # a bare weights base is checked on load
            check_loadable(base)
        return
    if _is_hf_spec(spec):
        hf_dir(spec if spec.startswith(HF_PREFIX) else HF_PREFIX + spec)
        return
    path = Path(spec).expanduser().resolve()
    if not path.is_dir():
        if not path.is_file():
            raise CodenasError("checkpoint not found", path)
        return
    meta = read_meta(path)
    ArchConfig.from_dict(meta["arch"], path / META)
    for name, what in ((WEIGHTS, "weights file"), (TOKENIZER_FILE, "tokenizer file")):
        if not (path / name).is_file():
            raise CodenasError(f"{what} missing from checkpoint", path / name)


def _load_hf(spec: str) -> LoadedModel:
    path = hf_dir(spec if spec.startswith(HF_PREFIX) else HF_PREFIX + spec)
    model, hf_tokenizer = load_hf(path)
    weights = path / WEIGHTS
    meta = read_json(path / META) if (path / META).is_file() else {}
    return LoadedModel(model=model, tokenizer=hf_tokenizer.backend_tokenizer, eot_id=hf_tokenizer.eos_token_id,
                       pad_id=hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else
                       hf_tokenizer.eos_token_id, context_length=model.config.context_length,
                       ref=HF_PREFIX + str(path), sha256=sha256_file(weights) if weights.is_file() else None,
                       arch=None, meta=meta, hf_tokenizer=hf_tokenizer)


def _load_codenas_dir(path: Path, arch: ArchConfig | None, tokenizer_path: Path | None) -> LoadedModel:
    ckpt = load_checkpoint(path)
    if arch is not None:
        _check_same_arch(arch, ckpt.arch, path)
    if tokenizer_path is not None:
        given = tokenizer_file(tokenizer_path)
        if not given.is_file():
            raise CodenasError("tokenizer file not found", given)
        if sha256_file(given) != ckpt.meta["tokenizer_sha256"]:
            raise CodenasError(f"--tokenizer_path {given} is not the tokenizer this checkpoint was trained with",
                               path)
    return LoadedModel(model=ckpt.model, tokenizer=ckpt.tokenizer, eot_id=eot_id(ckpt.tokenizer),
                       pad_id=pad_id(ckpt.tokenizer), context_length=ckpt.arch.context_length, ref=str(path),
                       sha256=sha256_file(path / WEIGHTS), arch=ckpt.arch, meta=ckpt.meta,
                       tokenizer_file=tokenizer_file(path))


def _check_same_arch(given: ArchConfig, carried: ArchConfig, path: Path) -> None:
    a, b = given.to_dict(), carried.to_dict()
    diff = [f"{k}: given {a[k]!r}, checkpoint {b[k]!r}" for k in a if k != "name" and a[k] != b[k]]
    if diff:
        raise CodenasError("--arch_json does not match the checkpoint's arch (" + "; ".join(diff) + ")", path)


def _load_weights_file(path: Path, arch: ArchConfig | None, tokenizer_path: Path | None) -> LoadedModel:
    if not path.is_file():
        raise CodenasError("checkpoint not found", path)
    if arch is None or tokenizer_path is None:
        raise CodenasError("a bare weights file carries no arch or tokenizer: pass --arch_json and --tokenizer_path",
                           path)
    tok_file = tokenizer_file(tokenizer_path)
    tokenizer = load_tokenizer(tok_file)
    check_vocab_fits(tokenizer.get_vocab_size(), arch.vocab_size, tok_file)
    model = GPT(arch)
    model.load_state_dict(read_state_dict(path, model), strict=True)
    return LoadedModel(model=model.eval(), tokenizer=tokenizer, eot_id=eot_id(tokenizer), pad_id=pad_id(tokenizer),
                       context_length=arch.context_length, ref=str(path), sha256=sha256_file(path), arch=arch,
                       meta={}, tokenizer_file=tok_file)


def adapter_base(adapter_dir: Path) -> LoadedModel:
    """The base a LoRA adapter was trained on (checked unchanged by its sha256); the adapter is not applied."""
    pointer = read_json(adapter_dir / META)
    if pointer.get("kind") != "lora" or "base" not in pointer:
        raise CodenasError('not a codenas LoRA adapter (expected "kind": "lora" with a "base")', adapter_dir / META)
    bare_file = not pointer["base"].startswith(HF_PREFIX) and Path(pointer["base"]).is_file()
    arch = ArchConfig.from_dict(pointer["arch"], adapter_dir / META) if bare_file else None
    base = load_model(pointer["base"], arch=arch, tokenizer_path=tokenizer_file(adapter_dir) if bare_file else None)
    if pointer.get("base_sha256") and base.sha256 and base.sha256 != pointer["base_sha256"]:
        raise CodenasError(f"the base {pointer['base']} changed since this adapter was trained (sha256 differs)",
                           adapter_dir)
    return replace(base, meta=pointer)


def _load_merged_adapter(adapter_dir: Path) -> LoadedModel:
    from peft import PeftModel

    base = adapter_base(adapter_dir)
    merged = PeftModel.from_pretrained(base.model, str(adapter_dir)).merge_and_unload()
    return replace(base, model=merged.eval(), adapter=adapter_dir)


def save_model(out_dir: Path, loaded: LoadedModel, *, step: int, metrics: dict | None = None,
               trainer_state: dict | None = None) -> None:
    """Write a full model atomically: a codenas checkpoint, or for hf models a ``save_pretrained`` folder."""
    model = loaded.model
    if not isinstance(model, HFCausalLM):  # kind "codenas"
        if not isinstance(model, GPT) or loaded.tokenizer_file is None:
            raise TypeError(f"a codenas model to save is a GPT with its tokenizer file, not a {type(model).__name__}")
        save_checkpoint(out_dir, model, tokenizer_path=loaded.tokenizer_file, step=step, metrics=metrics,
                        trainer_state=trainer_state)
        return
    if loaded.hf_tokenizer is None:
        raise TypeError("an hf: model to save comes with its transformers tokenizer")
    with atomic_directory(out_dir) as tmp:
        save_hf(tmp, model, loaded.hf_tokenizer)
        atomic_write_json(tmp / META, {"kind": "hf", "base": loaded.ref, "step": step, "metrics": metrics or {}})
        if trainer_state is not None:
            write_trainer_state(tmp, trainer_state)


def write_trainer_state(folder: Path, trainer_state: dict) -> None:
    torch.save(trainer_state, folder / TRAINER_STATE)
