"""Memory a training run needs, estimated from the arch before anything is built, against the device's memory.

``training_bytes`` is a lower bound: fp32 weights and gradients, the optimizer's state (AdamW: two moments per
parameter; Muon: one momentum, its lower bound) and the activations the backward pass keeps (per layer and token
the block's inputs and outputs, queries/keys/values and the MLP's hidden units; the attention weights and the
logits' gradient are left out, so a fused attention kernel is not over-counted). ``check_fits`` refuses only a
shape whose lower bound exceeds the device's whole memory (CPU: physical RAM; CUDA: the GPU's memory), so it never
refuses a run that could fit; what it stops is a typo such as ``d_model = 10**9``, which would otherwise pass
validation and fail while allocating terabytes.
"""

from __future__ import annotations

import os

import torch

from codenas.io import CodenasError
from codenas.model.config import ArchConfig
from codenas.model.model import count_params

FP32 = 4


def training_bytes(arch: ArchConfig, batch_size: int, optimizer: str = "adamw") -> dict[str, int]:
    """``{"params", "state", "activations", "total"}``: the parameter count, and bytes of weights + gradients +
    optimizer state, of activations kept for backward at ``batch_size`` sequences of ``context_length``, and their
    sum (a lower bound, see the module docstring)."""
    params = count_params(arch)
    state = params * FP32 * (4 if optimizer == "adamw" else 3)
    qkv = (arch.n_head + 2 * arch.n_kv_head) * arch.head_dim
    hidden = (3 if arch.mlp == "swiglu" else 2) * arch.d_ff
    per_token = arch.n_layer * (4 * arch.d_model + qkv + hidden) + arch.vocab_size  # + the logits
    activations = batch_size * arch.context_length * per_token * FP32
    return {"params": params, "state": state, "activations": activations, "total": state + activations}


def device_memory_bytes(device: torch.device | str) -> int | None:
    """The memory of ``device``: physical RAM for a CPU, the GPU's memory for CUDA; None when unknown."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_fits(arch: ArchConfig, batch_size: int, device: torch.device | str, *, optimizer: str = "adamw",
               path: str | os.PathLike | None = None) -> None:
    """Refuse, in one line naming the estimate and the device's memory, an arch whose training needs more than
    the device has (``path``: the arch file, for the message)."""
    need = training_bytes(arch, batch_size, optimizer)
    have = device_memory_bytes(device)
    if have is None or need["total"] <= have:
        return
    state, activations = size_text(need["state"]), size_text(need["activations"])
    raise CodenasError(
        f"this arch needs at least {size_text(need['total'])} to train ({need['params']:,} parameters: {state} of "
        f"weights, gradients and {optimizer} state, plus {activations} of activations at batch size {batch_size}); "
        f"the device {torch.device(device)} has {size_text(have)}", path)


def size_text(n: int) -> str:
    """Bytes in binary units: ``1.5 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} EiB"
