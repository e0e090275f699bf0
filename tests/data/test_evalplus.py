"""HumanEval+ / MBPP+: release files (fixtures written here in the release format), the missing-file error, and
agreement of base and plus verdicts with EvalPlus's own evaluator on canonical, wrong-on-plus-only and wrong
solutions."""

from __future__ import annotations

import gzip
import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from codenas.data import evalplus
from codenas.data.benchmarks import load_problems
from codenas.eval.scoring import score_samples, summary_table
from codenas.io import CodenasError, sha256_bytes

FIXTURES = Path(__file__).parent / "fixtures" / "evalplus"
HUMANEVAL_PLUS = FIXTURES / "HumanEvalPlus-fixture.jsonl"
MBPP_PLUS = FIXTURES / "MbppPlus-fixture.jsonl"

# task id -> {kind: completion body}; "plus-wrong" passes every base input and fails a plus input.
HUMANEVAL_SOLUTIONS = {
    "HumanEval/0": {
        "plus-wrong": "    if len(numbers) < 3:\n        return False\n"
                      "    return any(abs(a - b) < threshold\n"
                      "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
        "wrong": "    return True\n",
    },
    "HumanEval/2": {
        "tolerance": "    return round(number % 1.0, 7)\n",
        "plus-wrong": "    return number - int(number) if number < 500 else 0.0\n",
        "wrong": "    return float(int(number))\n",
    },
    "HumanEval/4": {
        "tolerance": "    mean = sum(numbers) / len(numbers)\n"
                     "    return sum(x - mean for x in numbers if x > mean) * 2 / len(numbers)\n",
        "plus-wrong": "    if len(numbers) < 3:\n        return 0.0\n    mean = sum(numbers) / len(numbers)\n"
                      "    return sum(abs(x - mean) for x in numbers) / len(numbers)\n",
        "wrong": "    return 0.0\n",
    },
    "HumanEval/32": {
        "plus-wrong": "    if xs[0] == 5:\n        return 0.0\n    begin, end = -1., 1.\n"
                      "    while poly(xs, begin) * poly(xs, end) > 0:\n        begin *= 2.0\n        end *= 2.0\n"
                      "    while end - begin > 1e-10:\n        center = (begin + end) / 2.0\n"
                      "        if poly(xs, center) * poly(xs, begin) > 0:\n            begin = center\n"
                      "        else:\n            end = center\n    return begin\n",
        "wrong": "    return 0.0\n",
    },
    "HumanEval/13": {
        "plus-wrong": "    import math\n    return math.gcd(a, b) if a > 0 and b > 0 else 1\n",
        "wrong": "    return a * b\n",
    },
}
MBPP_SOLUTIONS = {
    "Mbpp/2": {
        "set-order": "    return [x for x in test_tup2 if x in test_tup1]\n",
        "plus-wrong": "    return tuple(set(test_tup1) & set(test_tup2)) if test_tup2 else (0,)\n",
        "wrong": "    return test_tup1\n",
    },
    "Mbpp/3": {
        "plus-wrong": "    return n % 2 == 0 and n != 2 or n == 35\n",
        "wrong": "    return True\n",
    },
    "Mbpp/581": {
        "oracle": "    import math\n    return round(b * b + 2 * b * math.sqrt((b / 2) ** 2 + s ** 2))\n",
        "plus-wrong": "    return 2 * b * s + pow(b, 2) if b < 5 else 0\n",
        "wrong": "    return b * s\n",
    },
    "Mbpp/17": {
        "plus-wrong": "    return 4 * int(a)\n",
        "wrong": "    return a * a\n",
    },
}


@pytest.fixture
def plus_files(monkeypatch, tmp_path):
    monkeypatch.setenv("CODENAS_HUMANEVAL_PLUS", str(HUMANEVAL_PLUS))
    monkeypatch.setenv("CODENAS_MBPP_PLUS", str(MBPP_PLUS))
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path / "home"))


def _rows(path: Path) -> dict[str, dict]:
    return {row["task_id"]: row for row in map(json.loads, path.read_text().splitlines())}


def _samples(name: str) -> list[dict]:
    """Every problem's canonical solution and the solutions above, as (task id, completion, kind) samples."""
    path, solutions = (HUMANEVAL_PLUS, HUMANEVAL_SOLUTIONS) if name == "humaneval+" else (MBPP_PLUS, MBPP_SOLUTIONS)
    records = {r.meta["task_id"]: r for r in evalplus.load_evalplus(name, path)}
    samples = []
    for task_id, kinds in solutions.items():
        samples.append({"task_id": task_id, "completion": records[task_id].solution, "kind": "canonical"})
        samples += [{"task_id": task_id, "completion": body, "kind": kind} for kind, body in kinds.items()]
    return samples


