"""Corpus sources: files that cannot be read (a symlink loop, a dangling link, no read permission for an ordinary
user) are left out of the listing, named and counted in the manifest, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from click.testing import CliRunner

from codenas.cli import cli
from codenas.corpus.sources import listing_digest, resolve_sources
from codenas.io import read_json

NOBODY = 65534


def _odd_folder(py_dir: Path, root: Path) -> Path:
    """Four readable modules, a symlink loop, a dangling link, a link to a readable module and a file only its
    owner may read (mode 000)."""
    for name in ("textwrap.py", "heapq.py", "shlex.py", "bisect.py"):
        shutil.copy(py_dir / name, root / name)
    (root / "loop.py").symlink_to("loop.py")
    (root / "dangling.py").symlink_to("missing.py")
    (root / "linked.py").symlink_to(root / "heapq.py")
    (root / "secret.py").write_text("password = 'hunter2'\n")
    os.chmod(root / "secret.py", 0)
    return root


def _listing_as_ordinary_user(folder: Path) -> dict:
    """What ``resolve_sources`` and ``listing_digest`` make of ``folder`` for a user without root's rights: in
    this process when it is one, else in a forked child that drops to ``nobody``."""

    def listing() -> dict:
        sources = resolve_sources([str(folder)])
        return {"files": [f for s in sources for f in s.files],
                "skipped": [list(x) for s in sources for x in s.skipped], "digest": listing_digest(sources)}

    if os.geteuid() != 0:
        return listing()
    listing_of_root = resolve_sources([str(folder)])  # imports every module the child needs before the fork
    assert "secret.py" in listing_of_root[0].files  # root may read it: only an ordinary user must skip it
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, json.dumps(listing()).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return json.loads(out)


def test_unreadable_files_and_broken_links_are_skipped_and_named(py_dir):
    shared = Path(tempfile.mkdtemp(prefix="codenas-odd-"))  # outside pytest's 0700 folders, so nobody may enter
    try:
        os.chmod(shared, 0o755)
        folder = _odd_folder(py_dir, shared)
        seen = _listing_as_ordinary_user(folder)
        assert seen["files"] == ["bisect.py", "heapq.py", "linked.py", "shlex.py", "textwrap.py"]
        assert dict(map(tuple, seen["skipped"])) == {"dangling.py": "a dangling or broken link",
                                                     "loop.py": "a symlink loop",
                                                     "secret.py": "not readable (permission denied)"}
        assert len(seen["digest"]) == 64
    finally:
        shutil.rmtree(shared)


def test_a_build_counts_the_skipped_files_in_its_manifest(py_dir, tokenizer, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for name in ("textwrap.py", "heapq.py", "shlex.py"):
        shutil.copy(py_dir / name, folder / name)
    (folder / "loop.py").symlink_to("loop.py")
    (folder / "sub").mkdir()
    (folder / "sub" / "back").symlink_to("..")  # a folder loop: never walked into
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["corpus", "build", str(folder), "--out", str(out), "--tokenizer", str(tokenizer),
                                      "--tasks", "1", "--workers", "1", "--no-decontaminate"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    manifest = read_json(out / "manifest.json")
    assert manifest["sources"][str(folder)]["unreadable"] == [{"file": "loop.py", "reason": "a symlink loop"}]
    assert manifest["sources"][str(folder)]["files"] == 3
    assert f"{folder}: 3 documents" in result.output and "1 unreadable files skipped" in result.output


def test_a_source_of_only_unreadable_files_is_one_line(tmp_path):
    (tmp_path / "loop.py").symlink_to("loop.py")
    result = CliRunner().invoke(cli, ["corpus", "build", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no readable .py" in result.output and "loop.py (a symlink loop)" in result.output
    single = CliRunner().invoke(cli, ["corpus", "build", str(tmp_path / "loop.py"), "--out", str(tmp_path / "o2")])
    assert single.exit_code == 1 and "symlink loop" in single.output and "Traceback" not in single.output
