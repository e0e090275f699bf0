"""`data build` end to end: outputs, proofs, decontamination, counts, determinism, holdouts, missing MBPP.

The main build runs once per module on the real MBPP copy beside the checkout when present, else on the
24-row sample; the other builds use HumanEval alone or the sample to stay fast.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from codenas.cli import cli
from codenas.data.benchmarks import load_problems
from codenas.data.build import build_dataset, shuffle_split
from codenas.data.decontam import ngrams
from codenas.data.humaneval import MINI_IDS
from codenas.data.proof import NULL_BODY
from codenas.eval.execution import run_programs
from codenas.io import CodenasError, sha256_file
from codenas.records import program, read_records

from .conftest import REAL_MBPP, SAMPLE_MBPP, SHARED_MBPP

MBPP = SHARED_MBPP if REAL_MBPP else SAMPLE_MBPP
FILES = ("train.jsonl", "val.jsonl", "benchmarks/mini.jsonl", "benchmarks/mbpp-test.jsonl")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build shared by this module's tests, and by the pytest-xdist workers of one run (under a file lock)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # this run's folder, common to all workers
    out = shared / "codenas-data-build"
    with open(shared / "codenas-data-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "manifest.json").is_file():  # the manifest is written last
            build_dataset(mbpp=MBPP, out=out, seed=7, val_size=50)
    return out, json.loads((out / "manifest.json").read_text()), {name: read_records(out / name) for name in FILES}


def test_outputs_and_manifest_agree(built):
    out, manifest, records = built
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["seed"] == 7 and manifest["holdout"] == "mini"
    assert manifest["sizes"] == {name: len(recs) for name, recs in records.items()}
    assert manifest["outputs"] == {name: sha256_file(out / name) for name in FILES}
    assert manifest["inputs"]["mbpp"]["sha256"] == sha256_file(MBPP)
    assert len(records["val.jsonl"]) == 50 and len(records["train.jsonl"]) > 50
    assert [r.id for r in records["benchmarks/mini.jsonl"]] == list(MINI_IDS)
    assert not (out / "benchmarks" / "humaneval.jsonl").exists()


def test_no_benchmark_id_or_shared_13_gram_in_training(built):
    _, manifest, records = built
    bench = records["benchmarks/mini.jsonl"] + records["benchmarks/mbpp-test.jsonl"]
    training = records["train.jsonl"] + records["val.jsonl"]
    assert not {r.id for r in bench} & {r.id for r in training}
    assert all(r.meta.get("split") in (None, "validation", "train") for r in training)
    bench_grams = set().union(*(ngrams(r.prompt + r.solution) for r in bench))
    assert not [r.id for r in training if ngrams(r.prompt + r.solution) & bench_grams]
    assert manifest["dropped"]["contaminated"]  # MBPP's splits overlap, so some candidates are caught
    assert not set(manifest["dropped"]["contaminated"]) & {r.id for r in training}


def test_every_output_record_passes_its_proof(built):
    _, _, records = built
    everything = [r for recs in records.values() for r in recs]
    programs = [p for r in everything for p in (r.program(), r.program(NULL_BODY))]
    results = run_programs(programs, timeout=20, memory_mb=2048)
    assert [r.id for r, res in zip(everything, results[0::2], strict=True) if not res.passed] == []
    assert [r.id for r, res in zip(everything, results[1::2], strict=True) if res.passed] == []


def test_held_out_problems_have_differential_tests_that_their_reference_passes(built):
    out, manifest, records = built
    assert manifest["rules"]["diff_inputs"] == 30
    checked = []
    for name in ("mini", "mbpp-test"):
        recs = records[f"benchmarks/{name}.jsonl"]
        counts = manifest["diff_tests"]["benchmarks"][name]
        with_tests = [r for r in recs if "diff_tests" in r.meta]
        assert counts["problems"] == len(recs) and counts["with_diff_tests"] == len(with_tests)
        assert manifest["benchmarks"][name]["with_diff_tests"] == len(with_tests)
        inputs = [sum(line.startswith("assert _codenas_same(") for line in r.meta["diff_tests"].splitlines())
                  for r in with_tests]
        assert counts["inputs"] == sum(inputs) and all(1 <= n <= 30 for n in inputs)
        without = counts["no_literal_inputs"] + counts["none_kept"] + counts["unstable"]
        assert sorted(without) == sorted(r.id for r in recs if "diff_tests" not in r.meta)
        checked += with_tests
    assert manifest["diff_tests"]["benchmarks"]["mini"]["with_diff_tests"] == 20
    assert not [r.id for r in records["train.jsonl"] + records["val.jsonl"] if "diff_tests" in r.meta]
    mini = load_problems("mini", out)  # the eval commands read them from the data folder
    assert [r.id for r in mini] == list(MINI_IDS) and all("diff_tests" in r.meta for r in mini)
    results = run_programs([program(r.prompt, r.solution, r.meta["diff_tests"]) for r in checked], timeout=3.0,
                           memory_mb=1024)
    assert [r.id for r, res in zip(checked, results, strict=True) if not res.passed] == []


def test_counts_add_up_and_filter_holds(built):
    _, manifest, records = built
    for source, counts in manifest["counts"].items():
        drops = sum(counts[rule] for rule in manifest["dropped"])
        assert counts["candidates"] - drops == counts["train"] + counts["val"], source
        assert counts["train"] == sum(r.source == source for r in records["train.jsonl"])
    assert manifest["counts"]["humaneval"]["held_out"] == 20
    for r in records["train.jsonl"] + records["val.jsonl"]:
        if r.source == "mbpp":
            assert r.meta["solution_lines"] <= 30 and r.meta["complexity"] <= manifest["rules"]["max_complexity"]


@pytest.mark.skipif(not REAL_MBPP, reason="needs the full MBPP copy in ../shared")
def test_real_mbpp_pool_size(built):
    _, manifest, _ = built
    mbpp = manifest["counts"]["mbpp"]
    assert (mbpp["input"], mbpp["held_out"], mbpp["unused_prompt_split"], mbpp["candidates"]) == (974, 500, 10, 464)
    assert 300 <= mbpp["candidates"] - mbpp["unconvertible"] - mbpp["too_long"] - mbpp["too_complex"] <= 500
    assert 300 <= mbpp["train"] + mbpp["val"] <= 500


def test_shuffle_split_is_seeded_and_order_independent(built):
    _, _, records = built
    pool = records["train.jsonl"] + records["val.jsonl"]
    train, val = shuffle_split(pool, seed=7, val_size=50)
    assert (train, val) == (records["train.jsonl"], records["val.jsonl"])
    assert shuffle_split(pool[::-1], seed=7, val_size=50) == (train, val)
    assert shuffle_split(pool, seed=8, val_size=50)[1] != val
    with pytest.raises(CodenasError, match="val-size"):
        shuffle_split(pool, seed=7, val_size=len(pool))


def test_holdout_humaneval_then_humaneval_only_rebuild_is_deterministic(tmp_path):
    out = tmp_path / "a"
    manifest = build_dataset(mbpp=SAMPLE_MBPP, out=out, seed=3, val_size=5, holdout="humaneval")
    assert len(read_records(out / "benchmarks" / "humaneval.jsonl")) == 164
    assert not [r.id for r in read_records(out / "train.jsonl") + read_records(out / "val.jsonl")
                if r.source == "humaneval"]
    assert manifest["counts"]["humaneval"]["candidates"] == 0

    result = CliRunner().invoke(cli, ["data", "build", "--out", str(out), "--seed", "3", "--val-size", "5"])
    assert result.exit_code == 0, result.output
    assert "HumanEval only" in result.output and "failed proof" in result.output
    assert not (out / "benchmarks" / "humaneval.jsonl").exists()  # stale files of the earlier build are gone
    assert not (out / "benchmarks" / "mbpp-test.jsonl").exists()

    again = tmp_path / "b"
    build_dataset(mbpp=None, out=again, seed=3, val_size=5)
    names = ("train.jsonl", "val.jsonl", "benchmarks/mini.jsonl", "manifest.json")
    assert [(out / n).read_bytes() for n in names] == [(again / n).read_bytes() for n in names]
    assert json.loads((again / "manifest.json").read_text())["inputs"]["mbpp"] is None


def test_bad_arguments_are_reported():
    result = CliRunner().invoke(cli, ["data", "build", "--holdout", "all"])
    assert result.exit_code != 0 and "--holdout" in result.output
    with pytest.raises(CodenasError, match="holdout"):
        build_dataset(mbpp=None, out=SAMPLE_MBPP.parent, holdout="everything")
    with pytest.raises(CodenasError, match="does not exist"):
        build_dataset(mbpp=SAMPLE_MBPP.parent / "missing.jsonl", out=SAMPLE_MBPP.parent)


def test_reading_an_output_file_validates_every_line(built, tmp_path):
    out, _, _ = built
    lines = (out / "val.jsonl").read_text().splitlines(keepends=True)
    broken = json.loads(lines[2])
    del broken["tests"]
    bad = tmp_path / "val.jsonl"
    bad.write_text("".join(lines[:2]) + json.dumps(broken) + "\n" + "".join(lines[3:]))
    with pytest.raises(CodenasError, match=r"val.jsonl:3: record is missing field\(s\): tests"):
        read_records(bad)


def test_a_killed_rebuild_leaves_the_earlier_build_whole(tmp_path):
    out = tmp_path / "data"
    first = build_dataset(mbpp=None, out=out, seed=3, val_size=5)
    before = {name: (out / name).read_bytes() for name in ("train.jsonl", "val.jsonl", "manifest.json")}
    env = {**os.environ, "CODENAS_FAULT": "data-wrote-train.jsonl"}  # kill -9 once train.jsonl is written
    killed = subprocess.run([sys.executable, "-m", "codenas.cli", "-q", "data", "build", "--out", str(out),
                             "--seed", "4", "--val-size", "5"], env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert {name: (out / name).read_bytes() for name in before} == before  # the earlier build, whole
    assert [p.name for p in tmp_path.iterdir() if p.name != "data"]  # the killed build's staging folder...
    second = build_dataset(mbpp=None, out=out, seed=4, val_size=5)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # ...is removed by the next build
    assert second["seed"] == 4 and second["outputs"] != first["outputs"]
    train, val = read_records(out / "train.jsonl"), read_records(out / "val.jsonl")
    assert not {r.id for r in train} & {r.id for r in val}


def test_a_folder_mixing_two_builds_is_an_error_naming_the_file(tmp_path):
    build_dataset(mbpp=None, out=tmp_path / "a", seed=3, val_size=5)
    build_dataset(mbpp=None, out=tmp_path / "b", seed=4, val_size=5)
    shutil.copyfile(tmp_path / "b" / "train.jsonl", tmp_path / "a" / "train.jsonl")  # what a killed build left
    with pytest.raises(CodenasError, match="sha256 differs") as e:
        read_records(tmp_path / "a" / "train.jsonl")
    assert e.value.path == str(tmp_path / "a" / "train.jsonl")
    read_records(tmp_path / "a" / "val.jsonl")  # the files that still match read fine
    (tmp_path / "a" / "notes.txt").write_text("mine")
    with pytest.raises(CodenasError, match="notes.txt"):  # replaced as a whole: never with a user's file in it
        build_dataset(mbpp=None, out=tmp_path / "a", seed=3, val_size=5)
    assert (tmp_path / "a" / "notes.txt").read_text() == "mine"
