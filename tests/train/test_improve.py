"""Expert iteration (`train improve`): exactly the passing samples are kept, a round with none ends cleanly,
held-out problems are refused from the pool, and a run resumed after a kill between rounds ends with the same
weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from codenas.eval import generate
from codenas.eval.scoring import read_results
from codenas.io import CodenasError, read_json, read_jsonl
from codenas.model.checkpoint import load_checkpoint
from codenas.records import Record, read_records, write_records
from codenas.settings import FINETUNE_TRAIN, ImproveSettings, JudgeSettings, SamplingSettings
from codenas.train import improve as improve_mod
from codenas.train.improve import build_pool, improve, keep_passing
from tests.train.finetune_fixtures import make_base, make_records

# A problem whose tests accept any function (its prompt alone is a complete function), one no function passes.
ANYTHING = Record("p_anything", "test", 'def anything(x):\n    """Return anything at all."""\n', "    return x\n",
                  "assert callable(anything)", "anything")
NEVER = Record("p_never", "test", 'def never(x):\n    """Nothing passes."""\n', "    return x\n",
               "raise AssertionError('no function passes')", "never")
# What the "model" writes for the planted problem: two distinct bodies, a duplicate of the first (up to trailing
# spaces), text with no body (an empty completion, which passes but is not kept) and a third body over the cap.
SCRIPT = {ANYTHING.prompt: ["    return 1\n", "    return 2\n", "    return 1   \n", "@@ not code", "    return 3\n"],
          NEVER.prompt: ["    return 1\n"] * 5}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("improve")
    make_base(folder)
    make_records(folder)  # train.jsonl (replay) and val.jsonl (the first two problems)
    return folder


@pytest.fixture
def scripted(monkeypatch):
    """The sampler runs as usual; the texts of the pool's planted problems are replaced by ``SCRIPT``'s."""
    real = generate.stream

    def stream(model, tokenizer, prompts, n, **kwargs):
        for i, j, text in real(model, tokenizer, prompts, n=n, **kwargs):
            yield i, j, SCRIPT[prompts[i]][j] if prompts[i] in SCRIPT else text

    monkeypatch.setattr(generate, "stream", stream)


def _pool(folder: Path, *records: Record) -> Path:
    path = folder / "pool.in.jsonl"
    write_records(path, list(records))
    return path


def _run(workdir: Path, out: Path, pool: Path, **changes):
    settings = ImproveSettings(**{"rounds": 1, "samples": 5, "max_new_tokens": 8, "cap": 2, "steps": 2,
                                  "lr": 1e-3, "replay": 0.5, **changes})
    return improve(init_checkpoint=str(workdir / "base"), pool=[pool], out=out, data_dir=workdir,
                   settings=settings, training=dataclasses.replace(FINETUNE_TRAIN, batch_size=2, dtype="fp32",
                                                                   device="cpu"),
                   val_sampling=SamplingSettings(samples=1, max_new_tokens=8), judge=JudgeSettings(workers=1))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def test_a_round_keeps_exactly_the_passing_samples_and_trains_on_them(workdir, tmp_path, scripted):
    out = tmp_path / "out"
    result = _run(workdir, out, _pool(tmp_path, ANYTHING, NEVER))
    results = read_results(out / "round1" / "sample")
    assert len(results) == 10
    passing = [r["completion"] for r in results if r["passed"]]
    assert len(passing) == 5 and all(r["task_id"] == "p_anything" for r in results if r["passed"])
    assert not any(r["passed"] for r in results if r["task_id"] == "p_never")
    kept = read_records(out / "round1" / "kept.jsonl")
    # the passing bodies, in sample order, without the duplicate, the empty one and the one over the cap of 2
    assert [k.solution for k in kept] == ["    return 1\n", "    return 2\n"]
    assert all(k.solution in passing for k in kept)
    assert {k.prompt for k in kept} == {ANYTHING.prompt} and {k.tests for k in kept} == {ANYTHING.tests}
    train = read_records(out / "round1" / "train.jsonl")
    replay = train[len(kept):]
    assert train[:len(kept)] == kept and len(replay) == 2  # replay share 0.5: as many replay records as kept
    assert {r.id for r in replay} <= {r.id for r in read_records(workdir / "train.jsonl")}

    rows = [row for _, row in read_jsonl(out / "rounds.jsonl")]
    assert [row["round"] for row in rows] == [0, 1]
    one = rows[1]
    assert set(one) == set(improve_mod.ROW_FIELDS)
    assert (one["pool_problems"], one["samples"], one["solved"], one["kept"], one["new_problems"],
            one["replay"], one["trained"]) == (2, 5, 1, 2, 1, 2, True)
    assert one["pass_at_k"] == {"pass@1": 0.5, "pass@5": 0.5}
    assert one["train_loss"] > 0 and one["val_loss"] > 0 and 0 <= one["val_pass@1"] <= 1 and one["wall_s"] > 0
    assert [row["id"] for _, row in read_jsonl(out / "pool.jsonl")] == ["p_anything", "p_never"]
    # the round trained: its model is not the base; the best round's model is the one kept
    trained = _weights(out / one["model"])
    assert any(not torch.equal(trained[k], v) for k, v in _weights(workdir / "base").items())
    best = read_json(out / "best.json")
    assert result["best_round"] == best["round"] in (0, 1)
    expected = _weights(workdir / "base") if best["round"] == 0 else trained
    kept_best = _weights(out / "checkpoint_best")
    assert all(torch.equal(kept_best[k], v) for k, v in expected.items())


def test_keep_passing_counts_every_rule():
    rows = [{"task_id": "a", "completion": c, "passed": p} for c, p in
            [("    return 1\n", True), ("    return 1\n", True), ("", True), ("    return 9\n", False)]]
    kept, counts = keep_passing([Record("a", "t", "def a():\n", "", "pass", "a")], rows, 4, 5, 3)
    assert [k.solution for k in kept] == ["    return 1\n"] and kept[0].id == "a@r3s0"
    assert {k: counts[k] for k in ("passed", "empty", "duplicates", "capped", "kept", "solved")} == \
        {"passed": 3, "empty": 1, "duplicates": 1, "capped": 0, "kept": 1, "solved": 1}


def test_a_round_with_no_passing_sample_ends_cleanly(workdir, tmp_path, capsys):
    out = tmp_path / "out"
    result = _run(workdir, out, _pool(tmp_path, NEVER), samples=2)
    assert "round 1: no sample passed (0 of 2 passed, pool pass@2 0.0%): nothing to train on" in \
        capsys.readouterr().err
    rows = result["rows"]
    assert rows[1]["trained"] is False and rows[1]["kept"] == 0 and rows[1]["solved"] == 0
    assert rows[1]["model"] == rows[0]["model"] and rows[1]["val_loss"] == rows[0]["val_loss"]
    assert not (out / "round1" / "train").exists() and read_records(out / "round1" / "kept.jsonl") == []
    assert result["best_round"] == 0  # nothing changed: the starting model is kept
    base, best = _weights(workdir / "base"), _weights(out / "checkpoint_best")
    assert all(torch.equal(best[k], v) for k, v in base.items())


def test_held_out_problems_are_refused_naming_them(workdir, tmp_path):
    val = read_records(workdir / "val.jsonl")[0]
    bench = tmp_path / "data"
    (bench / "benchmarks").mkdir(parents=True)
    write_records(bench / "benchmarks" / "mbpp-test.jsonl", [dataclasses.replace(ANYTHING, id="bench_1")])
    write_records(bench / "val.jsonl", [val])
    mini = dataclasses.replace(NEVER, id="he_7")
    mbpp_test = dataclasses.replace(NEVER, id="mbpp_11", prompt="def f():\n")
    same_prompt = dataclasses.replace(ANYTHING, id="renamed")  # bench_1's prompt under another id
    pool = _pool(tmp_path, NEVER, mini, mbpp_test, dataclasses.replace(val, id=val.id), same_prompt)
    with pytest.raises(CodenasError) as e:
        build_pool([pool], bench, bench / "val.jsonl")
    message = str(e.value)
    for name, problem in (("mini", "he_7"), ("mbpp-test", "mbpp_11"), ("val.jsonl", val.id),
                          ("mbpp-test", "renamed")):
        assert name in message and problem in message
    assert "p_never" not in message
    # the command refuses before it loads a model or writes a file
    with pytest.raises(CodenasError, match="held-out problems"):
        improve(init_checkpoint=str(workdir / "base"), pool=[pool], out=tmp_path / "out", data_dir=bench,
                replay_path=workdir / "train.jsonl", settings=ImproveSettings(rounds=1))
    assert not (tmp_path / "out" / "pool.jsonl").exists()


def test_unproven_records_are_not_in_the_pool(tmp_path):
    pool = _pool(tmp_path, dataclasses.replace(ANYTHING, proven=True), dataclasses.replace(NEVER, proven=False))
    problems, counts = build_pool([pool], None, None)
    assert [p.record.id for p in problems] == ["p_anything"] and counts["unproven"] == 1


@pytest.mark.slow
def test_resuming_after_a_kill_between_rounds_gives_identical_weights(workdir, tmp_path, scripted, monkeypatch):
    pool = _pool(tmp_path, ANYTHING, NEVER)
    straight = _run(workdir, tmp_path / "straight", pool, rounds=2, samples=5)

    real = improve_mod._run_round

    def killed_at_round_two(r, *args, **kwargs):
        if r == 2:
            raise KeyboardInterrupt
        return real(r, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(improve_mod, "_run_round", killed_at_round_two)
        with pytest.raises(KeyboardInterrupt):
            _run(workdir, tmp_path / "resumed", pool, rounds=2, samples=5)
    assert (tmp_path / "resumed" / "round1" / "round.json").is_file()
    assert not (tmp_path / "resumed" / "round2").exists()
    resumed = _run(workdir, tmp_path / "resumed", pool, rounds=2, samples=5)
    assert [r["trained"] for r in straight["rows"]] == [False, True, True]
    a = _weights(tmp_path / "straight" / straight["rows"][2]["model"])
    b = _weights(tmp_path / "resumed" / resumed["rows"][2]["model"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = {"wall_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in straight["rows"]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in resumed["rows"]]
    with pytest.raises(CodenasError, match="other settings"):
        _run(workdir, tmp_path / "resumed", pool, rounds=2, samples=5, lr=5e-4)


def test_the_command_takes_fine_tuning_settings_from_the_config_file(workdir, tmp_path):
    from click.testing import CliRunner

    from codenas.cli import cli

    config = tmp_path / "run.toml"
    config.write_text("[finetune]\nbatch_size = 2\ndtype = \"fp32\"\ndevice = \"cpu\"\neval_max_new_tokens = 8\n"
                      "eval_workers = 1\n\n[improve]\nsamples = 2\nmax_new_tokens = 8\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["-q", "train", "improve", "--init-checkpoint", str(workdir / "base"), "--pool",
                                      str(_pool(tmp_path, NEVER)), "--data-dir", str(workdir), "--rounds", "1",
                                      "--out", str(out), "--config", str(config), "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert "best: round 0 -> " in result.output and "expert iteration" in result.output
    recorded = read_json(out / "improve.json")
    assert recorded["training"]["batch_size"] == 2 and recorded["val_sampling"]["max_new_tokens"] == 8
    assert recorded["settings"]["samples"] == 2 and recorded["settings"]["steps"] == 3  # the file, then the flag
    assert [row["round"] for _, row in read_jsonl(out / "rounds.jsonl")] == [0, 1]
