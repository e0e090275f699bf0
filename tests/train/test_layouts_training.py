"""Training over the layout grid: exact resume (AdamW and Muon), Muon's parameter split, LoRA's count and merge."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from codenas.io import CodenasError
from codenas.model.checkpoint import load_trainer_state
from codenas.model.model import GPT, parameter_counts
from codenas.settings import TrainSettings
from codenas.train.loop import LAST, make_optimizer
from codenas.train.lora import LoraSettings, apply_lora
from codenas.train.pretrain import pretrain
from tests.model.test_layouts import LAYOUTS


def _config(**overrides) -> TrainSettings:
    settings = dict(max_steps=6, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_interval=3,
                    eval_batches=1, log_interval=1, dtype="fp32", device="cpu", seed=7)
    return TrainSettings(**{**settings, **overrides})


@pytest.mark.parametrize("layout", ["modern", "rope_gqa"])
def test_resume_continues_exactly(layout, small_corpus, small_tokenizer, micro_arch, tmp_path):
    arch = dataclasses.replace(micro_arch, **LAYOUTS[layout])
    kwargs = dict(arch=arch, tokenizer=small_tokenizer, corpus=small_corpus)
    pretrain(out=tmp_path / "one_go", training=_config(max_steps=6), **kwargs)
    pretrain(out=tmp_path / "split", training=_config(max_steps=3), **kwargs)
    pretrain(out=tmp_path / "split", training=_config(max_steps=6), resume=True, **kwargs)
    one_go = load_file(tmp_path / "one_go" / LAST / "model.safetensors")
    split = load_file(tmp_path / "split" / LAST / "model.safetensors")
    assert one_go.keys() == split.keys()
    assert all(torch.equal(one_go[k], split[k]) for k in one_go)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_lora_count_follows_the_fused_projection_and_merge_keeps_logits(layout, micro_arch):
    arch = dataclasses.replace(micro_arch, n_head=4, **LAYOUTS[layout])
    torch.manual_seed(0)
    model = apply_lora(GPT(arch), LoraSettings(rank=4, alpha=8, dropout=0.0))
    trainable, _ = parameter_counts(model)
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


@pytest.mark.parametrize("layout", ["gpt2", "modern"])
def test_muon_resume_continues_exactly(layout, small_corpus, small_tokenizer, micro_arch, tmp_path):
    arch = dataclasses.replace(micro_arch, **LAYOUTS[layout])
    kwargs = dict(arch=arch, tokenizer=small_tokenizer, corpus=small_corpus)
    muon = dict(optimizer="muon", muon_lr=0.03)
    one = pretrain(out=tmp_path / "one_go", training=_config(max_steps=6, **muon), **kwargs)
    pretrain(out=tmp_path / "split", training=_config(max_steps=3, **muon), **kwargs)
    pretrain(out=tmp_path / "split", training=_config(max_steps=6, **muon), resume=True, **kwargs)
    one_go = load_file(tmp_path / "one_go" / LAST / "model.safetensors")
    split = load_file(tmp_path / "split" / LAST / "model.safetensors")
    assert all(torch.equal(one_go[k], split[k]) for k in one_go)
    state = load_trainer_state(tmp_path / "split" / LAST)["optimizer"]
    assert set(state) == {"muon", "adamw"} and state["muon"]["state"] and state["adamw"]["state"]
    adamw = pretrain(out=tmp_path / "adamw", training=_config(max_steps=6), **kwargs)
    assert one["final_val_loss"] != adamw["final_val_loss"]  # the optimizer choice reached the loop
    with pytest.raises(CodenasError, match="trained with optimizer muon"):
        pretrain(out=tmp_path / "split", training=_config(max_steps=8), resume=True, **kwargs)


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest(micro_arch):
    model = GPT(dataclasses.replace(micro_arch, **LAYOUTS["modern"]))
    opt = make_optimizer(model, _config(optimizer="muon", muon_lr=0.05, lr=1e-3), torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in opt.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.adamw.param_groups for p in g["params"]}
    assert muon == {n for n, p in model.named_parameters() if p.dim() == 2 and ".blocks." in f".{n}"}
    assert {n.split(".")[-2] for n in muon} == {"qkv_proj", "out_proj", "fc_in", "fc_out"}
    assert adamw == set(names.values()) - muon and {"wte.weight", "lm_head.weight", "ln_f.weight"} <= adamw
    assert isinstance(opt.muon, torch.optim.Muon) and isinstance(opt.adamw, torch.optim.AdamW)
    # the schedule scales every group by its own peak
    assert [g["lr_scale"] for g in opt.param_groups] == [50.0, 1.0, 1.0]
    plain = make_optimizer(model, _config(), torch.device("cpu"))
    assert isinstance(plain, torch.optim.AdamW)
