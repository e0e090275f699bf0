"""The one progress helper every long loop uses (tqdm). Quiet when stderr is not a TTY or with --quiet."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_quiet = os.environ.get("CODENAS_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", **kwargs: Any) -> tqdm:
    """A progress bar (also usable manually via ``.update()``/``.set_postfix()``) that hides itself when quiet."""
    disable = _quiet or not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True,
                leave=False, **kwargs)


def say(message: str) -> None:
    """A one-line status message on stderr, suppressed when quiet."""
    if not _quiet:
        print(message, file=sys.stderr, flush=True)
