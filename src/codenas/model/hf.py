"""`hf:DIR` models: a local `transformers` causal LM (and its tokenizer) behind GPT's forward signature.

``HFCausalLM`` wraps an ``AutoModelForCausalLM`` so the training loop, the loss masks, PEFT and the sampler see the
same interface as a codenas ``GPT``: ``forward(idx, targets=None) -> (logits, loss)`` with targets already shifted
and ``-100`` ignored. Nothing here downloads: ``DIR`` must be a folder written by ``save_pretrained``.

Default LoRA targets follow the attention projections of common layouts (``HF_LORA_TARGETS``): GPT-2's fused
``attn.c_attn`` and ``attn.c_proj`` (the MLP's ``mlp.c_proj`` is left alone, matching codenas' ``qkv_proj`` and
``out_proj``), and Llama-style ``q_proj``/``k_proj``/``v_proj``/``o_proj``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from codenas.io import CodenasError
from codenas.names import HF_CONFIG

if TYPE_CHECKING:  # transformers is imported where it is used (it is slow to import)
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

HF_PREFIX = "hf:"

# (a module name that identifies the layout, the LoRA targets to use), first match wins
HF_LORA_TARGETS: tuple[tuple[str, list[str]], ...] = (
    ("attn.c_attn", ["attn.c_attn", "attn.c_proj"]),  # GPT-2
    ("q_proj", ["q_proj", "k_proj", "v_proj", "o_proj"]),  # Llama, Mistral, Qwen, ...
)


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


@dataclass(frozen=True)
class HFShape:
    """What the sampler and the batching read from ``model.config`` (GPT's ArchConfig has the same fields)."""

    context_length: int
    vocab_size: int


class HFKVCache:
    """The sampler's cache interface (``pos``, ``select_rows``) over a transformers ``DynamicCache``."""

    def __init__(self) -> None:
        from transformers import DynamicCache

        self.past = DynamicCache()
        self.pos = 0

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) the batch rows at indices ``rows``."""
        self.past.batch_select_indices(rows)


class HFCausalLM(nn.Module):
    """A transformers causal LM with GPT's ``forward(idx, targets=None, *, segment_ids=None)``.

    For the sampler it also takes ``positions`` and an ``attention_mask`` (left-padded batches: the model's own
    cache and mask), and ``last_only`` (logits of the last position only).
    """

    padded_batches = True  # the sampler decodes several prompts at once in left-padded batches

    def __init__(self, hf_model: PreTrainedModel):
        super().__init__()
        self.hf: PreTrainedModel = hf_model
        cfg = hf_model.config
        context = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
        if not context:
            raise CodenasError("the transformers config gives no context length (n_positions or "
                               "max_position_embeddings)")
        self.config = HFShape(context_length=int(context), vocab_size=int(cfg.vocab_size))
        # transformers 5 names the forward's cache argument `cache`; 4.x called it `past_key_values`
        forward_args = inspect.signature(hf_model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self._keeps_logits = "logits_to_keep" in forward_args

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                segment_ids: torch.Tensor | None = None,
                kv_cache: HFKVCache | None = None, positions: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if segment_ids is not None:
            raise CodenasError("hf: models do not support packed segments; use padded batches")
        if kv_cache is not None:
            extra: dict[str, Any] = {} if positions is None else {"position_ids": positions}
            if attention_mask is not None:
                extra["attention_mask"] = attention_mask
            if last_only and self._keeps_logits:
                extra["logits_to_keep"] = 1
            out = self.hf(input_ids=idx, use_cache=True, **{self._cache_arg: kv_cache.past}, **extra)
            kv_cache.past = out.past_key_values
            kv_cache.pos += idx.shape[1]
            return out.logits, None
        logits = self.hf(input_ids=idx, use_cache=False).logits
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        return logits, loss

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> HFKVCache:
        """An empty cache for the sampler (it grows as needed; the sizes are GPT's signature)."""
        return HFKVCache()


def hf_dir(spec: str) -> Path:
    """The folder of an ``hf:DIR`` spec, checked to exist."""
    path = Path(spec[len(HF_PREFIX):]).expanduser().resolve()
    if not (path / HF_CONFIG).is_file():
        raise CodenasError(f"not a transformers model folder (no {HF_CONFIG})", path)
    return path


def load_hf(path: Path) -> tuple[HFCausalLM, PreTrainedTokenizerFast]:
    """Load a local causal LM and its (fast) tokenizer: ``(wrapped model in eval mode, HF tokenizer)``."""
    _quiet_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CodenasError(f"cannot load a transformers causal LM: {e}", path) from None
    if not isinstance(tokenizer, PreTrainedTokenizerFast) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise CodenasError("the tokenizer has no fast (tokenizers) backend; save a tokenizer.json", path)
    if tokenizer.eos_token_id is None:
        raise CodenasError("the tokenizer defines no eos_token (needed to end answers)", path)
    return HFCausalLM(model).eval(), tokenizer


def save_hf(out_dir: Path, model: HFCausalLM, hf_tokenizer: PreTrainedTokenizerFast) -> None:
    """Write the wrapped model and its tokenizer with ``save_pretrained`` (loadable again as ``hf:OUT``)."""
    _quiet_transformers()
    model.hf.save_pretrained(out_dir, safe_serialization=True)
    hf_tokenizer.save_pretrained(out_dir)


def default_hf_targets(model: nn.Module) -> list[str]:
    """LoRA target module names for a wrapped transformers model, by the layout its module names reveal."""
    names = [name for name, _ in model.named_modules()]
    for marker, targets in HF_LORA_TARGETS:
        if any(name.endswith(marker) for name in names):
            return targets
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
    raise CodenasError(f"unknown model layout: pass --lora-targets (linear layers: {', '.join(linear)})")
