"""`codenas run --preset tiny`, reduced by overrides, through the REAL stages: data build (../shared MBPP when the
checkout sits beside it, else HumanEval only), tokenizer, pretrain, LoRA, eval, report; then a second run that is a
cache hit for every stage, and a third with a changed eval setting that reruns only the evaluations and the report.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from codenas.cli import cli
from codenas.run.cache import read_stages
from codenas.run.report import SECTIONS

MBPP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"

REDUCED = [
    "tokenizer.vocab_size=512", "tokenizer.max_files=20",
    "pretrain.max_steps=4", "pretrain.eval_interval=2", "pretrain.eval_batches=1", "pretrain.batch_size=4",
    "corpus.max_files=20", "corpus.val_fraction=0.2", "corpus.workers=1", "corpus.tasks=2",
    "pretrain.warmup_steps=1", "pretrain.log_interval=1",
    "finetune.max_steps=2", "finetune.eval_interval=1", "finetune.eval_problems=2", "finetune.batch_size=4",
    "finetune.warmup_steps=1",
    "eval.limit=3", "eval.max_new_tokens=16", "eval.ks=[1]",
]


def _run(out: Path, *overrides: str) -> dict[str, dict]:
    args = ["--quiet", "run", "--preset", "tiny", "--out", str(out)]
    if MBPP.is_file():
        args += ["--mbpp", str(MBPP)]
    result = CliRunner().invoke(cli, args + REDUCED + list(overrides))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"report: {out / 'report.md'}" in result.output
    return read_stages(out / "stages.json")


def _done_times(out: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob(".done")}


@pytest.mark.slow
def test_tiny_preset_end_to_end_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path / "home"))  # no downloaded MBPP, a fresh corpus cache
    monkeypatch.delenv("CODENAS_MBPP", raising=False)
    out = tmp_path / "run"
    benchmarks = ["mini", "mbpp-test"] if MBPP.is_file() else ["mini"]
    evals = [f"eval/{model}/{bench}" for bench in benchmarks for model in ("base", "lora")]

    first = _run(out)
    assert list(first) == ["data", "tokenizer", "corpus", "pretrain", "lora", *evals, "report"]
    assert (out / "corpus" / "built" / "manifest.json").is_file()
    assert all(s["status"] == "ran" and s["wall_s"] > 0 for s in first.values())
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    for section in SECTIONS:
        assert f"## {section}\n" in md and f"<h2>{section}</h2>" in html
    for bench in benchmarks:
        assert f"| {bench} | base | 3 |" in md and f"| {bench} | lora | 3 |" in md
    assert {p.name for p in (out / "plots").glob("*.png")} == {"loss_curves.png", "passk.png", "pass1_vs_step.png"}
    assert (out / "config.resolved.toml").read_text().count("max_steps = 4") == 1

    done = _done_times(out)
    second = _run(out)
    assert {name: s["status"] for name, s in second.items()} == {name: "cached" for name in first}
    assert {name: s["key"] for name, s in second.items()} == {name: s["key"] for name, s in first.items()}
    assert {name: s["wall_s"] for name, s in second.items()} == {name: s["wall_s"] for name, s in first.items()}
    assert _done_times(out) == done  # nothing was re-executed

    third = _run(out, "eval.limit=2")
    rerun = [name for name, s in third.items() if s["status"] == "ran"]
    assert rerun == [*evals, "report"]
    assert f"| {benchmarks[0]} | lora | 2 |" in (out / "report.md").read_text()
