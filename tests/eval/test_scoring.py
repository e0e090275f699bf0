"""score_samples and `codenas eval samples`: results in input order, pass@k summary, bad input, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from click.testing import CliRunner

from codenas.cli import cli
from codenas.eval import scoring
from codenas.eval.scoring import read_samples, score_samples
from codenas.io import CodenasError
from codenas.records import write_records

BURN = "    import time\n    start = time.process_time()\n    while time.process_time() - start < 0.1:\n        pass\n"


@pytest.fixture()
def problems(he_records):
    return he_records[:3]


def _samples(problems) -> list[dict]:
    """Four per problem, both id spellings: right, wrong, right, raising -> c = 2 of n = 4 everywhere."""
    out = []
    for rec in problems:
        for j, completion in enumerate([rec.solution, "    return None\n", rec.solution, "    raise KeyError\n"]):
            out.append({"task_id": rec.meta["task_id"] if j % 2 else rec.id, "completion": completion})
    return out


def test_results_in_input_order_and_pass_at_k(problems, tmp_path):
    samples = _samples(problems)
    summary = score_samples(samples, problems, tmp_path, workers=2, ks=(1, 2, 10))
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["completion"]) for r in rows] == [(s["task_id"], s["completion"]) for s in samples]
    assert [r["status"] for r in rows[:4]] == ["passed", "failed", "passed", "error"]
    assert [r["passed"] for r in rows] == [True, False, True, False] * 3
    assert rows[3]["detail"] == "KeyError"
    assert summary["pass_at_k"] == {"pass@1": pytest.approx(0.5), "pass@2": pytest.approx(1 - 1 / 6)}
    assert summary["per_problem"]["he_0"] == {"n": 4, "correct": 2, "pass@1": 0.5, "pass@2": pytest.approx(5 / 6)}
    assert summary["status_counts"] == {"passed": 6, "failed": 3, "timeout": 0, "error": 3}
    assert json.loads((tmp_path / "summary.json").read_text())["n_samples"] == 12
    assert not (tmp_path / "results.partial.jsonl").exists()


def test_raw_generations_are_post_processed(problems, tmp_path):
    rec = problems[0]
    raw = "```python\n" + rec.prompt + rec.solution + "\n\nprint(" + rec.entry_point + "([1.0], 0.5))\n```\nDone."
    summary = score_samples([{"task_id": rec.id, "completion": raw}], problems, tmp_path, raw=True, partial=True)
    assert summary["status_counts"]["passed"] == 1


def test_rerun_into_a_finished_folder_runs_nothing(problems, tmp_path, monkeypatch):
    samples = _samples(problems)
    first = score_samples(samples, problems, tmp_path, workers=2)
    before = (tmp_path / "results.jsonl").read_bytes()

    def no_programs(programs, **kwargs):
        assert list(programs) == []
        return iter(())

    with monkeypatch.context() as m:
        m.setattr(scoring, "iter_programs", no_programs)
        assert score_samples(samples, problems, tmp_path, workers=2) == first
    assert (tmp_path / "results.jsonl").read_bytes() == before
    # Other limits: the old verdicts do not count, everything runs again.
    ran = []
    real = scoring.iter_programs

    def counting(programs, **kwargs):
        ran.append(len(programs))
        return real(programs, **kwargs)

    monkeypatch.setattr(scoring, "iter_programs", counting)
    assert score_samples(samples, problems, tmp_path, workers=2, timeout=2.0)["timeout"] == 2.0
    assert ran == [len(samples)]


def test_rerun_against_changed_tests_scores_again(problems, tmp_path):
    rec = problems[0]
    samples = [{"task_id": rec.id, "completion": rec.solution}]
    assert score_samples(samples, [rec], tmp_path)["status_counts"]["passed"] == 1
    stricter = replace(rec, tests=rec.tests + "\nassert False\n")
    assert score_samples(samples, [stricter], tmp_path)["status_counts"]["failed"] == 1


@pytest.mark.parametrize(("line", "message"), [
    ('{"task_id": "HumanEval/0", "completion": "x"\n', "malformed JSON"),
    ('{"task_id": "HumanEval/0"}\n', "has no completion"),
    ('{"completion": "    return 1\\n"}\n', "has no task_id"),
    ('{"task_id": "HumanEval/0", "completion": "    return \'\\ud800\'\\n"}\n', "lone surrogate"),
])
def test_bad_sample_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "completion": "    return 1\\n"}\n' + line)
    with pytest.raises(CodenasError, match=message) as e:
        read_samples(path)
    assert str(e.value).startswith(f"{path}:2:")


def test_unknown_task_id_fails_before_anything_is_written(problems, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CodenasError, match="sample 2: unknown task id 'HumanEval/999'"):
        score_samples([{"task_id": "he_0", "completion": ""}, {"task_id": "HumanEval/999", "completion": ""}],
                      problems, out)
    assert not out.exists()


@pytest.mark.parametrize(("second_line", "message"), [
    ("not json", "malformed JSON"),
    ('{"task_id": "HumanEval/99", "completion": "x"}', "unknown task id 'HumanEval/99'"),
])
def test_cli_reports_bad_input_in_one_line(problems, tmp_path, second_line, message):
    write_records(tmp_path / "problems.jsonl", problems)
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"task_id": "he_1", "completion": "x"}\n' + second_line + "\n")
    result = CliRunner().invoke(cli, ["eval", "samples", str(samples), "--problems", str(tmp_path / "problems.jsonl"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"{samples}:2: {message}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_cli_scores_raw_generations_with_both_id_spellings(problems, tmp_path):
    write_records(tmp_path / "problems.jsonl", problems)
    rec = problems[0]
    fenced = "```python\n" + rec.prompt + rec.solution + "```\nThat is the function."
    runaway = rec.solution + "\n\ndef unrelated():\n    pass\n\nassert False\n"
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": rec.meta["task_id"], "completion": fenced}) + "\n"
                       + json.dumps({"task_id": rec.id, "completion": runaway}) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["eval", "samples", str(samples), "--problems", str(tmp_path / "problems.jsonl"),
                                      "--out", str(out), "--raw", "--workers", "1", "--partial"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["status"]) for r in rows] == [("HumanEval/0", "passed"), ("he_0", "passed")]
    assert json.loads((out / "summary.json").read_text())["pass_at_k"] == {"pass@1": 1.0}


def _cli(samples, problems_file, out, *flags: str, **kwargs) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "codenas.cli", "eval", "samples", str(samples), "--problems", str(problems_file),
           "--out", str(out), "--workers", "2", *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_resume_after_the_run_is_killed(problems, tmp_path):
    problems_file = tmp_path / "problems.jsonl"
    write_records(problems_file, problems)
    samples = [{"task_id": s["task_id"], "completion": BURN + s["completion"]} for s in _samples(problems)]
    samples_file = tmp_path / "samples.jsonl"
    samples_file.write_text("".join(json.dumps(s) + "\n" for s in samples))

    killed = tmp_path / "killed"
    proc = _cli(samples_file, problems_file, killed)
    journal = killed / "results.partial.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.exists() or journal.read_text().count("\n") < 4):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(journal, "a") as f:
        f.write('{"index": 11, "task_id": "he_2", "compl')  # a torn last line, as a kill mid-write leaves
    assert not (killed / "results.jsonl").exists()  # never a half-written results file
    done_before = journal.read_text().count("\n")
    assert 4 <= done_before < len(samples)

    resumed = _cli(samples_file, problems_file, killed)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert f"resuming: {done_before} of {len(samples)}" in err

    fresh = _cli(samples_file, problems_file, tmp_path / "fresh", env={**os.environ, "CODENAS_QUIET": "1"})
    fresh.communicate(timeout=120)
    assert (killed / "results.jsonl").read_bytes() == (tmp_path / "fresh" / "results.jsonl").read_bytes()
    assert (killed / "summary.json").read_bytes() == (tmp_path / "fresh" / "summary.json").read_bytes()


def test_killing_a_worker_mid_run_changes_no_verdict(problems, tmp_path):
    problems_file = tmp_path / "problems.jsonl"
    write_records(problems_file, problems)
    samples = [{"task_id": rec.id, "completion": BURN * 3 + rec.solution} for rec in problems for _ in range(4)]
    samples_file = tmp_path / "samples.jsonl"
    samples_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
    # a CPU limit whose wall-clock backstop (5x) no machine load reaches: the verdicts rest on the retries alone
    proc = _cli(samples_file, problems_file, tmp_path / "out", "--timeout", "10")
    deadline, killed = time.monotonic() + 60, 0
    while not killed and time.monotonic() < deadline:
        for worker in _workers_of(proc.pid):
            os.kill(worker, signal.SIGKILL)  # as the OOM killer would
            killed += 1
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert killed and proc.returncode == 0, err
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["passed"] * len(samples)


def _workers_of(pid: int) -> list[int]:
    """Sandbox workers started by ``pid`` that are running a sample (they have a child)."""
    found = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            cmdline = open(f"/proc/{p}/cmdline", "rb").read()
            children = open(f"/proc/{p}/task/{p}/children").read().split()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"_worker.py" in cmdline and children:
            found.append(int(p))
    return found


def test_a_journaled_worker_death_is_never_reused(problems, tmp_path):
    samples = [{"task_id": rec.id, "completion": rec.solution} for rec in problems]
    score_samples(samples, problems, tmp_path, workers=1)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    rows[0].update(passed=False, status="failed",
                   detail="sandbox worker died (killed by SIGKILL) while running this program")
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = score_samples(samples, problems, tmp_path, workers=1)
    assert summary["status_counts"]["passed"] == len(problems)


def test_programs_from_a_generator_are_judged_as_they_come():
    from codenas.eval.execution import iter_programs

    programs = ["assert True", "assert False", "raise SystemExit(0)", "x = 1"]
    listed = dict(iter_programs(programs, timeout=5, workers=2))
    streamed = dict(iter_programs((p for p in programs), timeout=5, workers=2))
    assert listed == streamed and sorted(streamed) == [0, 1, 2, 3]
    assert streamed[0].passed and not streamed[1].passed and streamed[3].passed
    assert list(iter_programs(iter(()), timeout=5)) == []


def test_a_partial_samples_file_is_refused_unless_asked_and_its_coverage_stated(problems, tmp_path):
    problems_file = tmp_path / "problems.jsonl"
    write_records(problems_file, problems)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": rec.id, "completion": c}) + "\n"
                               for rec in problems[:1] for c in (rec.solution, "    return None\n")))
    args = ["eval", "samples", str(samples), "--problems", str(problems_file), "--out", str(tmp_path / "out"),
            "--workers", "1"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1 and "cover 1 of the 3 problems" in refused.output and "--partial" in refused.output
    assert not (tmp_path / "out" / "results.jsonl").exists()
    result = CliRunner().invoke(cli, [*args, "--partial"])
    assert result.exit_code == 0, result.output
    assert "1 / 3 problems (33.3%)" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["coverage"] == pytest.approx(1 / 3)
    assert (summary["problems_scored"], summary["problems_in_benchmark"]) == (1, 3)
    assert summary["pass_at_k"]["pass@1"] == 0.5


def test_check_problems_names_the_problems_whose_own_solution_fails(problems, tmp_path):
    broken = replace(problems[1], tests="import no_such_module\n" + problems[1].tests)
    problems_file = tmp_path / "problems.jsonl"
    write_records(problems_file, [problems[0], broken, problems[2]])
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": rec.id, "completion": rec.solution}) + "\n" for rec in problems))
    args = ["eval", "samples", str(samples), "--problems", str(problems_file), "--out", str(tmp_path / "out"),
            "--workers", "1"]
    result = CliRunner().invoke(cli, [*args, "--check-problems"])
    assert result.exit_code == 1, result.output
    assert "1 of 3 problems fail with their own reference solution" in result.output
    assert f"{broken.id} (error: ModuleNotFoundError" in result.output and problems[0].id + " (" not in result.output
    assert not (tmp_path / "out" / "results.jsonl").exists()
    write_records(problems_file, problems)
    assert CliRunner().invoke(cli, [*args, "--check-problems"]).exit_code == 0


def test_a_sample_that_forges_a_harness_report_fails_and_the_run_goes_on(problems, tmp_path, monkeypatch):
    from tests.eval.test_sandbox import FORGE_HARNESS_REPORT

    problems_file = tmp_path / "problems.jsonl"
    write_records(problems_file, problems)
    samples = [{"task_id": rec.id, "completion": rec.solution} for rec in problems]
    samples.insert(1, {"task_id": problems[1].id, "completion": FORGE_HARNESS_REPORT})
    samples_file = tmp_path / "samples.jsonl"
    samples_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
    args = ["eval", "samples", str(samples_file), "--problems", str(problems_file), "--out", str(tmp_path / "out"),
            "--workers", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "failed for a harness fault" in result.output
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["passed", "failed", "passed", "passed"]
    assert rows[1]["harness_fault"] == rows[1]["detail"]
    assert rows[1]["detail"].startswith("the sample forged a 'harness' report of the judge")
    assert all("harness_fault" not in r for i, r in enumerate(rows) if i != 1)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["harness_faults"] == [{"task_id": problems[1].id, "sample": 2, "reason": rows[1]["detail"]}]
    assert summary["per_problem"][problems[1].id] == {"n": 2, "correct": 1, "pass@1": 0.5}

    def no_programs(programs, **kwargs):  # the rerun finds every verdict, that one included
        assert list(programs) == []
        return iter(())

    monkeypatch.setattr(scoring, "iter_programs", no_programs)
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_an_interrupted_run_keeps_a_harness_fault_from_its_journal(problems, tmp_path, monkeypatch):
    samples = [{"task_id": rec.id, "completion": rec.solution} for rec in problems]
    real, calls = scoring.iter_programs, []

    def fault_then_stop(programs, **kwargs):
        calls.append(1)
        for j, result in real(programs, **kwargs):
            if j == 0:
                yield j, replace(result, status="failed", detail="harness fault x4: for the test",
                                 fault="harness fault x4: for the test")
            else:
                raise KeyboardInterrupt  # killed after the first verdict was journaled

    monkeypatch.setattr(scoring, "iter_programs", fault_then_stop)
    with pytest.raises(KeyboardInterrupt):
        score_samples(samples, problems, tmp_path, workers=1)
    journal = [json.loads(line) for line in (tmp_path / "results.partial.jsonl").read_text().splitlines()]
    assert [(row["index"], row["harness_fault"]) for row in journal] == [(0, "harness fault x4: for the test")]
    monkeypatch.setattr(scoring, "iter_programs", real)
    summary = score_samples(samples, problems, tmp_path, workers=1)
    assert summary["harness_faults"] == [{"task_id": problems[0].id, "sample": 1,
                                          "reason": "harness fault x4: for the test"}]
    assert summary["status_counts"] == {"passed": 2, "failed": 1, "timeout": 0, "error": 0}


SNEAKY = "    if numbers == [9.0, 9.5]:\n        return False\n"  # wrong only where the problem's own tests never look


def _diff_problems(problems):
    """he_0 with differential tests (that the sneaky completion fails), he_1 and he_2 without."""
    strict = replace(problems[0], meta={**problems[0].meta,
                                        "diff_tests": "assert has_close_elements([9.0, 9.5], 1.0) is True\n"})
    return [strict, *problems[1:]]


def _diff_samples(problems):
    out = []
    for rec in problems:
        second = SNEAKY + rec.solution if rec.id == "he_0" else rec.solution
        out += [{"task_id": rec.id, "completion": c} for c in (rec.solution, second, "    return None\n")]
    return out


def test_differential_tests_judge_samples_that_pass_and_count_in_the_summary(problems, tmp_path):
    problems = _diff_problems(problems)
    summary = score_samples(_diff_samples(problems), problems, tmp_path, workers=2, ks=(1, 3))
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, True, False] * 3
    assert [r["diff_passed"] for r in rows] == [True, False, False] + [None] * 6
    assert rows[1]["diff_detail"] == "failed: AssertionError" and "diff_detail" not in rows[0]
    assert summary["pass_at_k"]["pass@1"] == pytest.approx(2 / 3)
    # he_0 counts its samples that pass both; he_1 and he_2 (no differential tests) count their base verdicts
    assert summary["diff_pass_at_k"] == {"pass@1": pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3), "pass@3": 1.0}
    assert summary["diff_problems"] == 1 and summary["diff_missing"] == ["he_1", "he_2"]
    assert summary["per_problem"]["he_0"]["diff_correct"] == 1 and "diff_correct" not in summary["per_problem"]["he_1"]
    table = "\n".join(str(cell) for column in scoring.summary_table(summary).columns for cell in column._cells)
    assert "pass@1 (+ differential tests)" in table and "1 / 3" in table


def test_no_differential_tests_no_diff_figures(problems, tmp_path):
    summary = score_samples(_diff_samples(problems), problems, tmp_path, workers=2, ks=(1,))
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert all(r["diff_passed"] is None for r in rows)
    assert not {"diff_pass_at_k", "diff_problems", "diff_missing"} & set(summary)


def test_differential_verdicts_resume_and_are_reused(problems, tmp_path, monkeypatch):
    problems = _diff_problems(problems)
    samples = _diff_samples(problems)
    real = scoring.iter_programs
    ran: list[int] = []

    def killed_in_the_differential_phase(programs, **kwargs):
        if ran:
            raise KeyboardInterrupt
        ran.append(len(programs))
        return real(programs, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(scoring, "iter_programs", killed_in_the_differential_phase)
        with pytest.raises(KeyboardInterrupt):
            score_samples(samples, problems, tmp_path, workers=2, ks=(1,))
    assert ran == [len(samples)] and not (tmp_path / "results.jsonl").exists()

    def counting(programs, **kwargs):
        ran.append(len(programs))
        return real(programs, **kwargs)

    ran.clear()
    monkeypatch.setattr(scoring, "iter_programs", counting)
    resumed = score_samples(samples, problems, tmp_path, workers=2, ks=(1,))
    assert ran == [0, 2]  # the base verdicts come from the journal; the two passing he_0 samples run again
    first_rows = (tmp_path / "results.jsonl").read_bytes()
    ran.clear()
    assert score_samples(samples, problems, tmp_path, workers=2, ks=(1,)) == resumed
    assert ran == [0] and (tmp_path / "results.jsonl").read_bytes() == first_rows
    # other differential tests: nothing of the old verdicts is reused
    ran.clear()
    looser = [replace(problems[0], meta={**problems[0].meta, "diff_tests": "assert True\n"}), *problems[1:]]
    assert score_samples(samples, looser, tmp_path, workers=2, ks=(1,))["diff_pass_at_k"]["pass@1"] == \
        pytest.approx(2 / 3)
    assert ran == [len(samples), 2]
