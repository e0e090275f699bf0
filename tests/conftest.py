"""Fixtures for every test: no test leaks codenas' process-wide quiet flag into the next one (a command run with
``--quiet`` through click's CliRunner sets it in the test process itself)."""

from __future__ import annotations

import pytest

from codenas import progress


@pytest.fixture(autouse=True)
def _restore_quiet():
    quiet = progress.is_quiet()
    yield
    progress.set_quiet(quiet)
