"""Memory estimates from the arch alone: the parameter count matches the built model, a far too large arch is
refused in one line naming the estimate and the device's memory, and real presets pass."""

from __future__ import annotations

import itertools

import pytest
import torch

from codenas.io import CodenasError
from codenas.model.config import ArchConfig, load_arch
from codenas.model.memory import check_fits, device_memory_bytes, size_text, training_bytes
from codenas.model.model import GPT


@pytest.mark.parametrize(("position", "norm", "mlp", "qk_norm", "n_kv_head", "bias", "tie"),
                         list(itertools.product(("learned", "rope"), ("layernorm", "rmsnorm"), ("gelu", "swiglu"),
                                                (False, True), (4, 2), (True, False), (True, False))))
def test_the_config_counts_the_parameters_of_the_built_model(position, norm, mlp, qk_norm, n_kv_head, bias, tie):
    arch = ArchConfig(n_layer=2, n_head=4, d_model=32, d_ff=48, context_length=16, vocab_size=100, position=position,
                      norm=norm, mlp=mlp, qk_norm=qk_norm, n_kv_head=n_kv_head, bias=bias, tie_embeddings=tie)
    with torch.device("meta"):
        assert arch.num_params() == GPT(arch).num_params()


def test_an_arch_far_too_large_is_refused_naming_the_estimate_and_the_memory(monkeypatch):
    import codenas.model.memory as memory

    huge = ArchConfig(n_layer=2, n_head=4, d_model=10**9, d_ff=4 * 10**9, context_length=256, vocab_size=8192)
    need = training_bytes(huge, 16)
    assert need["params"] == huge.num_params() > 10**19 and need["total"] > need["state"] >= 16 * need["params"]
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device: 64 * 2**30)
    with pytest.raises(CodenasError) as caught:
        check_fits(huge, 16, "cpu", path="huge.json")
    assert str(caught.value) == (
        f"huge.json: this arch needs at least {size_text(need['total'])} to train ({need['params']:,} parameters: "
        f"{size_text(need['state'])} of weights, gradients and adamw state, plus {size_text(need['activations'])} "
        "of activations at batch size 16); the device cpu has 64.0 GiB")


def test_the_presets_fit_this_machine_and_the_estimate_grows_with_the_batch():
    for name in ("tiny", "tiny_modern", "codenas_l8h512_regularized"):
        arch = load_arch(name)
        check_fits(arch, 16, "cpu")
        assert training_bytes(arch, 32)["activations"] == 2 * training_bytes(arch, 16)["activations"]
    assert training_bytes(load_arch("tiny"), 16, "muon")["state"] < training_bytes(load_arch("tiny"), 16)["state"]
    assert device_memory_bytes("cpu") > 2**30


def test_sizes_read_in_binary_units():
    assert [size_text(n) for n in (512, 1536, 3 * 2**30, 2**70)] == ["512 B", "1.5 KiB", "3.0 GiB", "1024.0 EiB"]
