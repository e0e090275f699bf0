"""Shared file conventions: errors name file and line, writes are atomic, torn log tails are tolerated."""

import json
import os
import signal
import subprocess
import sys

import pytest

from codenas.io import (
    CodenasError,
    JsonlAppender,
    atomic_path,
    atomic_write_json,
    check_writable,
    output_lock,
    read_jsonl,
    recover_directory,
    replace_folder,
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


HOLDER = """import sys, time
from codenas.io import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture()
def lock_holder(tmp_path):
    """Another process holding the output lock of ``tmp_path / 'out'``; yields (folder, process)."""
    folder = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    yield folder, proc
    proc.kill()
    proc.wait()


def test_a_second_process_is_refused_naming_the_folder_and_the_holder(lock_holder):
    folder, holder = lock_holder
    with pytest.raises(CodenasError) as e:
        with output_lock(folder):
            pass
    assert str(folder) in str(e.value) and f"pid {holder.pid}" in str(e.value)


def test_a_waiting_locker_gets_the_lock_when_the_holder_ends(lock_holder):
    folder, holder = lock_holder
    told = []

    def wait(pid):  # told who holds it, then the holder ends while this process waits
        told.append(pid)
        holder.kill()

    with output_lock(folder, wait=wait):
        assert (folder / ".codenas.lock").read_text().strip() == str(os.getpid())
    assert told == [str(holder.pid)]


def test_the_lock_dies_with_its_holder_even_under_kill_9(lock_holder):
    folder, holder = lock_holder
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with output_lock(folder):  # nothing to clean by hand
        with output_lock(folder):  # re-entrant in one process
            pass


def test_writability_is_checked_before_anything_is_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(CodenasError, match="it is a file, not a folder") as e:
        check_writable(blocker / "sub" / "out")
    assert e.value.path == str(blocker)
    with pytest.raises(CodenasError, match="it is a file"):
        with output_lock(blocker / "out"):
            pass
    assert check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only-mode folder")
def test_a_folder_without_write_permission_is_refused(tmp_path):
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(CodenasError, match="no permission to write"):
            check_writable(tmp_path / "out")
    finally:
        os.chmod(tmp_path, 0o755)


def test_replace_folder_never_deletes_what_it_did_not_write(tmp_path):
    out = tmp_path / "hf"
    with replace_folder(out) as tmp:
        (tmp / "model.bin").write_text("1")
    with pytest.raises(CodenasError, match="not empty .*--overwrite"):
        with replace_folder(out) as tmp:
            (tmp / "model.bin").write_text("2")
    with replace_folder(out, overwrite=True) as tmp:  # an earlier output of the same writer
        (tmp / "model.bin").write_text("2")
    assert (out / "model.bin").read_text() == "2"
    (out / "notes.txt").write_text("mine")
    (out / "other_model").mkdir()
    with pytest.raises(CodenasError, match="does not write .*notes.txt, other_model"):
        with replace_folder(out, overwrite=True) as tmp:
            (tmp / "model.bin").write_text("3")
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.bin").read_text() == "2"


def test_leftovers_are_cleaned_and_a_half_swapped_folder_put_back(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    ckpt = out / "checkpoint_last"
    ckpt.mkdir()
    (ckpt / "w").write_text("step 4")
    os.replace(ckpt, out / ".checkpoint_last.abc12345.old")  # a kill between the renames...
    (out / ".checkpoint_last.xyz98765.tmp").mkdir()  # ...with the new copy still aside
    (out / ".metrics.jsonl.k2j4h5g6.tmp").write_text("torn")
    (out / ".hidden_but_mine").write_text("keep")
    (tmp_path / ".run.q1w2e3r4.tmp").mkdir()  # a swapped-in build of this folder, killed
    (tmp_path / ".other.q1w2e3r4.tmp").mkdir()  # not this folder's: left alone
    with output_lock(out):
        pass
    assert (ckpt / "w").read_text() == "step 4"
    assert sorted(p.name for p in out.iterdir()) == [".codenas.lock", ".hidden_but_mine", "checkpoint_last"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.q1w2e3r4.tmp", "run"]
    assert recover_directory(ckpt) == ckpt
