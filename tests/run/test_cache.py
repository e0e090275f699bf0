"""The stage cache: keys, .started/.done markers, stages.json, and the pipeline's skip/resume/rerun decisions
(with stand-in stages, so every decision is checked in milliseconds; tests/run/test_end_to_end.py runs the real ones).
"""

from __future__ import annotations

import pytest

from codenas.run import cache, pipeline
from codenas.run.cache import StageLog, begin, finish, is_done, read_stages, stage_key
from codenas.run.stages import Stage


def test_stage_key_depends_on_every_input():
    key = stage_key("pretrain", {"lr": 1e-3}, {"tokenizer": "abc"}, {"stdlib": "x"})
    assert key == stage_key("pretrain", {"lr": 1e-3}, {"tokenizer": "abc"}, {"stdlib": "x"})
    assert len({key, stage_key("sft", {"lr": 1e-3}, {"tokenizer": "abc"}, {"stdlib": "x"}),
                stage_key("pretrain", {"lr": 2e-3}, {"tokenizer": "abc"}, {"stdlib": "x"}),
                stage_key("pretrain", {"lr": 1e-3}, {"tokenizer": "abd"}, {"stdlib": "x"}),
                stage_key("pretrain", {"lr": 1e-3}, {"tokenizer": "abc"}, {"stdlib": "y"})}) == 5


def test_begin_resumes_same_key_and_clears_other_key(tmp_path):
    folder = tmp_path / "stage"
    assert begin(folder, "k1") is False
    (folder / "partial.bin").write_text("half")
    assert begin(folder, "k1") is True  # interrupted run of the same key: keep its files
    assert (folder / "partial.bin").is_file()
    assert begin(folder, "k2") is False  # another key: start clean
    assert not (folder / "partial.bin").exists()
    assert not is_done(folder, "k2")
    finish(folder, "k2")
    assert is_done(folder, "k2") and not is_done(folder, "k1")


def test_stage_log_keeps_wall_time_of_cached_stage_and_run_order(tmp_path):
    path = tmp_path / "stages.json"
    log = StageLog(path)
    log.record("b", "kb", "ran", 2.5)
    log.record("a", "ka", "ran", 1.0)
    log = StageLog(path)
    log.keep_only(["b", "a"])
    log.record("b", "kb", "cached")
    log.record("a", "other", "cached")
    stages = read_stages(path)
    assert list(stages) == ["b", "a"]
    assert stages["b"]["wall_s"] == 2.5 and stages["b"]["status"] == "cached"
    assert stages["a"]["wall_s"] is None  # a different key: the old wall time is not this output's


class _Recorder:
    """Stand-in stages: each appends (name, resume) to ``calls``; ``fail_once`` interrupts one stage once."""

    def __init__(self, fail_once: str | None = None):
        self.calls: list[tuple[str, bool]] = []
        self.fail_once = fail_once

    def plan(self, config, out, mbpp):
        def make(name, upstream=()):
            def action(folder, resume):
                self.calls.append((name, resume))
                (folder / "output.txt").write_text(name)
                if name == self.fail_once:
                    self.fail_once = None
                    raise KeyboardInterrupt
            return Stage(name, out / name, action, {"value": config[name.split("/")[0]]}, tuple(upstream))

        return [make("data"), make("tokenizer"), make("pretrain", ["tokenizer"]),
                make("eval/base/mini", ["data", "pretrain"])]


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    def run(recorder, overrides):
        monkeypatch.setattr(pipeline, "plan", recorder.plan)
        monkeypatch.setattr(pipeline, "load_run_config", lambda preset, config_file, overrides: {
            "data": 1, "tokenizer": 1, "pretrain": 1, "eval": 1, **dict(o.split("=") for o in overrides)})
        monkeypatch.setattr(pipeline, "dumps_toml", str)
        return pipeline.run_pipeline(out=tmp_path / "run", overrides=overrides)

    return run


def test_second_run_is_all_cached(fake_run):
    first = _Recorder()
    fake_run(first, [])
    assert [name for name, _ in first.calls] == ["data", "tokenizer", "pretrain", "eval/base/mini"]
    second = _Recorder()
    result = fake_run(second, [])
    assert second.calls == []
    assert {s["status"] for s in result["stages"].values()} == {"cached"}


def test_changed_config_reruns_the_stage_and_downstream_only(fake_run):
    fake_run(_Recorder(), [])
    again = _Recorder()
    result = fake_run(again, ["pretrain=2"])
    assert [name for name, _ in again.calls] == ["pretrain", "eval/base/mini"]
    assert [result["stages"][n]["status"] for n in ("data", "tokenizer")] == ["cached", "cached"]


def test_interrupted_stage_resumes_in_place(fake_run, tmp_path):
    interrupted = _Recorder(fail_once="pretrain")
    with pytest.raises(KeyboardInterrupt):
        fake_run(interrupted, [])
    assert not (tmp_path / "run" / "pretrain" / ".done").exists()
    rerun = _Recorder()
    result = fake_run(rerun, [])
    assert rerun.calls == [("pretrain", True), ("eval/base/mini", False)]
    assert result["stages"]["pretrain"]["status"] == "resumed"
    assert result["stages"]["data"]["status"] == "cached"


def test_cache_markers_hold_the_key(fake_run, tmp_path):
    result = fake_run(_Recorder(), [])
    for name, info in result["stages"].items():
        assert cache.is_done(tmp_path / "run" / name, info["key"])


def test_stage_log_lists_a_stage_new_to_the_run_in_run_order(tmp_path):
    log = StageLog(tmp_path / "stages.json")
    log.keep_only(["a", "b", "report"])
    log.record("a", "ka", "ran", 1.0)
    log.record("report", "kr", "ran", 1.0)
    log = StageLog(tmp_path / "stages.json")
    log.keep_only(["a", "b", "c", "report"])  # b and c are new, e.g. a benchmark that was skipped before
    for name in ("a", "b", "c", "report"):
        log.record(name, "k" + name, "ran", 1.0)
    assert list(read_stages(tmp_path / "stages.json")) == ["a", "b", "c", "report"]


def test_a_stage_killed_between_checkpoint_renames_resumes_instead_of_restarting(tmp_path):
    from codenas.run.stages import _fresh_or_resumable

    (tmp_path / ".checkpoint_last.ab12cd34.old").mkdir()  # the complete checkpoint, moved aside by the kill
    (tmp_path / "metrics.jsonl").write_text('{"step": 10}\n')
    assert _fresh_or_resumable(tmp_path, resume=True) == {"resume": True, "overwrite": False}
    assert (tmp_path / "checkpoint_last").is_dir() and (tmp_path / "metrics.jsonl").is_file()
    assert _fresh_or_resumable(tmp_path, resume=False) == {"resume": False, "overwrite": True}
