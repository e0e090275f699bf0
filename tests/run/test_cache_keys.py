"""The cache key of every stage covers the content of its inputs: editing an arch file between two `codenas run`
calls reruns pretraining and everything downstream, and an unchanged rerun is fully cached.

The stages' keys and the pipeline's decisions are the real ones; only the stage actions are stand-ins (each writes
a marker), so the test takes seconds instead of a real pretraining run (tests/run/test_end_to_end.py runs them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codenas.paths import configs_dir
from codenas.run import pipeline
from codenas.run.pipeline import run_pipeline


@pytest.fixture
def stand_in_actions(monkeypatch, tmp_path):
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path / "home"))  # no downloaded MBPP: benchmarks = mini only
    monkeypatch.delenv("CODENAS_MBPP", raising=False)
    ran: list[str] = []
    real_plan = pipeline.plan

    def plan(config, out, mbpp):
        stages = real_plan(config, out, mbpp)
        for stage in stages:
            def action(folder: Path, resume: bool, name: str = stage.name) -> None:
                ran.append(name)
                (folder / "output.txt").write_text(name)
            stage.action = action
        return stages

    monkeypatch.setattr(pipeline, "plan", plan)
    return ran


def _statuses(result: dict) -> dict[str, str]:
    return {name: s["status"] for name, s in result["stages"].items()}


def test_editing_the_arch_file_reruns_pretraining_and_everything_downstream(stand_in_actions, tmp_path):
    arch = tmp_path / "my_arch.json"
    arch.write_text((configs_dir() / "tiny.json").read_text())
    out = tmp_path / "run"
    run = dict(preset="tiny", out=out, overrides=[f"pretrain.arch={arch}"])

    first = run_pipeline(**run)
    assert set(_statuses(first).values()) == {"ran"}
    assert set(stand_in_actions) == set(first["stages"])

    stand_in_actions.clear()
    second = run_pipeline(**run)
    assert set(_statuses(second).values()) == {"cached"} and stand_in_actions == []

    spec = json.loads(arch.read_text())
    arch.write_text(json.dumps({**spec, "dropout": 0.1}))  # same name and path, new content
    third = run_pipeline(**run)
    rerun = [name for name, status in _statuses(third).items() if status == "ran"]
    assert rerun == ["pretrain", "lora", "eval/base/mini", "eval/lora/mini", "report"]
    assert _statuses(third)["data"] == _statuses(third)["corpus"] == "cached"
    assert stand_in_actions == rerun


def test_a_bad_arch_edit_fails_before_any_stage_runs(stand_in_actions, tmp_path):
    arch = tmp_path / "my_arch.json"
    arch.write_text((configs_dir() / "tiny.json").read_text())
    out = tmp_path / "run"
    run_pipeline(preset="tiny", out=out, overrides=[f"pretrain.arch={arch}"])
    stand_in_actions.clear()
    arch.write_text(json.dumps({**json.loads(arch.read_text()), "n_head": 3}))
    from codenas.io import CodenasError

    with pytest.raises(CodenasError, match="my_arch.json"):
        run_pipeline(preset="tiny", out=out, overrides=[f"pretrain.arch={arch}"])
    assert stand_in_actions == []


def test_the_corpus_sources_are_hashed_by_content(tmp_path):
    from codenas.corpus.sources import listing_digest, resolve_sources

    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    (root / "b.py").write_text("y = 2\n")
    before = listing_digest(resolve_sources([str(root)]))
    (root / "a.py").write_text("x = 1\n")  # rewritten with the same content: same digest
    assert listing_digest(resolve_sources([str(root)])) == before
    (root / "a.py").write_text("x = 3\n")  # same size, new content
    assert listing_digest(resolve_sources([str(root)])) != before


def test_editing_a_corpus_source_reruns_the_corpus_and_what_follows(stand_in_actions, tmp_path):
    root = tmp_path / "code"
    root.mkdir()
    (root / "a.py").write_text("def f():\n    return 1\n")
    run = dict(preset="tiny", out=tmp_path / "run", overrides=[f"corpus.sources=[{str(root)!r}]"])
    run_pipeline(**run)
    assert set(_statuses(run_pipeline(**run)).values()) == {"cached"}
    (root / "a.py").write_text("def f():\n    return 2\n")
    rerun = [name for name, status in _statuses(run_pipeline(**run)).items() if status == "ran"]
    assert rerun == ["corpus", "pretrain", "lora", "eval/base/mini", "eval/lora/mini", "report"]
