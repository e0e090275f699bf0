"""Shared file conventions: errors name file and line, writes are atomic, torn log tails are tolerated."""

import json

import pytest

from codenas.io import (
    CodenasError,
    JsonlAppender,
    atomic_path,
    atomic_write_json,
    read_jsonl,
    sha256_bytes,
    sha256_file,
    write_jsonl,
)


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(CodenasError) as e:
        list(read_jsonl(p))
    assert e.value.line == 3
    assert str(e.value).startswith(f"{p}:3: malformed JSON")


def test_read_jsonl_rejects_non_objects(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("[1, 2]\n")
    with pytest.raises(CodenasError, match=":1: expected a JSON object"):
        list(read_jsonl(p))


def test_missing_file_is_a_codenas_error(tmp_path):
    with pytest.raises(CodenasError, match="file not found"):
        list(read_jsonl(tmp_path / "nope.jsonl"))


def test_atomic_path_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_json_is_deterministic(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    atomic_write_json(tmp_path / "b.json", {"a": [1, 2], "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_appender_truncates_torn_tail_and_reader_tolerates_it(tmp_path):
    p = tmp_path / "log.jsonl"
    write_jsonl(p, [{"i": 0}, {"i": 1}])
    with open(p, "a") as f:
        f.write('{"i": 2, "tor')  # a kill mid-write
    assert [o["i"] for _, o in read_jsonl(p, allow_torn_tail=True)] == [0, 1]
    with pytest.raises(CodenasError):
        list(read_jsonl(p))
    with JsonlAppender(p) as log:
        log.append({"i": 2})
    assert [json.loads(line)["i"] for line in p.read_text().splitlines()] == [0, 1, 2]


def test_sha256_file_matches_bytes(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"codenas" * 1000)
    assert sha256_file(p) == sha256_bytes(b"codenas" * 1000)


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os
    mask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "m.json", {})
    finally:
        os.umask(mask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    from codenas.io import atomic_directory

    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a").write_text("half")
            raise RuntimeError("killed")
    assert (target / "a").read_text() == "1"
    with atomic_directory(target) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_invalid_utf8_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(CodenasError) as e:
        list(read_jsonl(p))
    assert e.value.line == 2 and "not valid UTF-8" in str(e.value)


def test_blank_lines_and_missing_final_newline(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n  \n{"a": 2}')
    assert list(read_jsonl(p)) == [(1, {"a": 1}), (4, {"a": 2})]


def test_null_line_is_not_an_object(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("null\n")
    with pytest.raises(CodenasError, match=":1: expected a JSON object, got NoneType"):
        list(read_jsonl(p))
