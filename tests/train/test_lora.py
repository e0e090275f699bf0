"""LoRA: trainable-count formula, frozen base, merge equality, exact resume, hf: bases, eval of adapters."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from codenas.cli import cli
from codenas.io import CodenasError, read_jsonl
from codenas.model.config import ArchConfig, load_arch
from codenas.model.loading import load_model
from codenas.model.model import GPT, count_params, parameter_counts
from codenas.model.tokenizer import load_tokenizer
from codenas.settings import FINETUNE_TRAIN, SamplingSettings
from codenas.train import sft
from codenas.train.lora import LoraSettings, apply_lora, merge_adapter, restore_adapter
from codenas.train.sft import finetune
from tests.train.finetune_fixtures import make_base, make_records


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lora")
    make_base(folder, dropout=0.1)
    make_records(folder)
    return folder


def _lora_run(workdir: Path, out: Path, *, base: str | None = None, max_steps: int = 4, resume: bool = False,
              samples: int = 0, lora: LoraSettings = LoraSettings(dropout=0.1)) -> dict:
    cfg = dataclasses.replace(FINETUNE_TRAIN, max_steps=max_steps, eval_interval=2, batch_size=2, lr=1e-2,
                              min_lr=1e-3, dtype="fp32", device="cpu")
    return finetune(init_checkpoint=base or str(workdir / "base"), data_path=workdir / "train.jsonl", out=out,
                    training=cfg, lora=lora, sampling=SamplingSettings(samples=samples, max_new_tokens=8),
                    resume=resume)


@pytest.mark.parametrize("arch", [
    ArchConfig(n_layer=2, n_head=4, d_model=32, d_ff=64, context_length=16, vocab_size=100),
    ArchConfig(n_layer=3, n_head=4, n_kv_head=2, d_model=32, d_ff=48, context_length=16, vocab_size=100,
               position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=False, tie_embeddings=False),
    ArchConfig(n_layer=1, n_head=4, n_kv_head=1, d_model=64, d_ff=64, context_length=8, vocab_size=50),
], ids=["gpt2", "modern-gqa-untied", "multi-query"])
def test_lora_counts_follow_the_arch(arch):
    """The wrapped model's trainable count is the adapters' (rank x (in + out) per target), its total the base's
    count from the arch alone plus the adapters."""
    rank = 4
    model = apply_lora(GPT(arch), LoraSettings(rank=rank))
    trainable, total = parameter_counts(model)
    qkv_out = (arch.n_head + 2 * arch.n_kv_head) * arch.head_dim
    assert trainable == arch.n_layer * rank * ((arch.d_model + qkv_out) + (arch.d_model + arch.d_model))
    assert total == trainable + count_params(arch)


def test_trainable_parameters_follow_the_formula_for_l8h512():
    model = apply_lora(GPT(load_arch("codenas_l8h512_regularized")), LoraSettings())
    trainable, total = parameter_counts(model)
    rank, d, layers = 8, 512, 8
    assert trainable == layers * (rank * (d + 3 * d) + rank * (d + d)) == 196_608
    assert total == trainable + GPT(load_arch("codenas_l8h512_regularized")).num_params()
    assert all("lora_" in name for name, p in model.named_parameters() if p.requires_grad)


def test_base_is_frozen_and_merge_keeps_the_logits(workdir):
    out = workdir / "run"
    result = _lora_run(workdir, out)
    assert result["trainable_params"] == 2 * (8 * (32 + 96) + 8 * (32 + 32))
    base = load_model(str(workdir / "base"))
    model = apply_lora(base.model, LoraSettings(dropout=0.1))
    restore_adapter(model, out / "step4")
    original = load_model(str(workdir / "base")).model.state_dict()
    trained = model.get_base_model().state_dict()
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # the adapters learned something
    for name, value in original.items():  # every base weight is untouched
        key = name.replace("qkv_proj.", "qkv_proj.base_layer.").replace("out_proj.", "out_proj.base_layer.")
        assert torch.equal(trained[key], value), name

    merged_dir = merge_adapter(out / "step4", workdir / "merged")
    merged = load_model(str(merged_dir)).model
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        expected, _ = model(ids)
        got, _ = merged(ids)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert (workdir / "merged" / "model.safetensors").is_file()

    with pytest.raises(CodenasError, match="not empty .*--overwrite"):  # an earlier merge: only with --overwrite
        merge_adapter(out / "step4", workdir / "merged")
    merge_adapter(out / "step4", workdir / "merged", overwrite=True)
    (workdir / "merged" / "notes.txt").write_text("mine")
    with pytest.raises(CodenasError, match="notes.txt"):
        merge_adapter(out / "step4", workdir / "merged", overwrite=True)
    assert (workdir / "merged" / "notes.txt").read_text() == "mine"
    assert (workdir / "merged" / "model.safetensors").is_file()


def test_resumed_lora_run_ends_with_the_same_adapter(workdir, tmp_path, monkeypatch):
    _lora_run(workdir, tmp_path / "straight")
    real = sft.Evaluator.__call__

    def interrupted(self, model, step):
        if step == 4:
            raise KeyboardInterrupt
        return real(self, model, step)

    with monkeypatch.context() as m:
        m.setattr(sft.Evaluator, "__call__", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _lora_run(workdir, tmp_path / "resumed")
    _lora_run(workdir, tmp_path / "resumed", resume=True)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "checkpoint_last" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoint_last" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) == 8
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resuming_on_another_base_is_refused(workdir, tmp_path):
    _lora_run(workdir, tmp_path / "run", max_steps=2)
    make_base(tmp_path, seed=1)
    with pytest.raises(CodenasError, match="another base"):
        _lora_run(workdir, tmp_path / "run", base=str(tmp_path / "base"), max_steps=4, resume=True)


def test_lora_targets_can_be_overridden(workdir):
    model = apply_lora(load_model(str(workdir / "base")).model, LoraSettings(targets=("fc_in",)))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("fc_in" in n for n in names)


def _tiny_hf_model(folder: Path, tokenizer_json: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), eos_token="<|endoftext|>",
                                  pad_token="<|pad|>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=load_tokenizer(tokenizer_json).get_vocab_size(), n_positions=96, n_embd=32,
                        n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    out = folder / "hf_tiny"
    GPT2LMHeadModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_hf_base_lora_eval_and_merge(workdir):
    hf = _tiny_hf_model(workdir, workdir / "tokenizer.json")
    out = workdir / "hf_run"
    result = _lora_run(workdir, out, base=f"hf:{hf}", max_steps=2, samples=1)
    # GPT-2 layout: attention c_attn (fused qkv, 32 -> 96) and attention c_proj (32 -> 32), not the MLP's c_proj
    assert result["trainable_params"] == 2 * (8 * (32 + 96) + 8 * (32 + 32))
    pointer = json.loads((out / "step2" / "codenas.json").read_text())
    assert pointer["kind"] == "lora" and pointer["base"] == f"hf:{hf.resolve()}"
    rows = [r for _, r in read_jsonl(out / "metrics.jsonl") if "val_pass@1" in r]
    assert [r["step"] for r in rows] == [2]

    merged = merge_adapter(out / "step2", workdir / "hf_merged")
    adapter_model = load_model(str(out / "step2")).model
    reloaded = load_model(f"hf:{merged}").model
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(reloaded(ids)[0], adapter_model(ids)[0], atol=1e-5, rtol=0)

    result = CliRunner().invoke(cli, ["-q", "eval", "model", "--checkpoint", str(out / "step2"), "--checkpoint",
                                      f"hf:{hf}", "--problems", str(workdir / "val.jsonl"), "--samples", "2",
                                      "--max-new-tokens", "8", "--out", str(workdir / "hf_eval")])
    assert result.exit_code == 0, result.output
    table = json.loads((workdir / "hf_eval" / "checkpoints.json").read_text())
    assert [r["name"] for r in table] == ["step2", "hf_tiny"] and table[0]["step"] == 2
    assert (workdir / "hf_eval" / "pass_at_1.png").read_bytes()[:4] == b"\x89PNG"
    samples = [r for _, r in read_jsonl(workdir / "hf_eval" / "step2" / "samples.jsonl")]
    assert len(samples) == 4 and {s["task_id"] for s in samples} == {"t_add", "t_square"}


def test_hf_sampling_with_the_cache_matches_without(tmp_path):
    from codenas.model.sampling import generate
    from tests.train.finetune_fixtures import make_tokenizer

    hf = _tiny_hf_model(tmp_path, make_tokenizer(tmp_path))
    loaded = load_model(f"hf:{hf}")
    for temperature in (0.0, 0.8):
        runs = [generate(loaded.model, loaded.tokenizer, ["def add(a, b):\n", "x = 1"], n=3, max_new_tokens=10,
                         temperature=temperature, seed=1, use_cache=cache, eot_id=loaded.eot_id)
                for cache in (True, False)]
        assert runs[0] == runs[1]


def test_hf_padded_batches_match_the_exported_gpt(tmp_path):
    """An exported codenas GPT loaded as hf: samples the same text in left-padded batches as the GPT itself."""
    from codenas.model.checkpoint import save_checkpoint
    from codenas.model.config import ArchConfig
    from codenas.model.export_hf import export_hf
    from codenas.model.model import GPT
    from codenas.model.sampling import generate
    from tests.train.finetune_fixtures import make_tokenizer

    tok_path = make_tokenizer(tmp_path)
    torch.manual_seed(0)
    gpt = GPT(ArchConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, context_length=64,
                         vocab_size=load_tokenizer(tok_path).get_vocab_size())).eval()
    save_checkpoint(tmp_path / "ckpt", gpt, tokenizer_path=tok_path, step=0)
    export_hf(tmp_path / "ckpt", tmp_path / "hf")
    loaded = load_model(f"hf:{tmp_path / 'hf'}")
    prompts = ["def add(a, b):\n", "x = 1", "class Stack:\n    def push(self, item):\n        "]
    for temperature in (0.0, 1.0):
        kwargs = dict(n=2, max_new_tokens=12, temperature=temperature, seed=3, stop=["\n\n"])
        theirs = generate(loaded.model, loaded.tokenizer, prompts, max_batch_size=4, **kwargs)
        assert theirs == generate(gpt, loaded.tokenizer, prompts, **kwargs)
        assert theirs == generate(loaded.model, loaded.tokenizer, prompts, use_cache=False, **kwargs)
