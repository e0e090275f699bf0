"""The stage plan: the improve stage runs after fine-tuning when improve.rounds > 0, and its model is evaluated on
every benchmark like the others."""

from __future__ import annotations

import pytest

from codenas.run.config import load_run_config
from codenas.run.stages import plan


@pytest.fixture(autouse=True)
def _no_mbpp(monkeypatch, tmp_path):
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path / "home"))  # no downloaded MBPP: benchmarks = mini only
    monkeypatch.delenv("CODENAS_MBPP", raising=False)


def test_improve_is_off_in_tiny_and_on_in_seed():
    assert load_run_config("tiny")["improve"]["rounds"] == 0
    assert load_run_config("seed")["improve"]["rounds"] > 0


def test_improve_stage_follows_fine_tuning_and_is_evaluated(tmp_path):
    names = [s.name for s in plan(load_run_config("tiny"), tmp_path, None)]
    assert "improve" not in names and not any(n.startswith("eval/improve/") for n in names)

    stages = {s.name: s for s in plan(load_run_config("tiny", overrides=["improve.rounds=2"]), tmp_path, None)}
    names = list(stages)
    assert names.index("lora") < names.index("improve") < names.index("eval/improve/mini") < names.index("report")
    improve = stages["improve"]
    assert improve.upstream == ("data", "lora") and improve.folder == tmp_path / "improve"
    assert improve.params["rounds"] == 2 and improve.params["finetune"]["lr"] == 1e-3
    assert stages["eval/improve/mini"].upstream == ("data", "improve")

    sft_only = plan(load_run_config("tiny", overrides=["improve.rounds=1", "finetune.method=\"sft\""]), tmp_path, None)
    assert next(s for s in sft_only if s.name == "improve").upstream == ("data", "sft")


def test_benchmarks_are_checked_against_the_registry(tmp_path, monkeypatch, capsys):
    """The settings refuse a name the registry does not let a run evaluate; the plan refuses a benchmark
    data.holdout leaves in training, and skips one built from MBPP when there is no MBPP file."""
    import dataclasses

    from codenas.benchmarks import BENCHMARKS
    from codenas.io import CodenasError

    with pytest.raises(CodenasError, match="must hold only values that must be one of mini, mbpp-test, humaneval"):
        load_run_config("tiny", overrides=['eval.benchmarks=["humaneval+"]'])
    with pytest.raises(CodenasError, match="humaneval is only held out with data.holdout = \"humaneval\""):
        plan(load_run_config("tiny", overrides=['eval.benchmarks=["humaneval"]']), tmp_path, None)
    config = load_run_config("tiny", overrides=['eval.benchmarks=["humaneval", "mbpp-test"]',
                                                'data.holdout="humaneval"'])
    names = [s.name for s in plan(config, tmp_path, None)]
    assert "eval/base/humaneval" in names and not any(n.endswith("/mbpp-test") for n in names)
    assert "skipping mbpp-test: no MBPP file" in capsys.readouterr().err

    # the rules come from each entry, not from the benchmark's name
    monkeypatch.setitem(BENCHMARKS, "humaneval", dataclasses.replace(BENCHMARKS["humaneval"], needs_mbpp=True))
    monkeypatch.setitem(BENCHMARKS, "mini", dataclasses.replace(BENCHMARKS["mini"], held_out_with=("humaneval",)))
    names = [s.name for s in plan(config, tmp_path, None)]
    assert not any(n.startswith("eval/") for n in names)
    with pytest.raises(CodenasError, match="mini is only held out with data.holdout"):
        plan(load_run_config("tiny", overrides=['eval.benchmarks=["mini"]']), tmp_path, None)
