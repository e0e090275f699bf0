"""A search on a real PostgreSQL server (the storage several machines share), started here when Debian's
``postgresql`` package is installed; skipped with the reason otherwise. Manual equivalent: docs/search.md."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from codenas.search.study import run_search


def _postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    candidates = ([Path(on_path).resolve().parent] if on_path else []) + [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def _as_server_user() -> list[str]:
    """PostgreSQL refuses to run as root: under root, run its tools as the `postgres` system user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run the server as")
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root and `runuser` is missing (needed to start the server as `postgres`)")
    return [runuser, "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); install Debian's `postgresql` package")
    try:
        make_url("postgresql://").get_dialect().import_dbapi()
    except ImportError as e:
        pytest.skip(f"no PostgreSQL driver for SQLAlchemy ({e}); pip install 'codenas[postgres]'")
    prefix = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="codenas-pg-"))
    data = root / "data"
    if prefix:
        shutil.chown(root, user="postgres")
    port = _free_port()
    subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)
    server_options = f"-h 127.0.0.1 -p {port} -k {root}"
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o",
                    server_options, "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_search_on_postgres_resumes_from_another_output_folder(tiny_config, postgres_url):
    first = run_search(tiny_config(storage=postgres_url, trials=2))
    assert first["trials_run"] == 2 and first["storage"].startswith("postgresql://")
    # a second worker (here: another output folder) sees the same study and runs only what is missing
    second = run_search(tiny_config(storage=postgres_url, trials=3, out=tiny_config().out / "worker1", worker=1))
    assert second["trials_run"] == 1
    assert sorted(r["trial"] for r in second["rows"]) == [0, 1, 2]
    assert not (tiny_config().out / "study.db").exists()
