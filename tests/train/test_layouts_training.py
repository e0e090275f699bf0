"""Training over the layout grid: exact resume of pretraining, LoRA's trainable count and merge equality."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from codenas.model.model import GPT
from codenas.train.loop import LAST, TrainConfig
from codenas.train.lora import LoraSettings, apply_lora, count_parameters
from codenas.train.pretrain import pretrain
from tests.model.test_layouts import LAYOUTS


def _config(**overrides) -> TrainConfig:
    settings = dict(max_steps=6, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_interval=3,
                    eval_batches=1, log_interval=1, dtype="fp32", device="cpu", seed=7, desc="test")
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.parametrize("layout", ["modern", "rope_gqa"])
def test_resume_continues_exactly(layout, small_corpus, small_tokenizer, micro_arch, tmp_path):
    arch = dataclasses.replace(micro_arch, **LAYOUTS[layout])
    kwargs = dict(arch=arch, tokenizer=small_tokenizer, corpus=small_corpus)
    pretrain(out=tmp_path / "one_go", config=_config(max_steps=6), **kwargs)
    pretrain(out=tmp_path / "split", config=_config(max_steps=3), **kwargs)
    pretrain(out=tmp_path / "split", config=_config(max_steps=6, resume=True), **kwargs)
    one_go = load_file(tmp_path / "one_go" / LAST / "model.safetensors")
    split = load_file(tmp_path / "split" / LAST / "model.safetensors")
    assert one_go.keys() == split.keys()
    assert all(torch.equal(one_go[k], split[k]) for k in one_go)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_lora_count_follows_the_fused_projection_and_merge_keeps_logits(layout, micro_arch):
    arch = dataclasses.replace(micro_arch, n_head=4, **LAYOUTS[layout])
    torch.manual_seed(0)
    model = apply_lora(GPT(arch), LoraSettings(rank=4, alpha=8, dropout=0.0))
    trainable, _ = count_parameters(model)
    d, hd, rank = arch.d_model, arch.head_dim, 4
    qkv_out = (arch.n_head + 2 * arch.n_kv_head) * hd
    assert trainable == arch.n_layer * (rank * (d + qkv_out) + rank * (d + d))
    model.eval()
    ids = torch.randint(0, arch.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base_only, _ = model(ids)  # fresh adapters (B = 0) compute the base
        for name, p in model.named_parameters():  # make them non-zero so merging has something to fold in
            if "lora_B" in name:
                p.normal_(0, 0.05)
        expected, _ = model(ids)
        got, _ = model.merge_and_unload()(ids)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, base_only, atol=1e-3)
