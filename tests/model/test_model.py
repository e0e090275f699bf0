"""The transformer: shapes, loss with ignored targets, packed segments, parameter and FLOP accounting (from the
built model and from the arch alone), layer names."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from codenas.model.config import ArchConfig, load_arch
from codenas.model.model import GPT, count_params, describe, flops_per_token


def test_logits_shape_and_loss(model):
    idx = torch.randint(0, model.config.vocab_size, (2, 10))
    logits, loss = model(idx)
    assert logits.shape == (2, 10, model.config.vocab_size) and loss is None
    targets = idx.clone()
    targets[:, :4] = -100
    _, loss = model(idx, targets)
    expected = F.cross_entropy(logits[:, 4:].reshape(-1, logits.size(-1)), idx[:, 4:].reshape(-1))
    assert torch.allclose(loss, expected)


def test_segments_are_computed_as_if_alone(model):
    vocab = model.config.vocab_size
    a, b = torch.randint(0, vocab, (1, 12)), torch.randint(0, vocab, (1, 20))
    packed = torch.cat([a, b], dim=1)
    segments = torch.tensor([[7] * 12 + [3] * 20])
    logits, _ = model(packed, segment_ids=segments)
    assert torch.allclose(logits[:, :12], model(a)[0], atol=1e-5)
    assert torch.allclose(logits[:, 12:], model(b)[0], atol=1e-5)
    one_segment, _ = model(packed, segment_ids=torch.zeros_like(packed))
    assert torch.allclose(one_segment, model(packed)[0], atol=1e-5)  # one segment = plain causal


def test_causal(model):
    idx = torch.randint(0, model.config.vocab_size, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (changed[0, 10] + 1) % model.config.vocab_size
    before, after = model(idx)[0], model(changed)[0]
    assert torch.allclose(before[:, :10], after[:, :10])
    assert not torch.allclose(before[:, 10:], after[:, 10:])


def test_too_long_input_rejected(model):
    idx = torch.zeros(1, model.config.context_length + 1, dtype=torch.long)
    try:
        model(idx)
    except ValueError as e:
        assert "context_length" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_lora_target_names_and_tying(model):
    names = {n for n, _ in model.named_modules()}
    for i in range(model.config.n_layer):
        assert f"blocks.{i}.attn.qkv_proj" in names and f"blocks.{i}.attn.out_proj" in names
    assert model.blocks[0].attn.qkv_proj.out_features == 3 * model.config.d_model
    assert model.lm_head.weight is model.wte.weight


def test_num_params():
    cfg = load_arch("codenas_l8h512_regularized")
    model = GPT(cfg)
    d, f, L, V, T = cfg.d_model, cfg.d_ff, cfg.n_layer, cfg.vocab_size, cfg.context_length
    per_block = (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    non_embedding = L * per_block + 2 * d
    assert model.num_params(non_embedding=True) == non_embedding
    assert model.num_params() == non_embedding + V * d + T * d  # tied head counted once
    untied = GPT(ArchConfig(**{**cfg.to_dict(), "tie_embeddings": False}))
    assert untied.num_params() == model.num_params() + V * d
    assert "29.68M parameters" in describe(model) and "codenas_l8h512_regularized" in describe(model)


@pytest.mark.parametrize(("position", "norm", "mlp", "qk_norm", "n_kv_head", "bias", "tie"),
                         list(itertools.product(("learned", "rope"), ("layernorm", "rmsnorm"), ("gelu", "swiglu"),
                                                (False, True), (4, 2, 1), (True, False), (True, False))))
def test_the_arch_alone_counts_what_the_built_model_holds(position, norm, mlp, qk_norm, n_kv_head, bias, tie):
    arch = ArchConfig(n_layer=2, n_head=4, d_model=32, d_ff=48, context_length=16, vocab_size=100, position=position,
                      norm=norm, mlp=mlp, qk_norm=qk_norm, n_kv_head=n_kv_head, bias=bias, tie_embeddings=tie)
    with torch.device("meta"):
        model = GPT(arch)
    held = sum(p.numel() for p in model.parameters())  # a tied head is one parameter
    assert count_params(arch) == held == model.num_params()
    non_embedding = sum(p.numel() for name, p in model.named_parameters()
                        if not name.startswith(("wte.", "wpe.", "lm_head.")))
    assert count_params(arch, non_embedding=True) == non_embedding == model.num_params(non_embedding=True)
    assert flops_per_token(arch) == model.flops_per_token() == 2 * (non_embedding + 32 * 100) + 2 * 2 * 16 * 32


def test_no_bias():
    model = GPT(ArchConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, context_length=8, vocab_size=50, bias=False))
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
