"""Where things live by default: the configs folder, the user's cache (downloaded MBPP), run folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from codenas.io import CodenasError

_CHECKOUT_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
_INSTALLED_CONFIGS = Path(sys.prefix) / "share" / "codenas" / "configs"


def configs_dir() -> Path:
    """The folder of arch JSONs and run presets: $CODENAS_CONFIGS, the checkout's configs/, or the installed copy."""
    for candidate in (os.environ.get("CODENAS_CONFIGS"), _CHECKOUT_CONFIGS, _INSTALLED_CONFIGS):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise CodenasError("cannot find the codenas configs folder; set CODENAS_CONFIGS")


def resolve_config(name_or_path: str | os.PathLike, suffix: str) -> Path:
    """A config given as a path, or as a name in configs/ (``tiny`` -> ``configs/tiny<suffix>``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for candidate in (configs_dir() / p.name, configs_dir() / f"{p.name}{suffix}"):
        if candidate.is_file():
            return candidate
    raise CodenasError(f"no such config: {name_or_path} (not a file, nor a name in {configs_dir()})")


def cache_dir() -> Path:
    """The user's codenas cache: $CODENAS_HOME, else $XDG_CACHE_HOME/codenas, else ~/.cache/codenas."""
    if home := os.environ.get("CODENAS_HOME"):
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "codenas"
