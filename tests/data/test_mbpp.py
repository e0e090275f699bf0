"""MBPP converter on tricky rows, path resolution, reading with file:line errors, and the download code path."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from codenas.data import mbpp as mbpp_mod
from codenas.data.mbpp import UnconvertibleTask, download_mbpp, load_mbpp, mbpp_record, mbpp_split, resolve_mbpp_path
from codenas.data.proof import NULL_BODY
from codenas.eval.execution import run_programs
from codenas.io import CodenasError, sha256_file

from .conftest import SAMPLE_MBPP


def row(task_id: int, code: str, tests: list[str], text: str = "Write a function.", setup: str = "",
        challenge: list[str] | None = None) -> dict:
    return {"task_id": task_id, "text": text, "code": code, "test_list": tests, "test_setup_code": setup,
            "challenge_test_list": challenge or []}


TRICKY = {
    "imports_tabs_crlf_helper_after": row(
        701,
        "import math\r\nfrom collections import Counter\r\ndef area(r):\r\n\tif r < 0:\r\n\t\treturn 0\r\n"
        "\treturn round(math.pi * square(r), 2)\r\ndef square(x):\r\n\treturn x * x\r\n",
        ["assert area(1) == 3.14", "assert area(-1) == 0", "assert area(2) == 12.57"],
        text="Write a function to compute the area of a circle."),
    "class_and_setup_code": row(
        702,
        "class Node:\n    def __init__(self, v, nxt=None):\n        self.v = v\n        self.nxt = nxt\n"
        "def length(head):\n    n = 0\n    while head:\n        n += 1\n        head = head.nxt\n    return n\n",
        ["assert length(a) == 2", "assert length(b) == 1", "assert length(None) == 0"],
        setup="a = Node(1, Node(2))\nb = Node(3)"),
    "constant_and_existing_docstring": row(
        703,
        'LIMIT = 3\ndef clip(xs):\n    """Old docstring."""\n    return [min(x, LIMIT) for x in xs]\n',
        ["assert clip([1, 5]) == [1, 3]", "assert clip([]) == []", "assert clip([4]) == [3]"]),
    "wrapped_call_and_non_literal_expected": row(
        704,
        "def halves(n):\n    return [n / 2, n / 4]\n",
        ["assert set(halves(4)) == set([2.0, 1.0])", "assert round(halves(3)[0], 1) == 1.5",
         "assert halves(0) == [0, 0]"],
        text='Write a "halving" function with a \\ backslash.',
        challenge=["assert halves(8) == [4.0, 2.0]"]),
}


def proof(record):
    return [r.status for r in run_programs([record.program(), record.program(NULL_BODY)], timeout=10)]


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_tricky_rows_convert_and_prove(name):
    record = mbpp_record(TRICKY[name])
    assert record.prompt.endswith('    """\n') and record.solution.startswith("    ")
    assert proof(record)[0] == "passed"
    assert proof(record)[1] != "passed"  # a null body fails the tests
    ast.parse(record.program())  # one valid module


def test_prompt_layout_imports_first_helpers_before_tested_function():
    record = mbpp_record(TRICKY["imports_tabs_crlf_helper_after"])
    assert record.entry_point == "area"
    assert record.prompt.startswith("import math\nfrom collections import Counter\n")
    assert record.prompt.index("def square(x):") < record.prompt.index("def area(r):")
    assert "\t" not in record.program() and "\r" not in record.program()
    assert record.solution == "    if r < 0:\n        return 0\n    return round(math.pi * square(r), 2)\n"
    assert ">>> area(1)\n    3.14\n" in record.prompt
    assert "Write a function to compute the area of a circle." in record.prompt
    assert record.tests == "assert area(1) == 3.14\nassert area(-1) == 0\nassert area(2) == 12.57"


def test_setup_code_runs_after_the_code_before_the_asserts():
    record = mbpp_record(TRICKY["class_and_setup_code"])
    assert record.tests.startswith("a = Node(1, Node(2))\nb = Node(3)\nassert length(a) == 2")
    assert "class Node" in record.prompt and "class Node" not in record.solution


def test_existing_docstring_replaced_and_constant_kept():
    record = mbpp_record(TRICKY["constant_and_existing_docstring"])
    assert "Old docstring" not in record.prompt + record.solution
    assert record.prompt.startswith("LIMIT = 3\n")
    assert record.solution == "    return [min(x, LIMIT) for x in xs]\n"


def test_non_literal_expectation_is_shown_as_an_assert_and_text_is_escaped():
    record = mbpp_record(TRICKY["wrapped_call_and_non_literal_expected"])
    assert record.entry_point == "halves"  # the outermost defined function, not set()/round()
    assert ">>> assert set(halves(4)) == set([2.0, 1.0])" in record.prompt
    docstring = ast.get_docstring(ast.parse(record.prompt + record.solution).body[0])
    assert docstring.startswith('Write a "halving" function with a \\ backslash.')
    assert "halves(8)" not in record.tests and record.meta["challenge_tests"] == ["assert halves(8) == [4.0, 2.0]"]


