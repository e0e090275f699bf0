"""The report renderer on a synthetic run folder: every section, the per-problem changes, self-contained HTML."""

from __future__ import annotations

import base64
import re

import pytest

from codenas.eval.scoring import RESULTS, SUMMARY, judged_row, summarize
from codenas.io import atomic_write_json, write_jsonl
from codenas.run.config import dumps_toml, load_run_config
from codenas.run.report import write_report
from codenas.run.stages import RESULT
from codenas.train.pretrain import PRETRAIN_INFO as PRETRAIN_SETTINGS
from codenas.train.sft import SETTINGS as FINETUNE_SETTINGS

HARDWARE = {"cpu": "Test CPU", "cores": "2", "memory": "1.0 GiB", "gpu": "none"}
VERSIONS = {"python": "3.11.0", "torch": "9.9.9"}
SECTIONS = ("Summary", "What the models wrote", "Sample completions", "pass@k before and after fine-tuning",
            "Solved problems", "Loss curves", "pass@1 vs step", "Expert iteration", "Per-problem changes",
            "Copying check", "Data", "Pretraining corpus", "Configuration", "Hardware", "Versions",
            "Wall time per stage")  # the report's sections, in this order


def _results(folder, passed: dict[str, list[bool]]) -> None:
    """Judged rows written by the judge's own row and summary functions: a pass, or a wrong answer."""
    rows = [judged_row(t, "    return 1\n", "passed" if p else "failed", "" if p else "AssertionError")
            for t, outcomes in passed.items() for p in outcomes]
    write_jsonl(folder / RESULTS, rows)
    atomic_write_json(folder / SUMMARY, summarize([(row["task_id"], row) for row in rows], ks=(1, 10)))


@pytest.fixture
def run_dir(tmp_path):
    out = tmp_path / "synthetic"
    out.mkdir()
    (out / "config.resolved.toml").write_text(dumps_toml(load_run_config("tiny")))
    atomic_write_json(out / "stages.json", {"stages": [
        {"name": "data", "key": "a" * 64, "status": "ran", "wall_s": 12.5},
        {"name": "pretrain", "key": "b" * 64, "status": "cached", "wall_s": 75.0},
    ]})
    atomic_write_json(out / "data" / "manifest.json", {
        "seed": 1234, "val_size": 50, "holdout": "mini",
        "inputs": {"humaneval": {"file": "HumanEval.jsonl.gz", "sha256": "f" * 64}, "mbpp": None},
        "counts": {"humaneval": {"val": 9, "input": 164, "contaminated": 15, "train": 120, "held_out": 20}},
        "benchmarks": {"mini": {"candidates": 20, "records": 20}},
        "rules": {"max_complexity": 6}, "sizes": {"train.jsonl": 120, "val.jsonl": 9},
    })
    zero = {"docs": 0, "bytes": 0}
    source = lambda kept, near: {"files": kept + near, "in": {"docs": kept + near, "bytes": 1000},  # noqa: E731
                                 "dropped": {"not_utf8": zero, "near_duplicate": {"docs": near, "bytes": 9}},
                                 "out": {"docs": kept, "bytes": 900}}
    atomic_write_json(out / "corpus" / "built" / "manifest.json", {
        "sources": {"stdlib": source(90, 3), "site-packages": source(40, 0)}, "contaminated": {"stdlib/x.py": "he_12"},
        "tokens": {"train": 1000, "val": 10}, "documents": {"train": 128, "val": 2}, "dtype": "uint16", "shards": [],
    })
    write_jsonl(out / "pretrain" / "metrics.jsonl",
                [{"step": s, "loss": 8.0 - s / 100, **({"val_loss": 7.9 - s / 100} if s % 20 == 0 else {})}
                 for s in range(10, 101, 10)])
    write_jsonl(out / "lora" / "metrics.jsonl",
                [{"step": 5, "loss": 3.0}, {"step": 10, "loss": 2.5, "val_loss": 2.7, "val_pass@1": 0.1},
                 {"step": 20, "loss": 2.0, "val_loss": 2.4, "val_pass@1": 0.3}])
    arch = {"n_layer": 2, "n_head": 4, "d_model": 128, "d_ff": 512, "context_length": 256, "vocab_size": 2048,
            "name": "tiny"}
    atomic_write_json(out / "pretrain" / PRETRAIN_SETTINGS, {"arch": arch, "corpus": {"train_files": 294}})
    atomic_write_json(out / "pretrain" / RESULT, {"params": 701_312, "steps": 100, "tokens": 204_800})
    atomic_write_json(out / "lora" / FINETUNE_SETTINGS, {"lora": {"rank": 8, "alpha": 16}})
    atomic_write_json(out / "lora" / RESULT, {"trainable_params": 8_192, "total_params": 709_504, "steps": 20,
                                              "train_examples": 120})
    _results(out / "eval" / "base" / "mini", {"he_1": [True, False], "he_2": [False, False], "he_3": [True, True]})
    _results(out / "eval" / "lora" / "mini", {"he_1": [False, False], "he_2": [False, True], "he_3": [True, False]})
    return out


