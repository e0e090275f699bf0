"""LoRA glue on top of `peft`: wrap a base with adapters, save adapters, merge them.

Defaults follow the seed: rank 8, alpha 16, adapters on each block's ``qkv_proj`` and ``out_proj`` (for ``hf:``
bases, the attention projections of the layout, see ``codenas.model.hf.HF_LORA_TARGETS``). Every base weight is frozen,
so a LoRA on ``l8h512`` trains exactly ``8 * (8*(512+1536) + 8*(512+512)) = 196,608`` parameters (as
``codenas.model.model.parameter_counts`` counts them).

An adapter folder is PEFT's own ``adapter_config.json`` + ``adapter_model.safetensors`` plus codenas'
``codenas.json`` (``{"kind": "lora", "base": <abs path or hf:DIR>, "base_sha256", "arch", "lora", "step",
"metrics"}``), a copy of ``tokenizer.json`` and, during training, ``trainer_state.pt``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from codenas.io import CodenasError, atomic_directory, atomic_write_json, check_new_folder, replace_folder
from codenas.model.checkpoint import TOKENIZER
from codenas.model.hf import HFCausalLM, default_hf_targets
from codenas.model.loading import ADAPTER_CONFIG, LoadedModel, load_model, save_model, write_trainer_state
from codenas.names import ADAPTER_WEIGHTS, CHECKPOINT_META, PEFT_README
from codenas.settings import LoraSettings

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

DEFAULT_TARGETS = ("qkv_proj", "out_proj")


def default_targets(model: nn.Module) -> list[str]:
    """The attention projections: ``qkv_proj``/``out_proj`` for codenas GPTs, by layout for ``hf:`` bases."""
    return default_hf_targets(model) if isinstance(model, HFCausalLM) else list(DEFAULT_TARGETS)


def _check_targets(model: nn.Module, targets: Sequence[str]) -> None:
    names = [name for name, _ in model.named_modules()]
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in names):
            raise CodenasError(f"LoRA target {target!r} matches no module of the model")


def apply_lora(model: nn.Module, settings: LoraSettings = LoraSettings()) -> nn.Module:
    """Wrap ``model`` in a ``peft.PeftModel`` with fresh adapters; every base parameter is frozen."""
    from peft import LoraConfig, get_peft_model

    targets = list(settings.targets) or default_targets(model)
    _check_targets(model, targets)
    conv1d = any(type(m).__name__ == "Conv1D" for name, m in model.named_modules()
                 if any(name.endswith("." + t) for t in targets))  # GPT-2 stores weights transposed
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, fan_in_fan_out=conv1d)
    return get_peft_model(model, config)


def lora_summary(model: nn.Module) -> dict:
    """The LoRA hyper-parameters of a wrapped model (for codenas.json)."""
    # apply_lora's wrapper and its LoraConfig (nn.Module types a module's attributes as Tensor | Module)
    config = cast("LoraConfig", cast("PeftModel", model).peft_config["default"])
    return {"rank": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
            "targets": sorted(cast("set[str]", config.target_modules))}  # peft turns the list into a set


def save_adapter(out_dir: Path, peft_model: nn.Module, base: LoadedModel, *, step: int, metrics: dict | None = None,
                 trainer_state: dict | None = None) -> None:
    """Write an adapter folder atomically (see the module docstring for its files)."""
    with atomic_directory(out_dir) as tmp:
        cast("PeftModel", peft_model).save_pretrained(str(tmp))  # apply_lora's wrapper
        (tmp / PEFT_README).unlink(missing_ok=True)  # PEFT's model-card template says nothing useful
        if base.tokenizer_file is not None:
            shutil.copyfile(base.tokenizer_file, tmp / TOKENIZER)
        else:
            base.tokenizer.save(str(tmp / TOKENIZER))
        atomic_write_json(tmp / CHECKPOINT_META, {
            "kind": "lora", "base": base.ref, "base_sha256": base.sha256,
            "arch": base.arch.to_dict() if base.arch is not None else None,
            "lora": lora_summary(peft_model), "step": step, "metrics": metrics or {},
        })
        if trainer_state is not None:
            write_trainer_state(tmp, trainer_state)


def restore_adapter(peft_model: nn.Module, adapter_dir: Path) -> None:
    """Load the adapter weights saved in ``adapter_dir`` into an already wrapped model (same targets)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise CodenasError("adapter weights missing", weights)
    # load_state_dict's (missing_keys, unexpected_keys); peft annotates it as the namedtuple factory
    result: Any = set_peft_model_state_dict(peft_model, load_file(str(weights)))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise CodenasError(f"adapter does not fit the model (missing {missing[:3]}, "
                           f"unexpected {list(result.unexpected_keys)[:3]})", weights)


def merge_adapter(adapter_dir: Path, out_dir: Path, *, overwrite: bool = False) -> Path:
    """Fold an adapter into its base and save a standalone checkpoint (codenas, or ``hf:`` layout for hf bases).

    ``out_dir`` must be new or empty; ``overwrite`` replaces an earlier merge there (``io.replace_folder``).
    """
    if not (Path(adapter_dir) / ADAPTER_CONFIG).is_file():
        raise CodenasError("not a LoRA adapter folder (no adapter_config.json)", adapter_dir)
    check_new_folder(out_dir, overwrite=overwrite)
    merged = load_model(str(adapter_dir))  # adapters are merged on load
    with replace_folder(out_dir, overwrite=overwrite) as tmp:
        save_model(tmp, merged, step=merged.meta.get("step", 0), metrics=merged.meta.get("metrics", {}))
    return Path(out_dir)