def test_metrics_and_split_in_meta():
    record = mbpp_record(TRICKY["imports_tabs_crlf_helper_after"])
    assert record.id == "mbpp_701" and record.source == "mbpp"
    assert record.meta["split"] == "train" and record.meta["solution_lines"] == 3 and record.meta["complexity"] == 2
    assert [mbpp_split(i) for i in (1, 10, 11, 510, 511, 600, 601, 974)] == [
        "prompt", "prompt", "test", "test", "validation", "validation", "train", "train"]


def test_unconvertible_rows():
    with pytest.raises(UnconvertibleTask, match="call no top-level function"):
        mbpp_record(row(705, "f = lambda x: x\n", ["assert f(1) == 1"]))
    with pytest.raises(UnconvertibleTask, match="does not parse"):
        mbpp_record(row(706, "def f(:\n", ["assert f(1) == 1"]))


def test_real_sample_rows_convert_and_prove():
    records = [mbpp_record(r) for r in load_mbpp(SAMPLE_MBPP)]
    programs = [p for r in records for p in (r.program(), r.program(NULL_BODY))]
    statuses = [r.status for r in run_programs(programs, timeout=20)]
    assert statuses[0::2] == ["passed"] * len(records)
    assert "passed" not in statuses[1::2]
    by_id = {r.id: r for r in records}
    assert by_id["mbpp_223"].entry_point == "is_majority"  # tested function is not the last definition
    assert by_id["mbpp_927"].tests.startswith("root = Node(1)")


def test_load_mbpp_names_file_and_line(tmp_path):
    bad = tmp_path / "mbpp.jsonl"
    good = json.dumps(TRICKY["constant_and_existing_docstring"])
    bad.write_text(good + "\n" + json.dumps({"task_id": 2, "text": "x"}) + "\n")
    with pytest.raises(CodenasError) as err:
        load_mbpp(bad)
    assert err.value.path == str(bad) and err.value.line == 2
    bad.write_text(good + "\n{not json\n")
    with pytest.raises(CodenasError, match=r"mbpp.jsonl:2: malformed JSON"):
        load_mbpp(bad)
    bad.write_text(good + "\n" + good + "\n")
    with pytest.raises(CodenasError, match="duplicate task_id"):
        load_mbpp(bad)


def test_resolve_mbpp_path_order(tmp_path, monkeypatch):
    assert resolve_mbpp_path(None) is None
    cached = mbpp_mod.downloaded_mbpp_path()
    cached.parent.mkdir(parents=True)
    cached.write_text("{}\n")
    assert resolve_mbpp_path(None) == cached
    env = tmp_path / "env.jsonl"
    env.write_text("{}\n")
    monkeypatch.setenv("CODENAS_MBPP", str(env))
    assert resolve_mbpp_path(None) == env
    assert resolve_mbpp_path(SAMPLE_MBPP) == SAMPLE_MBPP
    with pytest.raises(CodenasError, match="--mbpp"):
        resolve_mbpp_path(tmp_path / "missing.jsonl")
    monkeypatch.setenv("CODENAS_MBPP", str(tmp_path / "missing.jsonl"))
    with pytest.raises(CodenasError, match="CODENAS_MBPP"):
        resolve_mbpp_path(None)


def test_download_checks_sha256_and_writes_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr(mbpp_mod, "MBPP_SHA256", sha256_file(SAMPLE_MBPP))
    saved = download_mbpp(url=SAMPLE_MBPP.resolve().as_uri())
    assert saved == mbpp_mod.downloaded_mbpp_path()
    assert saved.read_bytes() == SAMPLE_MBPP.read_bytes()
    assert resolve_mbpp_path(None) == saved

    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(SAMPLE_MBPP.read_bytes() + b"\n")
    out = tmp_path / "elsewhere" / "mbpp.jsonl"
    with pytest.raises(CodenasError, match="sha256"):
        download_mbpp(out, url=tampered.as_uri())
    assert not out.parent.exists()  # nothing written, not even a temporary file
    with pytest.raises(CodenasError, match="cannot download") as failed:
        download_mbpp(out, url=(tmp_path / "nowhere.jsonl").as_uri())
    assert "--mbpp PATH" in str(failed.value) and "CODENAS_MBPP" in str(failed.value)  # the offline ways


def test_download_keeps_a_verified_copy(monkeypatch, tmp_path):
    monkeypatch.setattr(mbpp_mod, "MBPP_SHA256", sha256_file(SAMPLE_MBPP))
    out = tmp_path / "mbpp.jsonl"
    out.write_bytes(SAMPLE_MBPP.read_bytes())
    assert download_mbpp(out, url=(tmp_path / "unreachable.jsonl").as_uri()) == out
    assert Path(out).read_bytes() == SAMPLE_MBPP.read_bytes()