def test_report_has_every_section_in_both_formats(run_dir):
    md_path, html_path = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)
    md, html = md_path.read_text(), html_path.read_text()
    for section in SECTIONS:
        assert f"## {section}\n" in md
        assert f"<h2>{section}</h2>" in html
    assert re.findall(r"^## (.+)$", md, flags=re.M) == list(SECTIONS)
    assert "Test CPU" in md and "9.9.9" in md
    assert "| humaneval | HumanEval.jsonl.gz | ffffffffffffffff |" in md
    assert "| input | 164 |" in md and "| contaminated | 15 |" in md  # counts per source and per rule
    assert md.index("| input |") < md.index("| held_out |") < md.index("| contaminated |") < md.index("| train |")
    assert "| mini | base | 3 of 20 | 2 | 50.0% |" in md and "| mini | lora | 3 of 20 | 2 | 33.3% |" in md
    assert "| lora | 20 | 30.0% |" in md  # pass@1 vs step
    assert "pass@1 on the first 10 validation records (one sample each)" in md  # the tiny preset's eval_limit
    assert "| pretrain | 7 | 6.9 | 6.9 (step 100) |" in md  # loss curve summary
    assert "| data | 12.5 s | ran |" in md and "| pretrain | 1 min 15 s | cached |" in md
    assert "| dropped: near_duplicate | 0 | 3 |" in md and "| documents kept | 40 | 90 |" in md
    assert md.index("| dropped: not_utf8 |") < md.index("| dropped: near_duplicate |")  # pipeline order
    assert "Benchmark matches dropped: 1: `stdlib/x.py` (he_12)." in md


def test_plots_are_written_and_embedded(run_dir):
    _, html_path = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)
    html = html_path.read_text()
    pngs = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert pngs == ["loss_curves.png", "pass1_vs_step.png", "passk.png", "verdicts.png"]
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == 4
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in embedded)
    assert not re.search(r'(src|href)="(?!data:)', html)  # self-contained: nothing fetched from elsewhere
    md = (run_dir / "report.md").read_text()
    assert all(f"(plots/{name})" in md for name in pngs)


def test_per_problem_changes_list_gained_and_lost(run_dir):
    md_path, _ = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)
    md = md_path.read_text()
    assert "1 newly solved, 1 no longer solved, 1 solved by both, out of 3 problems" in md
    assert "| he_2 | solved after, not before | 0/2 | 1/2 |" in md
    assert "| he_1 | solved before, not after | 1/2 | 0/2 |" in md


def test_solved_problems_are_counted_per_problem(run_dir):
    md = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)[0].read_text()
    # the copying check lists each solved problem with its passing samples / samples
    assert "| he_1 | mini | base | 1/2 |" in md and "| he_3 | mini | base | 2/2 |" in md
    assert "| he_2 | mini | base |" not in md  # no passing sample: not solved
    assert "| he_2 | mini | lora | 1/2 |" in md


def test_report_of_an_empty_run_still_has_every_section(tmp_path):
    md_path, html_path = write_report(tmp_path, hardware=HARDWARE, versions=VERSIONS)
    md = md_path.read_text()
    assert all(f"## {section}\n" in md for section in SECTIONS)
    assert "No evaluation results yet." in md
    assert not (tmp_path / "plots").exists()


def test_markdown_escapes_table_pipes(run_dir):
    atomic_write_json(run_dir / "stages.json", {"stages": [
        {"name": "a|b", "key": "c" * 64, "status": "ran", "wall_s": 1.0}]})
    md_path, html_path = write_report(run_dir, hardware={"cpu": "x<y>"}, versions=VERSIONS)
    assert "| a\\|b |" in md_path.read_text()
    assert "x&lt;y&gt;" in html_path.read_text()