def _evalplus_verdicts(name: str, samples: list[dict], tmp_path: Path) -> list[tuple[bool, bool]]:
    """(base passed, base and plus passed) per sample, from EvalPlus 0.3.1's own evaluator."""
    import evalplus.evaluate as ep
    from evalplus.data.mbpp import mbpp_deserialize_inputs
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS

    dataset = "humaneval" if name == "humaneval+" else "mbpp"
    problems = _rows(HUMANEVAL_PLUS if dataset == "humaneval" else MBPP_PLUS)
    if dataset == "mbpp":
        for task_id, problem in problems.items():
            problem["base_input"] = mbpp_deserialize_inputs(task_id, problem["base_input"])
            problem["plus_input"] = mbpp_deserialize_inputs(task_id, problem["plus_input"])
    ep.CACHE_DIR = str(tmp_path / "evalplus-cache")
    expected = ep.get_groundtruth(problems, f"fixture-{dataset}",
                                  MBPP_OUTPUT_NOT_NONE_TASKS if dataset == "mbpp" else [])
    ours = {r.meta["task_id"]: r for r in evalplus.load_evalplus(name, HUMANEVAL_PLUS if dataset == "humaneval"
                                                                   else MBPP_PLUS)}
    verdicts = []
    for i, sample in enumerate(samples):
        problem = problems[sample["task_id"]]
        if dataset == "humaneval":
            solution = problem["prompt"] + sample["completion"]
        else:  # EvalPlus's MBPP+ solutions are whole programs: our prompt's code and signature, then the body
            solution = ours[sample["task_id"]].prompt + sample["completion"]
        result = ep.check_correctness(dataset, i, problem, solution, expected[sample["task_id"]], fast_check=True)
        base = result["base"][0] == "pass"
        verdicts.append((base, base and result["plus"][0] == "pass"))
    return verdicts


@pytest.mark.parametrize("name", ["humaneval+", "mbpp+"])
def test_base_and_plus_verdicts_agree_with_evalplus(name, plus_files, tmp_path):
    pytest.importorskip("evalplus", reason="EvalPlus is a test dependency (pip install -e '.[test]')")
    samples = _samples(name)
    summary = score_samples([{"task_id": s["task_id"], "completion": s["completion"]} for s in samples],
                            load_problems(name), tmp_path / "ours", ks=(1,))
    rows = [json.loads(line) for line in (tmp_path / "ours" / "results.jsonl").read_text().splitlines()]
    ours = [(row["base_passed"], row["passed"]) for row in rows]
    theirs = _evalplus_verdicts(name, samples, tmp_path)
    # EvalPlus 0.3.1 fails every solution of HumanEval/32: its find_zero oracle ends each input with `continue`,
    # which skips recording the input as passed. Ours applies the oracle as intended; elsewhere we agree.
    buggy = [i for i, s in enumerate(samples) if s["task_id"] == "HumanEval/32"]
    assert all(theirs[i] == (False, False) for i in buggy)
    disagree = [(s["task_id"], s["kind"], o, t) for i, (s, o, t) in enumerate(zip(samples, ours, theirs, strict=True))
                if o != t and i not in buggy]
    assert disagree == []
    # the fixtures exercise every case: canonical passes both, plus-wrong only base, wrong neither
    for sample, (base, plus) in zip(samples, ours, strict=True):
        expected = {"canonical": (True, True), "plus-wrong": (True, False), "wrong": (False, False)}
        assert (base, plus) == expected.get(sample["kind"], (True, True)), sample
    assert summary["base_pass_at_k"]["pass@1"] > summary["pass_at_k"]["pass@1"]


def test_summary_and_table_show_base_and_plus_side_by_side(plus_files, tmp_path):
    samples = [{"task_id": s["task_id"], "completion": s["completion"]} for s in _samples("humaneval+")]
    summary = score_samples(samples, load_problems("humaneval+"), tmp_path / "out", ks=(1,))
    n = len(HUMANEVAL_SOLUTIONS)
    canonical = n / len(samples)
    per_problem_base = sum(1 + sum(k != "wrong" for k in kinds) for kinds in HUMANEVAL_SOLUTIONS.values())
    assert summary["base_pass_at_k"]["pass@1"] == pytest.approx(per_problem_base / len(samples), abs=0.2)
    assert summary["pass_at_k"]["pass@1"] >= canonical
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "pass@1 (base tests)" in text and "pass@1 (base + plus tests)" in text


def test_missing_file_error_says_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv("CODENAS_HUMANEVAL_PLUS", raising=False)
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path))
    with pytest.raises(CodenasError, match=r"codenas data download --evalplus.*CODENAS_HUMANEVAL_PLUS"):
        load_problems("humaneval+")
    monkeypatch.setenv("CODENAS_MBPP_PLUS", str(tmp_path / "nope.jsonl.gz"))
    with pytest.raises(CodenasError, match=r"CODENAS_MBPP_PLUS does not exist"):
        load_problems("mbpp+")


