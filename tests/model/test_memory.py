"""Memory estimates from the arch alone: a far too large arch is refused in one line naming the estimate and the
device's memory, and real presets pass."""

from __future__ import annotations

import pytest

from codenas.io import CodenasError
from codenas.model.config import ArchConfig, load_arch
from codenas.model.memory import check_fits, device_memory_bytes, size_text, training_bytes
from codenas.model.model import count_params


def test_an_arch_far_too_large_is_refused_naming_the_estimate_and_the_memory(monkeypatch):
    import codenas.model.memory as memory

    huge = ArchConfig(n_layer=2, n_head=4, d_model=10**9, d_ff=4 * 10**9, context_length=256, vocab_size=8192)
    need = training_bytes(huge, 16)
    assert need["params"] == count_params(huge) > 10**19 and need["total"] > need["state"] >= 16 * need["params"]
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