def test_summary_comes_first_and_says_what_was_trained_and_what_it_means(run_dir):
    md = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)[0].read_text()
    summary = md[md.index("## Summary"):md.index("## What the models wrote")]
    assert md.index("## Summary") < md.index("## Configuration")
    assert "A GPT of 0.70M parameters (tiny: 2 layers, 4 heads, d_model 128" in summary
    assert "| pretrain | next-token prediction on the code corpus | 701,312 (all) | 100 | 204,800 |" in summary
    assert "| lora | LoRA (rank 8, alpha 16) on the train records | 8,192 of 709,504 | 20 | - |" in summary
    assert "| mini | 20 HumanEval problems held out of training" in summary and "not a HumanEval score" in summary
    assert "| 3 of 20 | 2 | 50.0% | 33.3% | -16.7 points |" in summary
    assert "the lora model's val loss fell from 2.70 (step 10) to 2.40 (step 20)" in summary
    assert "**mbpp-test was skipped**: no MBPP file was found" in summary and "--mbpp PATH" in summary
    assert "pass@10 and pass@100 cannot be measured" in summary


def test_verdict_classes_and_sample_completions(run_dir):
    md = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)[0].read_text()
    assert "| mini | base | 6 | 100.0% | 3 (50.0%) | 3 (50.0%) | 0 (0.0%) |" in md
    samples = md[md.index("## Sample completions"):md.index("## pass@k")]
    lora = samples[samples.index("### mini, lora"):]
    assert "**he_2**, passed (newly solved by lora)" in lora
    assert "**he_1**, wrong answer: `AssertionError` (newly broken by lora)" in lora
    assert "# ---- written by lora ----\n    return 1" in lora


def _improve(out, kept: list[int]) -> None:
    """An improve stage's outputs: rounds.jsonl rows as ``train.improve`` writes them, its result, its evaluation."""
    from codenas.train.improve import ROUNDS, ROW_FIELDS

    rows = [{"round": r, "pool_problems": 0 if r == 0 else 40, "samples": 0 if r == 0 else 8,
             "solved": None if r == 0 else n // 2, "pass_at_k": {} if r == 0 else {"pass@1": 0.05, "pass@8": 0.2},
             "kept": n, "new_problems": n // 2, "replay": n, "train_loss": None if not n else 1.25, "val_loss": 2.5,
             "val_passed": r, "val_pass@1": r / 10, "wall_s": 60.0, "trained": bool(n), "model": f"round{r}"}
            for r, n in enumerate([0, *kept])]
    assert all(set(row) == set(ROW_FIELDS) for row in rows)
    write_jsonl(out / "improve" / ROUNDS, rows)
    atomic_write_json(out / "improve" / RESULT, {"rounds": len(kept), "best_round": len(kept), "rows": rows,
                                                 "pool": {"problems": 40, "sources": {"mbpp": 30, "humaneval": 10}}})
    _results(out / "eval" / "improve" / "mini", {"he_1": [True, True], "he_2": [False, True], "he_3": [True, False]})


def test_expert_iteration_rounds_are_in_the_report_and_its_model_is_compared(run_dir):
    _improve(run_dir, [6, 10])
    md = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)[0].read_text()
    section = md[md.index("## Expert iteration"):md.index("## Per-problem changes")]
    assert "| 1 | 3/40 | 20.0% (K=8) | 6 | 3 | 6 | 1.25 | 2.5 | 10.0% |" in section
    assert "| 2 | 5/40 | 20.0% (K=8) | 10 | 5 | 10 | 1.25 | 2.5 | 20.0% |" in section
    assert "(round 2) is the `improve` model" in section and "No round had a passing sample" not in section
    summary = md[md.index("## Summary"):md.index("## What the models wrote")]
    assert "improve pass@1" in summary and "change (improve)" in summary
    assert "2 rounds of expert iteration" in summary and "model of round 2" in summary


def test_rounds_without_passing_samples_say_what_would_be_needed(run_dir):
    _improve(run_dir, [0, 0])
    md = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)[0].read_text()
    assert "No round had a passing sample to learn from" in md