def test_gzipped_release_and_the_downloaded_copy_are_read(monkeypatch, tmp_path):
    monkeypatch.delenv("CODENAS_HUMANEVAL_PLUS", raising=False)
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path))
    target = evalplus.downloaded_path("humaneval+")
    target.parent.mkdir(parents=True)
    target.write_bytes(gzip.compress(HUMANEVAL_PLUS.read_bytes()))
    records = load_problems("humaneval+")
    assert [r.meta["task_id"] for r in records] == list(_rows(HUMANEVAL_PLUS))
    assert records[0].id == "he_0" and records[0].source == "humaneval+"


def test_a_broken_release_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    shutil.copy(HUMANEVAL_PLUS, bad)
    with bad.open("a") as f:
        f.write('{"task_id": "HumanEval/9", "prompt": "def f():\\n"}\n')
    with pytest.raises(CodenasError, match=r"bad.jsonl:6: problem has no entry_point"):
        evalplus.load_evalplus("humaneval+", bad)


def test_download_checks_the_sha256(monkeypatch, tmp_path):
    payload = gzip.compress(HUMANEVAL_PLUS.read_bytes())

    class Response:
        def __init__(self, data):
            self.data = data

        def read(self):
            return self.data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(payload))
    with pytest.raises(CodenasError, match="sha256 .* expected 2727"):
        evalplus.download_evalplus(tmp_path)
    assert list(tmp_path.iterdir()) == []
    digest = sha256_bytes(payload)
    monkeypatch.setitem(evalplus.RELEASES["humaneval+"], "sha256", digest)
    monkeypatch.setitem(evalplus.RELEASES["mbpp+"], "sha256", digest)
    saved = evalplus.download_evalplus(tmp_path)
    assert [p.name for p in saved] == ["HumanEvalPlus-v0.1.10.jsonl.gz", "MbppPlus-v0.2.0.jsonl.gz"]
    assert all(p.read_bytes() == payload for p in saved)


def _mbpp_plus_from_sample(tmp_path: Path, ids: set[int]) -> Path:
    """An MBPP+ file (release format) holding the given MBPP tasks of the 24-row sample."""
    from tests.data.conftest import SAMPLE_MBPP

    path = tmp_path / "MbppPlus.jsonl"
    with path.open("w") as f:
        for row in map(json.loads, SAMPLE_MBPP.read_text().splitlines()):
            if row["task_id"] in ids:
                entry = row["test_list"][0].split("assert ", 1)[1].split("(", 1)[0].strip()
                f.write(json.dumps({"task_id": f"Mbpp/{row['task_id']}", "entry_point": entry,
                                    "prompt": f'"""\n{row["text"]}\n{row["test_list"][0]}\n"""\n',
                                    "canonical_solution": row["code"], "contract": "", "atol": 0,
                                    "base_input": [], "plus_input": []}) + "\n")
    return path


def test_decontamination_and_data_build_treat_mbpp_plus_as_the_mbpp_problems_it_holds(monkeypatch, tmp_path):
    from codenas.benchmarks import BENCHMARKS
    from codenas.data.benchmarks import decontamination_records
    from codenas.data.build import build_dataset
    from codenas.records import read_records
    from tests.data.conftest import SAMPLE_MBPP

    assert BENCHMARKS["humaneval+"].same_problems_as == "humaneval" and BENCHMARKS["mbpp+"].same_problems_as == "mbpp"
    _, counts = decontamination_records([], SAMPLE_MBPP)
    assert counts["mbpp+"] == 0  # no MBPP+ file: nothing more to decontaminate against
    monkeypatch.setenv("CODENAS_MBPP_PLUS", str(_mbpp_plus_from_sample(tmp_path, {601, 607})))
    records, counts = decontamination_records([], SAMPLE_MBPP)
    assert counts["mbpp+"] == 2 and {"mbpp_601", "mbpp_607"} <= {r.id for r in records}
    manifest = build_dataset(mbpp=SAMPLE_MBPP, out=tmp_path / "data", seed=3, val_size=2, holdout="humaneval")
    assert sorted(manifest["dropped"]["in_mbpp_plus"]) == ["mbpp_601", "mbpp_607"]
    trained = {r.id for name in ("train.jsonl", "val.jsonl") for r in read_records(tmp_path / "data" / name)}
    assert not trained & {"mbpp_601", "mbpp_607"}


def test_eval_model_table_shows_base_and_plus_columns():
    from rich.console import Console

    from codenas.eval.checkpoints import results_table

    row = {"name": "step100", "checkpoint": "runs/step100", "step": 100, "pass_at_k": {"pass@1": 0.25},
           "base_pass_at_k": {"pass@1": 0.5}, "isolation": "landlock+mountns+netns", "n_problems": 164,
           "n_samples": 164, "verdicts": {"passed": 41}, "parse_rate": 1.0}
    console = Console(record=True, width=200)
    console.print(results_table([row]))
    text = console.export_text()
    assert "pass@1 base" in text and "pass@1 base+plus" in text and "50.00%" in text and "25.00%" in text
    assert "landlock+mountns+netns" in text
