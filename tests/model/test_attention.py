"""The CPU training path of causal attention with dropout (blocks of queries against the keys they may see)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from codenas.model.config import ArchConfig
from codenas.model.model import GPT, _causal_attention_with_dropout


def _qkv(T: int, requires_grad: bool = True):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, T, 8, generator=g, requires_grad=requires_grad) for _ in range(3)]


def test_without_dropout_it_is_sdpa_causal_values_and_gradients():
    q, k, v = _qkv(45)  # not a multiple of the block
    ours = _causal_attention_with_dropout(q, k, v, 0.0, block=16)
    ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ref_inputs, is_causal=True)
    assert torch.allclose(ours, ref, atol=1e-5)
    ours.square().sum().backward()
    ref.square().sum().backward()
    for a, b in zip((q, k, v), ref_inputs, strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)


def test_dropout_is_unbiased_and_drops_weights():
    q, k, v = _qkv(20, requires_grad=False)
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.manual_seed(1)
    draws = torch.stack([_causal_attention_with_dropout(q, k, v, 0.3, block=8) for _ in range(1000)])
    assert not torch.allclose(draws[0], exact, atol=1e-3)  # weights were dropped
    assert (draws.mean(0) - exact).abs().mean() < 0.03  # E[dropout(w)] = w: dropout rescales by 1 / (1 - p)
    first_query = draws[:, :, :, 0]  # sees only itself: its output is v[0] / (1 - p) or 0
    kept = (first_query - v[:, :, 0] / 0.7).abs().amax(-1) < 1e-4
    assert ((first_query.abs().amax(-1) < 1e-6) | kept).all()
    assert abs((~kept).float().mean().item() - 0.3) < 0.04


def test_gpt_trains_with_attention_dropout_on_cpu():
    torch.manual_seed(0)
    model = GPT(ArchConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, context_length=300, vocab_size=64,
                           dropout=0.2)).train()
    idx = torch.randint(0, 64, (2, 300))
    _, loss = model(idx, idx)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():  # evaluation (no dropout) is unchanged: SDPA
        assert torch.equal(model(idx)[0], model(idx)[0])