def test_solved_under_differential_tests_and_copying_check(run_dir, tmp_path):
    from codenas.records import Record, write_records

    def record(rid: str, body: str) -> Record:
        return Record(id=rid, source="t", prompt="def f(x):\n", solution=body, tests="assert f(1)\n",
                      entry_point="f")

    write_records(run_dir / "data" / "train.jsonl", [record("mbpp_700", "    return 1\n"),
                                                       record("mbpp_701", "    return x + 1\n")])
    mined = tmp_path / "mined.jsonl"
    write_records(mined, [record("mined_1", "    return sorted(x)[0]\n")])
    atomic_write_json(run_dir / "lora" / RESULT, {"trainable_params": 8_192, "total_params": 709_504, "steps": 20,
                                                  "train_examples": 120,
                                                  "train_files": [{"path": str(mined), "records": 1}]})
    outcomes = {"he_1": [("    return 0\n", False, False)] * 2,
                "he_2": [("    return sorted(x)[0]\n", True, True), ("    return 2\n", False, False)],
                "he_3": [("    return 1\n", True, False)] * 2}  # passes the benchmark's tests only
    rows = []
    for task, samples in outcomes.items():
        for completion, passed, diff in samples:
            rows.append({**judged_row(task, completion, "passed" if passed else "failed", ""), "diff_passed": diff})
    folder = run_dir / "eval" / "lora" / "mini"
    write_jsonl(folder / RESULTS, rows)
    atomic_write_json(folder / SUMMARY, summarize([(row["task_id"], row) for row in rows], ks=(1, 10)))

    md = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)[0].read_text()
    solved = md.split("## Solved problems")[1].split("## ")[0]
    assert "| benchmark | model | problems | solved | solved under differential tests | with differential tests " \
           "| pass@1 | diff pass@1 |" in solved
    assert "| mini | base | 3 of 20 | 2 | - | 0 | 50.0% | - |" in solved  # older results: no differential tests
    assert "| mini | lora | 3 of 20 | 2 | 1 | 3 | 50.0% | 16.7% |" in solved
    assert "lora solves 2 of 3 mini problems (1 under differential tests)" in md
    copying = md.split("## Copying check")[1].split("## ")[0]
    assert "| he_1 | mini | base | 1/2 | 1/2 | mbpp_700 | 1.00 | 1.00 |" in copying  # base: the data stage's records
    assert "| he_2 | mini | lora | 1/2 | 1/2 | mined_1 | 1.00 | 1.00 |" in copying  # lora: its own train_files
    assert "| he_3 | mini | lora | 2/2 | 0/2 | - | - | - |" in copying
    assert "# ---- passing completion (lora) ----\nreturn sorted(x)[0]" in copying.replace("    return", "return")
    assert "# ---- nearest training record mined_1 (Jaccard 1.00, ratio 1.00) ----\ndef f(x):\n" in copying


def test_pass1_vs_step_names_the_finetune_eval_limit(run_dir):
    config = load_run_config("tiny", overrides=["finetune.eval_limit=0", "finetune.eval_samples=2"])
    (run_dir / "config.resolved.toml").write_text(dumps_toml(config))
    md = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)[0].read_text()
    assert "pass@1 on every validation record (2 samples each)" in md


def test_records_dropped_by_fine_tuning_are_in_the_report_with_their_reason(run_dir):
    atomic_write_json(run_dir / "lora" / FINETUNE_SETTINGS, {
        "lora": {"rank": 8, "alpha": 16}, "records": {"train": 92, "val": 9}, "examples": {"train": 77, "val": 8},
        "dropped": {"train": {"prompt fills the context": 15}, "val": {"prompt fills the context": 1}}})
    atomic_write_json(run_dir / "lora" / RESULT, {"trainable_params": 8_192, "total_params": 709_504, "steps": 20,
                                                  "train_examples": 77})
    md = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)[0].read_text()
    assert ("It was then fine-tuned (lora) on 77 supervised records of the 92 train records (15 not trained on: "
            "prompt fills the context 15).") in md
    data = md[md.index("## Data"):md.index("## Pretraining corpus")]
    assert "| lora | train | 92 | 77 | prompt fills the context: 15 (not trained on) |" in data
    assert "| lora | val | 9 | 8 | prompt fills the context: 1 (left out of the val loss) |" in data


def test_a_sample_cut_by_post_processing_shows_its_raw_text_and_why(run_dir):
    raw = "result = a + b\nprint(result)\n"
    rows = [judged_row("he_1", "", "error", "IndentationError: expected an indented block",
                       cut=(raw, "unindented code with no def f: the function's body must be indented")),
            judged_row("he_2", "", "error", "IndentationError: expected an indented block")]
    folder = run_dir / "eval" / "base" / "mini"
    write_jsonl(folder / RESULTS, rows)
    atomic_write_json(folder / SUMMARY, summarize([(row["task_id"], row) for row in rows], ks=(1,)))
    md = write_report(run_dir, hardware=HARDWARE, versions=VERSIONS)[0].read_text()
    assert "| mini | base | 2 | 0.0% | 0 (0.0%) | 0 (0.0%) | 0 (0.0%) | 0 (0.0%) | 0 (0.0%) | 1 (50.0%) | 1 (50.0%) |" \
        in md
    base = md[md.index("### mini, base"):md.index("### mini, lora")]
    assert ("**he_1**, cut by post-processing; post-processing kept none of it: unindented code with no def f: the "
            "function's body must be indented") in base
    assert "# ---- written by base, raw (cut away by post-processing) ----\nresult = a + b\nprint(result)" in base
    assert "**he_2**, empty (" in base and "# ---- written by base ----\n# (empty)" in base
