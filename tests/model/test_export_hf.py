"""HF export: transformers loads the folder with AutoModelForCausalLM / AutoTokenizer and computes our logits."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from codenas.cli import cli
from codenas.io import CodenasError
from codenas.model.checkpoint import save_checkpoint
from codenas.model.config import ArchConfig
from codenas.model.export_hf import export_hf
from codenas.model.model import GPT


@pytest.mark.parametrize(("bias", "tie"), [(True, True), (False, False)])
def test_export_logits_match(tmp_path, arch, tokenizer_path, bias, tie):
    torch.manual_seed(1)
    model = GPT(ArchConfig(**{**arch.to_dict(), "bias": bias, "tie_embeddings": tie, "dropout": 0.1})).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm affines, so a mistake in their mapping shows
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=3)
    export_hf(tmp_path / "ckpt", tmp_path / "hf")

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.model_type == "gpt2" and hf.dtype == torch.float32
    idx = torch.randint(0, arch.vocab_size, (2, arch.context_length))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert (ours - theirs).abs().max().item() < 1e-4


def test_export_tokenizer_roundtrip(tmp_path, model, tokenizer, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=0)
    export_hf(tmp_path / "ckpt", tmp_path / "hf")
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "def add(a, b):\n    return a + b  # ünïcode\n"
    ids = hf_tok(text)["input_ids"]
    assert ids == tokenizer.encode(text).ids
    assert hf_tok.decode(ids) == text
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == tokenizer.token_to_id("<|endoftext|>")
    assert hf_tok.pad_token == "<|pad|>"
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "PreTrainedTokenizerFast")  # a class transformers 4.x knows too


def test_export_cli(tmp_path, model, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=0)
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "--hf", str(tmp_path / "hf"), "--checkpoint", str(tmp_path / "ckpt")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "model.safetensors").is_file()
    (tmp_path / "ckpt" / "tokenizer.json").unlink()
    result = runner.invoke(cli, ["export", "--hf", str(tmp_path / "hf2"), "--checkpoint", str(tmp_path / "ckpt")])
    assert result.exit_code == 1 and "tokenizer.json" in result.output
    assert not (tmp_path / "hf2").exists()


def test_export_cli_takes_the_checkpoint_as_argument_too(tmp_path, model, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=0)
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(tmp_path / "ckpt"), "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hf" / "config.json").is_file()
    result = runner.invoke(cli, ["export", "--hf", str(tmp_path / "hf3")])
    assert result.exit_code == 2 and "give the checkpoint folder once" in result.output



# every exportable layout family, with biases, GQA and untied heads where the class has them
EXPORTABLE = [
    ({"position": "rope", "norm": "rmsnorm", "mlp": "swiglu"}, "llama"),
    ({"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "tie_embeddings": False,
      "n_kv_head": 2, "rope_theta": 500.0}, "llama"),
    ({"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True, "bias": False}, "qwen3"),
    ({"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True, "bias": False,
      "tie_embeddings": False, "n_kv_head": 1}, "qwen3"),
]


@pytest.mark.parametrize(("layout", "model_type"), EXPORTABLE)
def test_modern_layouts_export_to_llama_and_qwen3(tmp_path, arch, tokenizer_path, layout, model_type):
    torch.manual_seed(2)
    model = GPT(ArchConfig(**{**arch.to_dict(), **layout})).eval()
    with torch.no_grad():  # non-trivial norm gains and biases, so a mistake in their mapping shows
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=1)
    written = export_hf(tmp_path / "ckpt", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.model_type == model_type and type(hf).__name__ == written
    assert written == {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}[model_type]
    idx = torch.randint(0, arch.vocab_size, (2, arch.context_length))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert (ours - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize(("layout", "field"), [
    ({"norm": "rmsnorm"}, "norm"),
    ({"mlp": "swiglu"}, "mlp"),
    ({"qk_norm": True}, "qk_norm"),
    ({"n_kv_head": 2}, "n_kv_head"),
    ({"position": "rope"}, "norm"),
    ({"position": "rope", "norm": "rmsnorm"}, "mlp"),
    ({"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True, "bias": True}, "bias"),
])
def test_inexpressible_layouts_are_refused_naming_the_field(tmp_path, arch, tokenizer_path, layout, field):
    model = GPT(ArchConfig(**{**arch.to_dict(), **layout}))
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=0)
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "ckpt"), "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 1 and f"arch field {field!r}" in result.output
    assert not (tmp_path / "hf").exists()  # nothing half-written


def test_an_arch_field_the_exporter_does_not_map_is_refused_unless_at_its_default(monkeypatch, arch):
    from codenas.model import export_hf

    monkeypatch.setattr(export_hf, "EXPRESSED", tuple(n for n in export_hf.EXPRESSED if n != "rope_theta"))
    assert export_hf.hf_layout(arch) == "gpt2"  # rope_theta at its default
    with pytest.raises(CodenasError, match="arch field 'rope_theta' = 5000.0 has no transformers class"):
        export_hf.hf_layout(ArchConfig(**{**arch.to_dict(), "rope_theta": 5000.0}))


def test_export_never_deletes_files_it_did_not_write(tmp_path, model, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=0)
    hf = tmp_path / "hf"
    (hf / "other_model").mkdir(parents=True)
    (hf / "notes.txt").write_text("mine")
    runner = CliRunner()
    for extra in ([], ["--overwrite"]):
        result = runner.invoke(cli, ["export", str(tmp_path / "ckpt"), "--hf", str(hf), *extra])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert "notes.txt" in result.output and str(hf) in result.output
        assert sorted(p.name for p in hf.iterdir()) == ["notes.txt", "other_model"]
    fresh = tmp_path / "fresh"
    assert runner.invoke(cli, ["export", str(tmp_path / "ckpt"), "--hf", str(fresh)]).exit_code == 0
    again = runner.invoke(cli, ["export", str(tmp_path / "ckpt"), "--hf", str(fresh)])
    assert again.exit_code == 1 and "--overwrite" in again.output  # an earlier export: only with --overwrite
    assert runner.invoke(cli, ["export", str(tmp_path / "ckpt"), "--hf", str(fresh), "--overwrite"]).exit_code == 0
    assert (fresh / "config.json").is_file()
