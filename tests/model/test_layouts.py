"""Every layout option over a small grid: cached decoding, packing, per-row positions, checkpoints, GQA, validation."""

from __future__ import annotations

import pytest
import torch

from codenas.io import CodenasError
from codenas.model.checkpoint import load_checkpoint, save_checkpoint
from codenas.model.config import ArchConfig, load_arch
from codenas.model.model import GPT, describe
from codenas.model.sampling import generate

# a small grid that visits every value of every layout field at least once
LAYOUTS = {
    "gpt2": {},
    "modern": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True, "bias": False,
               "tie_embeddings": False},
    "rope_gqa": {"position": "rope", "rope_theta": 500.0, "n_kv_head": 2},
    "learned_swiglu_mqa": {"norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True, "n_kv_head": 1},
}


@pytest.fixture(params=sorted(LAYOUTS))
def layout_model(request, arch) -> GPT:
    torch.manual_seed(0)
    return GPT(ArchConfig(**{**arch.to_dict(), **LAYOUTS[request.param]})).eval()


def test_cached_forward_matches_full_forward(layout_model):
    idx = torch.randint(0, layout_model.config.vocab_size, (3, 40))
    full, _ = layout_model(idx)
    cache = layout_model.new_kv_cache(3)
    pieces = [layout_model(idx[:, a:b], kv_cache=cache)[0] for a, b in [(0, 17), (17, 18), (18, 40)]]
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)
    # grouped-query attention caches only the key/value heads
    assert cache.k.shape[2] == layout_model.config.n_kv_head


def test_greedy_sampling_same_with_and_without_cache(layout_model, tokenizer):
    prompts = ["def add(a, b):\n", "class Stack:\n"]
    cached = generate(layout_model, tokenizer, prompts, n=2, max_new_tokens=20, temperature=0)
    assert cached == generate(layout_model, tokenizer, prompts, n=2, max_new_tokens=20, temperature=0,
                              use_cache=False)


def test_packed_segments_are_computed_as_if_alone(layout_model):
    vocab = layout_model.config.vocab_size
    a, b = torch.randint(0, vocab, (1, 12)), torch.randint(0, vocab, (1, 20))
    logits, _ = layout_model(torch.cat([a, b], dim=1), segment_ids=torch.tensor([[7] * 12 + [3] * 20]))
    assert torch.allclose(logits[:, :12], layout_model(a)[0], atol=1e-5)
    assert torch.allclose(logits[:, 12:], layout_model(b)[0], atol=1e-5)


def test_per_row_positions(layout_model):
    idx = torch.randint(0, layout_model.config.vocab_size, (2, 10))
    positions = torch.stack([torch.arange(10), torch.arange(7, 17)])
    both, _ = layout_model(idx, positions=positions)
    for row in range(2):
        alone, _ = layout_model(idx[row : row + 1], positions=positions[row : row + 1])
        assert torch.allclose(both[row], alone[0], atol=1e-5)
    assert torch.allclose(both[0], layout_model(idx[:1])[0][0], atol=1e-5)  # the default positions
    shifted_same_as_start = torch.allclose(both[1], layout_model(idx[1:])[0][0], atol=1e-4)
    # rotary attention depends only on relative positions; learned position embeddings are absolute
    assert shifted_same_as_start == (layout_model.config.position == "rope")


def test_cache_with_per_row_positions(layout_model):
    idx = torch.randint(0, layout_model.config.vocab_size, (2, 12))
    full, _ = layout_model(idx)
    cache = layout_model.new_kv_cache(2)
    layout_model(idx[:, :5], kv_cache=cache)
    rest, _ = layout_model(idx[:, 5:], kv_cache=cache, positions=torch.arange(5, 12).expand(2, 7))
    assert torch.allclose(rest, full[:, 5:], atol=1e-5)


def test_checkpoint_roundtrip(tmp_path, layout_model, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", layout_model, tokenizer_path=tokenizer_path, step=3)
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.arch == layout_model.config
    idx = torch.randint(0, layout_model.config.vocab_size, (2, 16))
    assert torch.equal(ckpt.model(idx)[0], layout_model(idx)[0])


def test_layout_modules(layout_model):
    c = layout_model.config
    attn = layout_model.blocks[0].attn
    assert attn.qkv_proj.out_features == (c.n_head + 2 * c.n_kv_head) * c.head_dim
    assert attn.out_proj.in_features == c.d_model
    assert hasattr(layout_model, "wpe") == (c.position == "learned")
    assert hasattr(attn, "q_norm") == c.qk_norm
    norm_type = torch.nn.RMSNorm if c.norm == "rmsnorm" else torch.nn.LayerNorm
    assert isinstance(layout_model.ln_f, norm_type) and isinstance(layout_model.blocks[1].ln_2, norm_type)
    assert layout_model.blocks[0].mlp.fc_in.out_features == (2 if c.mlp == "swiglu" else 1) * c.d_ff
    assert (layout_model.lm_head.weight is layout_model.wte.weight) == c.tie_embeddings
    assert not any(name.endswith("bias") for name, _ in layout_model.named_parameters()) or c.bias


def test_modern_config_and_its_size():
    modern, gpt2 = load_arch("codenas_l8h512_modern"), load_arch("codenas_l8h512_regularized")
    assert (modern.n_layer, modern.d_model, modern.n_head) == (gpt2.n_layer, gpt2.d_model, gpt2.n_head)
    assert (modern.position, modern.norm, modern.mlp, modern.qk_norm, modern.bias) == (
        "rope", "rmsnorm", "swiglu", True, False)
    m, g = GPT(modern), GPT(gpt2)
    # about the same non-embedding size: the SwiGLU width makes up for its third matrix
    assert abs(m.num_params(non_embedding=True) / g.num_params(non_embedding=True) - 1) < 0.03
    assert "rope, rmsnorm, swiglu, qk_norm" in describe(m)


def test_defaults_are_the_gpt2_layout(arch):
    old = {k: v for k, v in arch.to_dict().items()
           if k not in ("position", "rope_theta", "norm", "mlp", "qk_norm", "n_kv_head")}
    cfg = ArchConfig.from_dict(old)
    assert cfg == arch and cfg.is_gpt2_layout and cfg.n_kv_head == cfg.n_head
    assert ArchConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("change", "message"), [
    ({"position": "alibi"}, "'position' must be one of learned, rope"),
    ({"norm": "batchnorm"}, "'norm' must be one of layernorm, rmsnorm"),
    ({"mlp": "relu2"}, "'mlp' must be one of gelu, swiglu"),
    ({"qk_norm": 1}, "'qk_norm' must be true or false"),
    ({"n_kv_head": 3}, "'n_kv_head' \\(3\\) must divide 'n_head' \\(4\\)"),
    ({"n_kv_head": 0}, "'n_kv_head' must be a positive integer"),
    ({"rope_theta": -1}, "'rope_theta' must be a positive number"),
    ({"position": "rope", "d_model": 36}, "rope needs an even head size"),
])
def test_bad_layout_fields_named(arch, change, message, tmp_path):
    with pytest.raises(CodenasError, match=message):
        ArchConfig.from_dict({**arch.to_dict(), **change}, tmp_path / "arch.json")
