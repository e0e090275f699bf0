"""Checkpoints: saving then loading gives back the same weights, arch, metadata and trainer state; bad ones fail."""

from __future__ import annotations

import json

import pytest
import torch

from codenas.io import CodenasError
from codenas.model.checkpoint import load_checkpoint, load_trainer_state, save_checkpoint
from codenas.model.config import ArchConfig
from codenas.model.model import GPT


def test_save_load_roundtrip(tmp_path, model, tokenizer_path):
    state = {"step": 7, "rng": torch.get_rng_state(), "optimizer": {"lr": 0.1}}
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=7, metrics={"val_loss": 1.5},
                    trainer_state=state)
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.arch == model.config
    assert ckpt.meta["step"] == 7 and ckpt.meta["metrics"] == {"val_loss": 1.5}
    assert not ckpt.model.training
    for (name, a), (_, b) in zip(model.state_dict().items(), ckpt.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert ckpt.model.lm_head.weight is ckpt.model.wte.weight  # re-tied
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    assert torch.equal(model(idx)[0], ckpt.model(idx)[0])
    loaded_state = load_trainer_state(tmp_path / "ckpt")
    assert loaded_state["step"] == 7 and torch.equal(loaded_state["rng"], state["rng"])
    assert ckpt.tokenizer.encode("def f(): pass").ids


def test_untied_roundtrip(tmp_path, arch, tokenizer_path):
    untied = GPT(ArchConfig(**{**arch.to_dict(), "tie_embeddings": False, "bias": False}))
    save_checkpoint(tmp_path / "ckpt", untied, tokenizer_path=tokenizer_path, step=0)
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(ckpt.model.lm_head.weight, untied.lm_head.weight)
    assert load_trainer_state(tmp_path / "ckpt") is None


def test_overwrite_replaces_whole_directory(tmp_path, model, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=1, trainer_state={"a": 1})
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=2)
    assert load_checkpoint(tmp_path / "ckpt").meta["step"] == 2
    assert load_trainer_state(tmp_path / "ckpt") is None  # the old trainer_state.pt did not survive
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folders left behind


def test_missing_weights_named(tmp_path, model, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=1)
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(CodenasError, match="model.safetensors"):
        load_checkpoint(tmp_path / "ckpt")


def test_corrupt_weights_named(tmp_path, model, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=1)
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CodenasError, match="cannot read weights"):
        load_checkpoint(tmp_path / "ckpt")


def test_tokenizer_hash_checked(tmp_path, model, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=1)
    tok_file = tmp_path / "ckpt" / "tokenizer.json"
    tok_file.write_text(tok_file.read_text() + " ", encoding="utf-8")
    with pytest.raises(CodenasError, match="sha256"):
        load_checkpoint(tmp_path / "ckpt")


def test_arch_mismatch_named(tmp_path, model, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=1)
    meta_file = tmp_path / "ckpt" / "codenas.json"
    meta = json.loads(meta_file.read_text())
    meta["arch"]["d_ff"] *= 2
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CodenasError, match="fc_in"):
        load_checkpoint(tmp_path / "ckpt")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CodenasError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CodenasError, match="codenas.json"):
        load_checkpoint(tmp_path / "empty")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "codenas.json").write_text('{"kind": "lora", "base": "/somewhere"}')
    with pytest.raises(CodenasError, match="LoRA adapter, not a full checkpoint: merge it first"):
        load_checkpoint(tmp_path / "adapter")


def test_failed_save_leaves_old_checkpoint(tmp_path, model, tokenizer_path):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=1)
    with pytest.raises(Exception, match="pickle"):
        save_checkpoint(tmp_path / "ckpt", model, tokenizer_path=tokenizer_path, step=2,
                        trainer_state={"unpicklable": lambda: None})
    assert load_checkpoint(tmp_path / "ckpt").meta["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
