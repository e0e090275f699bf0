"""Export a codenas checkpoint as a Hugging Face model folder (``AutoModelForCausalLM.from_pretrained``).

The transformers class is the one that computes exactly our layout (``hf_layout``):

- the GPT-2 layout (learned positions, LayerNorm, GELU, plain multi-head attention) -> ``GPT2LMHeadModel``: a
  renaming, ``qkv_proj`` -> ``attn.c_attn``, ``out_proj`` -> ``attn.c_proj``, ``fc_in``/``fc_out`` ->
  ``mlp.c_fc``/``mlp.c_proj``, each linear weight transposed because GPT-2's ``Conv1D`` stores ``[in, out]``;
  models without biases get zero biases (GPT-2 always has them), which computes the same function;
- rope + rmsnorm + swiglu -> ``LlamaForCausalLM`` (biases, grouped-query attention and tying as configured), or
  ``Qwen3ForCausalLM`` when ``qk_norm`` is on (Qwen3 has no MLP biases, so it needs ``bias: false``): the fused
  ``qkv_proj`` is split into ``q_proj``/``k_proj``/``v_proj`` and ``fc_in`` into ``gate_proj``/``up_proj``.

Any other combination (say rope with LayerNorm) has no transformers class; it is refused with an error naming
the field, never exported approximately. The folder also gets the tokenizer (``tokenizer.json`` +
``tokenizer_config.json``, ``<|endoftext|>`` as bos/eos, ``<|pad|>`` as pad) so ``AutoTokenizer`` works too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging

from codenas.io import CodenasError, check_new_folder, dumps_json, read_json, replace_folder
from codenas.model.checkpoint import load_checkpoint
from codenas.model.config import ArchConfig
from codenas.model.model import GPT, NORM_EPS
from codenas.names import EOT, HF_TOKENIZER_CONFIG, PAD

if TYPE_CHECKING:
    from transformers import Qwen3Config  # transformers >= 4.51, imported where used


def export_hf(checkpoint: Path, out_dir: Path, *, overwrite: bool = False) -> str:
    """Write the checkpoint directory ``checkpoint`` as a transformers model folder ``out_dir`` (atomically).

    Returns the transformers class written (``GPT2LMHeadModel``, ``LlamaForCausalLM`` or ``Qwen3ForCausalLM``).
    ``out_dir`` must be new or empty; ``overwrite`` replaces an earlier export there (``io.replace_folder``).
    """
    check_new_folder(out_dir, overwrite=overwrite)
    ckpt = load_checkpoint(checkpoint)
    hf_model = hf_model_for(ckpt.model, eos_id=ckpt.tokenizer.token_to_id(EOT))
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=ckpt.tokenizer,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=PAD,
        model_max_length=ckpt.arch.context_length,
    )
    logging.disable_progress_bar()
    with replace_folder(out_dir, overwrite=overwrite) as tmp:
        hf_model.save_pretrained(tmp)
        hf_tokenizer.save_pretrained(tmp)
        _use_portable_tokenizer_class(tmp / HF_TOKENIZER_CONFIG)
    return type(hf_model).__name__


def _use_portable_tokenizer_class(config_file: Path) -> None:
    """Name the tokenizer class that transformers 4.x and 5.x both load from a tokenizer.json alone."""
    config = read_json(config_file)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(dumps_json(config), encoding="utf-8")


# the arch fields the families below express; a field added to ArchConfig later is refused when it is not at its
# default, until it is mapped here (an export must compute exactly what the model computes)
EXPRESSED = ("n_layer", "n_head", "d_model", "d_ff", "context_length", "vocab_size", "dropout", "bias",
             "tie_embeddings", "position", "rope_theta", "norm", "mlp", "qk_norm", "n_kv_head", "name")


def hf_layout(c: ArchConfig) -> str:
    """``gpt2``, ``llama`` or ``qwen3``: the transformers family that computes ``c`` exactly.

    Raises ``CodenasError`` naming the first field that no transformers class can express with the others.
    """
    for f in dataclasses.fields(c):
        if f.name not in EXPRESSED and getattr(c, f.name) != f.default:
            raise CodenasError(f"cannot export: arch field {f.name!r} = {getattr(c, f.name)!r} has no transformers "
                               "class (the exporter does not map it)")
    if c.position == "learned":
        for name, gpt2_value in (("norm", "layernorm"), ("mlp", "gelu"), ("qk_norm", False),
                                 ("n_kv_head", c.n_head)):
            if getattr(c, name) != gpt2_value:
                raise CodenasError(f"cannot export: arch field {name!r} = {getattr(c, name)!r} with learned "
                                   f"positions has no transformers class (GPT2LMHeadModel needs {name} = "
                                   f"{gpt2_value!r}; Llama/Qwen3 need position 'rope')")
        return "gpt2"
    for name, needed in (("norm", "rmsnorm"), ("mlp", "swiglu")):
        if getattr(c, name) != needed:
            raise CodenasError(f"cannot export: arch field {name!r} = {getattr(c, name)!r} with rotary positions "
                               f"has no transformers class (LlamaForCausalLM/Qwen3ForCausalLM need {name} = "
                               f"{needed!r})")
    if not c.qk_norm:
        return "llama"
    if c.bias:
        raise CodenasError("cannot export: arch field 'bias' = True with qk_norm has no transformers class "
                           "(Qwen3ForCausalLM has no MLP biases; Llama has no qk_norm)")
    return "qwen3"


def hf_model_for(model: GPT, *, eos_id: int | None) -> PreTrainedModel:
    """The transformers model (in eval mode, float32) computing the same function as ``model``."""
    config = hf_config(model, eos_id=eos_id)  # its class follows hf_layout(model.config)
    hf_model: PreTrainedModel
    if isinstance(config, GPT2Config):
        hf_model = GPT2LMHeadModel(config)
    elif isinstance(config, LlamaConfig):
        hf_model = LlamaForCausalLM(config)
    else:
        from transformers import Qwen3ForCausalLM  # transformers >= 4.51

        hf_model = Qwen3ForCausalLM(config)
    hf_model.load_state_dict(hf_state_dict(model), strict=True)
    return hf_model.eval()


def hf_config(model: GPT, *, eos_id: int | None) -> GPT2Config | LlamaConfig | Qwen3Config:
    """The transformers config (GPT-2, Llama or Qwen3) that computes the same function as ``model``."""
    c = model.config
    layout = hf_layout(c)
    if eos_id is None:
        raise CodenasError(f"the tokenizer has no {EOT} token")
    if layout == "gpt2":
        return GPT2Config(
            vocab_size=c.vocab_size,
            n_positions=c.context_length,
            n_embd=c.d_model,
            n_layer=c.n_layer,
            n_head=c.n_head,
            n_inner=c.d_ff,
            activation_function="gelu_new",  # the tanh approximation used in model.MLP
            resid_pdrop=c.dropout,
            embd_pdrop=c.dropout,
            attn_pdrop=c.dropout,
            layer_norm_epsilon=NORM_EPS,
            tie_word_embeddings=c.tie_embeddings,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
        )
    common: dict[str, Any] = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        intermediate_size=c.d_ff,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        num_key_value_heads=c.n_kv_head,
        head_dim=c.head_dim,
        hidden_act="silu",
        max_position_embeddings=c.context_length,
        rms_norm_eps=NORM_EPS,
        rope_theta=c.rope_theta,  # transformers 5 files it under rope_parameters
        tie_word_embeddings=c.tie_embeddings,
        attention_bias=c.bias,
        attention_dropout=c.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    if layout == "llama":
        return LlamaConfig(**common, mlp_bias=c.bias)
    try:
        from transformers import Qwen3Config
    except ImportError:
        raise CodenasError("exporting qk_norm models needs transformers >= 4.51 (Qwen3)") from None
    return Qwen3Config(**common, use_sliding_window=False)


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under the names and layouts of ``hf_layout``'s class (float32, CPU)."""
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if hf_layout(model.config) == "gpt2":
        return _gpt2_state_dict(ours, model.config)
    return _llama_state_dict(ours, model.config)


