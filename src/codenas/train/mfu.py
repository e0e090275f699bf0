"""Model FLOPs utilisation: the peak bf16 throughput of common accelerators, and MFU = 6·N·tokens/s / peak.

``6 * N`` FLOPs per trained token (forward 2N, backward 4N, N = every parameter, tied weights once: the total of
``codenas.model.model.parameter_counts``) is the usual estimate (Kaplan et al. 2020; nanoGPT and nanochat report
MFU the same way); it leaves out attention's ``T``-dependent FLOPs, so it slightly understates long-context work.
Peaks are the vendors' dense (no sparsity) bf16 tensor-core figures; a device missing from the table has no MFU
unless a peak is given (``--peak-flops``).
"""

from __future__ import annotations

import torch

# device-name fragment -> dense bf16 peak FLOP/s; the first fragment found in the device name wins, so the more
# specific names (H100 PCIe before H100) come first
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("B100", 1750e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("MI300X", 1307e12),
    ("MI250X", 383e12),
)


def peak_flops_for_name(name: str) -> float | None:
    """The table's dense bf16 peak for a device name such as ``"NVIDIA H200"``, or None when unknown."""
    for fragment, flops in PEAK_BF16_FLOPS:
        if fragment.lower() in name.lower():
            return flops
    return None


def device_peak_flops(device: torch.device | str, override: float | None = None) -> float | None:
    """The peak FLOP/s MFU is measured against: ``override`` when positive, else the table's entry for this CUDA
    device, else None (CPUs have no entry: pass the peak explicitly to get an MFU there)."""
    if override:
        return float(override)
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return peak_flops_for_name(torch.cuda.get_device_name(device))
    return None


def mfu(n_params: int, tokens_per_s: float, peak: float) -> float:
    """The fraction of ``peak`` FLOP/s that training ``n_params`` parameters at ``tokens_per_s`` uses."""
    return 6 * n_params * tokens_per_s / peak
