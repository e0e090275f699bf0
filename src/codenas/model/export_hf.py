"""Export a codenas checkpoint as a Hugging Face GPT-2 model folder (``AutoModelForCausalLM.from_pretrained``).

Our architecture is GPT-2's, so the export is a renaming: ``qkv_proj`` -> ``attn.c_attn``, ``out_proj`` ->
``attn.c_proj``, ``fc_in``/``fc_out`` -> ``mlp.c_fc``/``mlp.c_proj``, with each linear weight transposed because
GPT-2's ``Conv1D`` stores ``[in, out]``. Models without biases get zero biases (GPT-2 always has them), which
computes the same function. The folder also gets the tokenizer (``tokenizer.json`` + ``tokenizer_config.json``,
``<|endoftext|>`` as bos/eos, ``<|pad|>`` as pad) so ``AutoTokenizer.from_pretrained`` works too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging

from codenas.io import CodenasError, atomic_directory, dumps_json, read_json
from codenas.model.checkpoint import load_checkpoint
from codenas.model.model import GPT, NORM_EPS
from codenas.model.tokenizer import EOT, PAD


def export_hf(checkpoint: Path, out_dir: Path) -> None:
    """Write the checkpoint directory ``checkpoint`` as a transformers GPT-2 model folder ``out_dir`` (atomically)."""
    ckpt = load_checkpoint(checkpoint)
    hf_model = GPT2LMHeadModel(hf_config(ckpt.model, eos_id=ckpt.tokenizer.token_to_id(EOT)))
    hf_model.load_state_dict(hf_state_dict(ckpt.model), strict=True)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=ckpt.tokenizer,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=PAD,
        model_max_length=ckpt.arch.context_length,
    )
    logging.disable_progress_bar()
    with atomic_directory(out_dir) as tmp:
        hf_model.save_pretrained(tmp)
        hf_tokenizer.save_pretrained(tmp)
        _use_portable_tokenizer_class(tmp / "tokenizer_config.json")


def _use_portable_tokenizer_class(config_file: Path) -> None:
    """Name the tokenizer class that transformers 4.x and 5.x both load from a tokenizer.json alone."""
    config = read_json(config_file)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(dumps_json(config), encoding="utf-8")


def hf_config(model: GPT, *, eos_id: int) -> GPT2Config:
    """The ``GPT2Config`` that computes the same function as ``model``."""
    c = model.config
    if not c.is_gpt2_layout:
        field = next(name for name, default in (("position", "learned"), ("norm", "layernorm"), ("mlp", "gelu"),
                                                ("qk_norm", False), ("n_kv_head", c.n_head))
                     if getattr(c, name) != default)
        raise CodenasError(f"arch field {field!r} = {getattr(c, field)!r}: GPT2LMHeadModel cannot express it")
    if eos_id is None:
        raise CodenasError(f"the tokenizer has no {EOT} token")
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


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under GPT-2's names and layouts (float32, CPU)."""
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out = {
        "transformer.wte.weight": ours["wte.weight"],
        "transformer.wpe.weight": ours["wpe.weight"],
        "lm_head.weight": ours["lm_head.weight"],
    }
    out.update(_layer_norm(ours, "ln_f", "transformer.ln_f"))
    for i in range(model.config.n_layer):
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