def _gpt2_state_dict(ours: dict[str, torch.Tensor], c: ArchConfig) -> dict[str, torch.Tensor]:
    out = {
        "transformer.wte.weight": ours["wte.weight"],
        "transformer.wpe.weight": ours["wpe.weight"],
        "lm_head.weight": ours["lm_head.weight"],
    }
    out.update(_layer_norm(ours, "ln_f", "transformer.ln_f"))
    for i in range(c.n_layer):
        src, dst = f"blocks.{i}", f"transformer.h.{i}"
        out.update(_layer_norm(ours, f"{src}.ln_1", f"{dst}.ln_1"))
        out.update(_layer_norm(ours, f"{src}.ln_2", f"{dst}.ln_2"))
        out.update(_linear_as_conv1d(ours, f"{src}.attn.qkv_proj", f"{dst}.attn.c_attn"))
        out.update(_linear_as_conv1d(ours, f"{src}.attn.out_proj", f"{dst}.attn.c_proj"))
        out.update(_linear_as_conv1d(ours, f"{src}.mlp.fc_in", f"{dst}.mlp.c_fc"))
        out.update(_linear_as_conv1d(ours, f"{src}.mlp.fc_out", f"{dst}.mlp.c_proj"))
    return out


def _layer_norm(ours: dict[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    weight = ours[f"{src}.weight"]
    return {f"{dst}.weight": weight, f"{dst}.bias": ours.get(f"{src}.bias", torch.zeros_like(weight))}


def _linear_as_conv1d(ours: dict[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    weight = ours[f"{src}.weight"]  # nn.Linear: [out, in]; GPT-2 Conv1D: [in, out]
    bias = ours.get(f"{src}.bias", torch.zeros(weight.shape[0]))
    return {f"{dst}.weight": weight.t().contiguous(), f"{dst}.bias": bias}


def _llama_state_dict(ours: dict[str, torch.Tensor], c: ArchConfig) -> dict[str, torch.Tensor]:
    """Llama/Qwen3 names; the fused projections split along their output rows (weights and biases alike)."""
    out = {
        "model.embed_tokens.weight": ours["wte.weight"],
        "model.norm.weight": ours["ln_f.weight"],
        "lm_head.weight": ours["lm_head.weight"],
    }
    q, kv = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
    for i in range(c.n_layer):
        src, dst = f"blocks.{i}", f"model.layers.{i}"
        out[f"{dst}.input_layernorm.weight"] = ours[f"{src}.ln_1.weight"]
        out[f"{dst}.post_attention_layernorm.weight"] = ours[f"{src}.ln_2.weight"]
        out.update(_split(ours, f"{src}.attn.qkv_proj", [(f"{dst}.self_attn.q_proj", q),
                                                         (f"{dst}.self_attn.k_proj", kv),
                                                         (f"{dst}.self_attn.v_proj", kv)]))
        out.update(_split(ours, f"{src}.attn.out_proj", [(f"{dst}.self_attn.o_proj", c.d_model)]))
        if c.qk_norm:
            out[f"{dst}.self_attn.q_norm.weight"] = ours[f"{src}.attn.q_norm.weight"]
            out[f"{dst}.self_attn.k_norm.weight"] = ours[f"{src}.attn.k_norm.weight"]
        out.update(_split(ours, f"{src}.mlp.fc_in", [(f"{dst}.mlp.gate_proj", c.d_ff), (f"{dst}.mlp.up_proj", c.d_ff)]))
        out.update(_split(ours, f"{src}.mlp.fc_out", [(f"{dst}.mlp.down_proj", c.d_model)]))
    return out


def _split(ours: dict[str, torch.Tensor], src: str, parts: list[tuple[str, int]]) -> dict[str, torch.Tensor]:
    """The linear ``src`` cut by output rows into ``(name, rows)`` pieces, each with its slice of the bias."""
    out, start = {}, 0
    for dst, rows in parts:
        out[f"{dst}.weight"] = ours[f"{src}.weight"][start : start + rows].contiguous()
        if f"{src}.bias" in ours:
            out[f"{dst}.bias"] = ours[f"{src}.bias"][start : start + rows].contiguous()
        start += rows
    return out
