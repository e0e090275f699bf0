"""The one progress helper every long loop uses, and the console's duration and ETA wording.

In a terminal, ``progress`` is a tqdm bar with ETA. When stderr is not a terminal (a log file, CI, nohup) it
prints a compact line instead, at most every ``line_interval`` seconds (30 by default) and once at the end when
it printed any: ``sampling: 12/40 prompts (30%), 0.41 prompts/s, ETA 1 min 8 s``. ``--quiet`` (or
``CODENAS_QUIET=1``) silences both, and ``say``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

LINE_INTERVAL_S = 30.0

_quiet = os.environ.get("CODENAS_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def is_terminal() -> bool:
    """Whether progress goes to a terminal (bars) rather than a log (compact lines)."""
    return sys.stderr.isatty()


def format_duration(seconds: float | None) -> str:
    """``42.0 s``, ``3 min 5 s``, ``2 h 14 min``; ``-`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min"


def eta(done: float, total: float | None, elapsed: float) -> float | None:
    """Seconds left at the average rate so far; None before anything is done or without a total."""
    if not total or done <= 0 or elapsed <= 0:
        return None
    return max(total - done, 0) * elapsed / done


class LineProgress:
    """The non-terminal stand-in for a tqdm bar (``update``, ``set_postfix``, ``close``, iteration): a line on
    stderr every ``interval`` seconds (from ``update``, or from a watcher thread when one step takes longer), and
    a last one at ``close`` when it printed any."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, interval: float = LINE_INTERVAL_S):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.initial = initial
        self.interval, self.postfix, self.printed = interval, "", False
        self.start = self.last = time.perf_counter()
        self._lock, self._closed = threading.Lock(), threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress line was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._maybe_print()

    def _maybe_print(self) -> None:
        with self._lock:
            now = time.perf_counter()
            if now - self.last >= self.interval and not self._closed.is_set():
                self.last = now
                self._print()

    def _watch(self) -> None:
        """Print while a long step (a slow prompt, a sample that runs into its timeout) gives no update."""
        while not self._closed.wait(self.interval):
            self._maybe_print()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            if self.printed:
                self._print(final=True)

    def line(self, *, final: bool = False) -> str:
        """The progress line as it would be printed now."""
        elapsed = time.perf_counter() - self.start
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        total = f"/{self.total:,}" if self.total else ""
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {self.n:,}{total} {self.unit}s{share}", f"{rate:.3g} {self.unit}s/s"]
        if self.postfix:
            parts.append(self.postfix)
        if final:
            parts.append(f"done in {format_duration(elapsed)}")
        else:
            todo = self.total - self.initial if self.total else None
            parts.append(f"ETA {format_duration(eta(done, todo, elapsed))}")
        return ", ".join(parts)

    def _print(self, *, final: bool = False) -> None:
        self.printed = True
        say(self.line(final=final))


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", line_interval: float | None = LINE_INTERVAL_S, **kwargs: Any) -> Any:
    """A progress display over ``iterable`` (or updated by hand with ``.update()``/``.set_postfix()``).

    A tqdm bar with ETA in a terminal; otherwise a ``LineProgress`` printing every ``line_interval`` seconds
    (``None``: print nothing, for loops that log their own lines). Silent when quiet.
    """
    if _quiet or not is_terminal():
        if _quiet or line_interval is None:
            return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True, **kwargs)
        return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=kwargs.get("initial", 0),
                            interval=line_interval)
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False, **kwargs)


def say(message: str) -> None:
    """A one-line status message on stderr (above any bar), suppressed when quiet."""
    if _quiet:
        return
    if is_terminal():
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
