"""`codenas run --preset tiny`, reduced by overrides, through the REAL stages: data build (HumanEval only first,
so mbpp-test is skipped with a note), corpus (with its tokenizer), pretrain, LoRA, eval, report; then a second run
that is a cache hit for every stage, a third with a changed eval setting that reruns only the evaluations and the
report, and (when the checkout sits beside ../shared's MBPP) a fourth with MBPP that reruns only what MBPP changes.

The first run's console is not a terminal: it must show a compact training line per log_interval.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from codenas.cli import cli
from codenas.eval.scoring import read_results, read_summary
from codenas.eval.verdicts import VERDICTS
from codenas.io import read_json
from codenas.run.cache import read_stages
from codenas.run.stages import RESULT

from .test_report import SECTIONS

MBPP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"

REDUCED = [
    "tokenizer.vocab_size=512",
    "pretrain.max_steps=4", "pretrain.eval_interval=2", "pretrain.eval_batches=1", "pretrain.batch_size=4",
    "corpus.max_files=20", "corpus.val_fraction=0.2", "corpus.workers=1", "corpus.tasks=2",
    "pretrain.warmup_steps=1", "pretrain.log_interval=1",
    "finetune.max_steps=2", "finetune.eval_interval=1", "finetune.eval_problems=2", "finetune.batch_size=4",
    "finetune.warmup_steps=1",
    "eval.limit=3", "eval.max_new_tokens=16", "eval.ks=[1, 10]",
]
TRAIN_LINE = re.compile(r"^(pretrain|lora) step (\d+)/(\d+) \| loss \d+\.\d+ \| lr [\d.e+-]+ \| [\d,]+ tok/s \| "
                        r"ETA .+$", re.M)


def _run(out: Path, *overrides: str, mbpp: bool = False, quiet: bool = True) -> tuple[dict[str, dict], str]:
    args = (["--quiet"] if quiet else []) + ["run", "--preset", "tiny", "--out", str(out)]
    if mbpp:
        args += ["--mbpp", str(MBPP)]
    result = CliRunner().invoke(cli, args + REDUCED + list(overrides))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"report: {out / 'report.md'}" in result.output
    return read_stages(out / "stages.json"), result.output


def _done_times(out: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob(".done")}


@pytest.mark.slow
def test_tiny_preset_end_to_end_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path / "home"))  # no downloaded MBPP, a fresh corpus cache
    monkeypatch.delenv("CODENAS_MBPP", raising=False)
    out = tmp_path / "run"
    evals = [f"eval/{model}/mini" for model in ("base", "lora")]

    first, console = _run(out, quiet=False)
    assert list(first) == ["data", "corpus", "pretrain", "lora", *evals, "report"]
    manifest = read_json(out / "corpus" / "built" / "manifest.json")
    assert manifest["tokenizer"]["trained_here"] and manifest["tokenizer"]["vocab_size"] <= 512
    checkpoint_tokenizer = out / "pretrain" / "checkpoint_last" / "tokenizer.json"
    assert checkpoint_tokenizer.read_bytes() == (out / "corpus" / "built" / "tokenizer.json").read_bytes()
    assert manifest["documents"]["val"] >= 1 and "corpus: split: " in console
    assert all(s["status"] == "ran" and s["wall_s"] > 0 for s in first.values())
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    for section in SECTIONS:
        assert f"## {section}\n" in md and f"<h2>{section}</h2>" in html
    assert {p.name for p in (out / "plots").glob("*.png")} == {"loss_curves.png", "passk.png", "pass1_vs_step.png",
                                                                "verdicts.png"}
    assert (out / "config.resolved.toml").read_text().count("max_steps = 4") == 1

    # Summary first: what was trained (with its parameter count), the headline table, the skipped benchmark.
    summary = md[md.index("## Summary"):md.index("## What the models wrote")]
    params = read_json(out / "pretrain" / RESULT)["params"]
    assert f"| pretrain | next-token prediction on the code corpus | {params:,} (all) | 4 |" in summary
    assert re.search(r"A GPT of \d\.\d\dM parameters \(tiny_modern: \d+ layers", summary)
    assert "| mini | 20 HumanEval problems held out of training" in summary and "| 3 of 20 | 1 |" in summary
    assert "**mbpp-test was skipped**: no MBPP file was found" in summary and "--mbpp PATH" in summary
    assert "pass@10 cannot be measured" in summary
    assert "Subsets: eval.limit = 3" in summary

    # Verdict classes: one per scored sample, adding up, in results.jsonl, summary.json and the report.
    for model in ("base", "lora"):
        folder = out / "eval" / model / "mini"
        rows, scored = read_results(folder), read_summary(folder)
        assert len(rows) == scored["n_samples"] == 3 and all(r["verdict"] in VERDICTS for r in rows)
        assert sum(scored["verdicts"].values()) == scored["n_samples"]
        # mini comes from the data stage with its differential tests: every row says whether it passed them too
        assert all(r["diff_passed"] is (False if not r["passed"] else r["diff_passed"]) for r in rows)
        assert scored["diff_problems"] == 3 and "pass@1" in scored["diff_pass_at_k"]
        assert scored["verdicts"] == {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
        cells = " | ".join(f"{scored['verdicts'][v]} ({100 * scored['verdicts'][v] / 3:.1f}%)" for v in VERDICTS)
        assert f"| mini | {model} | 3 | {100 * scored['parse_rate']:.1f}% | {cells} |" in md
        # A sample post-processing cut to nothing keeps the model's raw text and the reason; empty means no text.
        assert all(r["raw"].strip() and r["cut_reason"] for r in rows if r["verdict"] == "cut")
        assert all("raw" not in r for r in rows if r["verdict"] != "cut")
        # Sample completions: the prompt's tail, then what the model wrote (raw when it was cut), with the verdict.
        assert f"### mini, {model}\n" in md and f"# ---- written by {model}" in md
    assert "<pre><code>" in html and "written by lora" in html

    # The console was not a terminal: one compact training line per log_interval, with tokens/s and ETA.
    lines = TRAIN_LINE.findall(console)
    assert [(stage, int(step)) for stage, step, _ in lines] == [("pretrain", s) for s in (1, 2, 3, 4)] + \
        [("lora", s) for s in (1, 2)]
    assert "val_select" not in console and "pretrain step 2: val loss " in console
    assert "note: skipping mbpp-test: no MBPP file was found" in console

    done = _done_times(out)
    second, _ = _run(out)
    assert {name: s["status"] for name, s in second.items()} == {name: "cached" for name in first}
    assert {name: s["key"] for name, s in second.items()} == {name: s["key"] for name, s in first.items()}
    assert {name: s["wall_s"] for name, s in second.items()} == {name: s["wall_s"] for name, s in first.items()}
    assert _done_times(out) == done  # nothing was re-executed

    third, _ = _run(out, "eval.limit=2")
    rerun = [name for name, s in third.items() if s["status"] == "ran"]
    assert rerun == [*evals, "report"]
    assert "| mini | lora | 2 of 20 | 1 |" in (out / "report.md").read_text()

    if not MBPP.is_file():
        return
    fourth, _ = _run(out, "eval.limit=2", mbpp=True)
    status = {name: s["status"] for name, s in fourth.items()}
    # MBPP changes the data, the corpus (decontamination) and what follows
    assert [n for n, s in status.items() if s == "ran"] == [
        "data", "corpus", "pretrain", "lora", *evals, "eval/base/mbpp-test", "eval/lora/mbpp-test", "report"]
    md = (out / "report.md").read_text()
    assert re.search(r"\| mbpp-test \| MBPP's test split \(task ids 11-510\), held out of training \| 2 of \d{3} \|",
                     md)
    assert "was skipped" not in md


MINE = ["mine.enabled=true", "mine.max_files=60", "mine.workers=1", "mine.tasks=2", "finetune.mined_share=0.5",
        'eval.benchmarks=["mini"]']


@pytest.mark.slow
def test_tiny_preset_with_the_mine_stage(tmp_path, monkeypatch):
    """The run mines 60 stdlib files and fine-tunes on train.jsonl plus the mined records; val stays the data
    stage's. A changed mix reruns fine-tuning, not mining."""
    from codenas.records import read_records
    from codenas.run.config import load_run_config
    from codenas.run.pipeline import stage_keys
    from codenas.run.stages import mined_folder, plan

    monkeypatch.setenv("CODENAS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CODENAS_MBPP", raising=False)
    out = tmp_path / "run"
    stages, _ = _run(out, *MINE)
    assert list(stages) == ["data", "corpus", "mine", "pretrain", "lora", "eval/base/mini",
                            "eval/lora/mini", "report"]
    assert all(s["status"] == "ran" for s in stages.values())
    mined = read_records(mined_folder(out) / "records.jsonl")
    assert mined and all(r.source == "mined" and r.proven is not None for r in mined)
    assert read_json(out / "mine" / RESULT)["records"] == len(mined)

    result = read_json(out / "lora" / RESULT)
    train_file, mined_file = result["train_files"]
    n_train = len(read_records(out / "data" / "train.jsonl"))
    assert train_file == {"path": str((out / "data" / "train.jsonl").resolve()), "records": n_train}
    assert mined_file["from"] == str((mined_folder(out) / "records.jsonl").resolve())
    assert mined_file["records"] == min(len(mined), n_train) > 0  # a share of 0.5: as many as train.jsonl holds
    assert {r.id for r in read_records(mined_file["path"])} <= {r.id for r in mined}
    assert len(read_records(mined_file["path"])) == mined_file["records"]
    assert read_json(out / "lora" / "finetune.json")["val_path"] == str((out / "data" / "val.jsonl").resolve())

    keys = {share: stage_keys(plan(load_run_config("tiny", None, REDUCED + MINE + [f"finetune.mined_share={share}"]),
                                   out, None)) for share in (0.5, 0.25)}
    assert keys[0.5]["mine"] == keys[0.25]["mine"] and keys[0.5]["lora"] != keys[0.25]["lora"]
    assert keys[0.5] == {name: s["key"] for name, s in stages.items()}


def test_a_mined_share_needs_the_mine_stage(tmp_path):
    from codenas.io import CodenasError
    from codenas.run.config import load_run_config
    from codenas.run.stages import plan

    with pytest.raises(CodenasError, match="finetune.mined_share > 0 needs the mine stage"):
        plan(load_run_config("tiny", None, ["finetune.mined_share=0.3"]), tmp_path / "run", None)
    assert "mine" not in [s.name for s in plan(load_run_config("tiny"), tmp_path / "run", None)]
