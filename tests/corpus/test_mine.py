"""`data mine`: records from a small folder (proven, dropped by doctest, no docstring, exact copy, benchmark body),
the manifest's counts, determinism, resume after a SIGKILL, and the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from codenas.cli import cli
from codenas.corpus.mine import MANIFEST, RECORDS, RULES, mine
from codenas.data.humaneval import load_humaneval
from codenas.eval.execution import run_programs
from codenas.io import read_json
from codenas.records import read_records
from codenas.settings import MineSettings

QUICK = MineSettings(tasks=2, workers=1)

UTILS = '''"""Small helpers."""
import math

SCALE = 3


def scaled_sqrt(x):
    """Return the square root of x, times the module's scale.

    >>> scaled_sqrt(4)
    6.0
    """
    return math.sqrt(x) * SCALE


def off_by_one(x):
    """Return x plus one, or so its example claims.

    >>> off_by_one(1)
    3
    """
    return x + 1


def undocumented(x):
    return x * 2


def join_dashed(a, b):
    """Join two strings with a dash between them."""
    return a + "-" + b


def _helper(x):
    """A private helper that the module uses internally."""
    return x


class Box:
    def size(self):
        """The number of items held in this box right now."""
        return len(self.items)

    @staticmethod
    def double(x):
        """Return twice the value that is given to it."""
        return 2 * x
'''
COPY = '''def join_dashed(a, b):
    """Join two strings with a dash between them."""
    return a + "-" + b
'''


def _benchmark_copy() -> str:
    """A function whose body is HumanEval/23's reference body, under another name and docstring."""
    strlen = next(r for r in load_humaneval() if r.id == "he_23")
    return f'def how_long(string):\n    """Give back how many characters the string holds."""\n{strlen.solution}'


@pytest.fixture
def src(tmp_path) -> Path:
    folder = tmp_path / "src"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "utils.py").write_text(UTILS)
    (folder / "pkg" / "utils_copy.py").write_text(COPY)  # sorts after utils.py: the copy is dropped
    (folder / "pkg" / "bench.py").write_text(_benchmark_copy())
    (folder / "tests").mkdir()
    (folder / "tests" / "test_utils.py").write_text('def test_it():\n    """Checks it."""\n    assert True\n')
    return folder


def test_records_from_a_small_folder(src, tmp_path):
    out = tmp_path / "mined"
    manifest = mine([str(src)], out, settings=QUICK)
    records = {r.meta["qualname"]: r for r in read_records(out / RECORDS)}
    assert set(records) == {"scaled_sqrt", "join_dashed", "Box.double"}

    proven = records["scaled_sqrt"]
    assert proven.proven is True and proven.source == "mined" and proven.entry_point == "scaled_sqrt"
    assert proven.prompt.startswith("import math\n\nSCALE = 3\n\n\ndef scaled_sqrt(x):\n")
    assert proven.prompt.endswith('    6.0\n    """\n') and proven.solution == "    return math.sqrt(x) * SCALE\n"
    assert proven.meta["has_doctest"] and proven.meta["source_file"] == f"{src}/pkg/utils.py"
    assert proven.id.startswith("mined_") and len(proven.id) == len("mined_") + 12

    unproven = records["join_dashed"]
    assert unproven.proven is False and unproven.meta["source_file"].endswith("utils.py")
    static = records["Box.double"]
    assert static.prompt.startswith("def double(x):\n") and static.solution == "    return 2 * x\n"
    # Record.program() is what the judge runs: the unproven records' minimal check passes too
    assert [r.status for r in run_programs([static.program(), unproven.program()], workers=1)] == ["passed"] * 2

    rules = manifest["rules"]
    assert set(rules) == set(RULES)  # every rule is counted, 0 included
    assert (rules["doctest_failed"], rules["no_docstring"], rules["exact_duplicate"], rules["private"],
            rules["uses_instance"], rules["contaminated"]) == (1, 1, 1, 1, 1, 1)
    assert manifest["functions"] == manifest["records"] + sum(rules.values())  # every function accounted for
    assert manifest["files"]["dropped"]["test_file"] == 1 and manifest["files"]["read"] == 4
    assert (manifest["records"], manifest["proven"], manifest["unproven"]) == (3, 1, 2)
    assert manifest["contaminated"] == [{"source_file": f"{src}/pkg/bench.py", "function": "how_long",
                                         "benchmark_id": "he_23", "rule": "same_body"}]
    assert manifest["benchmarks"]["humaneval"] == 164 and set(manifest["elapsed"]) >= {"cut", "prove", "total"}
    assert read_json(out / MANIFEST) == manifest
    assert not (tmp_path / ".mined.building").exists()  # the work folder is gone once the output is in place

    again = mine([str(src)], out, settings=QUICK)  # the same key: nothing is rebuilt
    assert again == manifest


def test_refuses_a_folder_that_is_not_its_output(src, tmp_path):
    from codenas.io import CodenasError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CodenasError, match="not a `data mine` folder"):
        mine([str(src)], out, settings=QUICK)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_deterministic_and_resumes_after_a_kill(src, tmp_path):
    first = tmp_path / "first"
    mine([str(src)], first, settings=QUICK)
    second = tmp_path / "second"
    mine([str(src)], second, settings=MineSettings(tasks=3, workers=2))  # other tasks and workers: same records
    assert (second / RECORDS).read_bytes() == (first / RECORDS).read_bytes()

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "codenas.cli", "data", "mine", str(src), "--out", str(killed), "--tasks", "2",
               "--workers", "1"]
    env = {**os.environ, "CODENAS_FAULT": "mine-proof"}  # SIGKILL after the first proof verdict is logged
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert not killed.joinpath(RECORDS).exists() and (tmp_path / ".killed.building" / "proofs.jsonl").is_file()
    env.pop("CODENAS_FAULT")
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "mine: resuming" in rerun.stderr and "resuming the doctest proofs (1 of 4 programs judged)" in rerun.stderr
    assert (killed / RECORDS).read_bytes() == (first / RECORDS).read_bytes()
    assert read_json(killed / MANIFEST)["resumed"] is True


def test_cli_prints_the_counts(src, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(cli, ["data", "mine", str(src), "--out", str(out), "--tasks", "2", "--workers", "1",
                                      "--max-body-lines", "1", "--no-keep-private"])
    assert result.exit_code == 0, result.output
    assert "records: 3 (1 proven by doctests, 33.3%; 2 unproven)" in result.output
    assert "doctest_failed 1" in result.output and "test_file 1" in result.output
    assert read_json(out / MANIFEST)["settings"]["max_body_lines"] == 1
