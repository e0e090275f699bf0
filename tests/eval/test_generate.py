"""eval.generate: sampling a model on problems, post-processing and judging, and the files it writes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from codenas.eval.generate import evaluate_model, sample_problems
from codenas.io import read_jsonl
from codenas.model.config import ArchConfig
from codenas.model.model import GPT
from codenas.model.tokenizer import EOT, encode_texts
from codenas.records import Record
from codenas.settings import JudgeSettings, SamplingSettings
from tests.train.finetune_fixtures import make_tokenizer

PROBLEMS = [
    Record("t_add", "test", 'def add(a, b):\n    """Return a + b."""\n', "    return a + b\n", "assert add(1, 2) == 3",
           "add"),
    Record("t_neg", "test", 'def neg(x):\n    """Return -x."""\n', "    return -x\n", "assert neg(2) == -2", "neg"),
]


class ScriptedModel(nn.Module):
    """Always continues each known prompt with a fixed answer, then end-of-text (a stand-in for a trained GPT)."""

    def __init__(self, tokenizer, answers: dict[str, str]):
        super().__init__()
        self.config = ArchConfig(n_layer=1, n_head=1, d_model=4, d_ff=4, context_length=128,
                                 vocab_size=tokenizer.get_vocab_size())
        self.dummy = nn.Parameter(torch.zeros(1))
        prompts, texts = list(answers), list(answers.values())
        self.scripts = list(zip(encode_texts(tokenizer, prompts), encode_texts(tokenizer, texts), strict=True))
        self.eot = tokenizer.token_to_id(EOT)

    def forward(self, idx, targets=None, *, segment_ids=None):
        logits = torch.full((*idx.shape, self.config.vocab_size), -1e9)
        for row, ids in enumerate(idx.tolist()):
            for prompt, answer in self.scripts:
                if ids[: len(prompt)] == prompt:
                    done = len(ids) - len(prompt)
                    logits[row, -1, answer[done] if done < len(answer) else self.eot] = 0.0
        return logits, None


def test_correct_and_wrong_answers_are_judged(tmp_path):
    tok_path = make_tokenizer(tmp_path)
    from codenas.model.tokenizer import load_tokenizer

    tok = load_tokenizer(tok_path)
    # the right body for add (then the model rambles on with a test, which post-processing cuts), a wrong one for neg
    model = ScriptedModel(tok, {PROBLEMS[0].prompt: "    return a + b\n\nprint(add(1, 2))\n",
                                PROBLEMS[1].prompt: "    return x\n"})
    summary = evaluate_model(model, tok, PROBLEMS, tmp_path / "out",
                             SamplingSettings(samples=3, temperature=0.8, max_new_tokens=20), JudgeSettings(timeout=5))
    assert summary["pass_at_k"]["pass@1"] == 0.5
    assert summary["per_problem"]["t_add"]["correct"] == 3 and summary["per_problem"]["t_neg"]["correct"] == 0
    samples = [row for _, row in read_jsonl(tmp_path / "out" / "samples.jsonl")]
    assert [s["task_id"] for s in samples] == ["t_add"] * 3 + ["t_neg"] * 3
    assert samples[0]["completion"] == "    return a + b\n"
    results = [row for _, row in read_jsonl(tmp_path / "out" / "results.jsonl")]
    assert [r["passed"] for r in results] == [True] * 3 + [False] * 3
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["sampling"]["n"] == 3 and written["pass_at_k"] == summary["pass_at_k"]


def test_sampling_is_seeded(tmp_path: Path):
    from codenas.model.tokenizer import load_tokenizer

    tok = load_tokenizer(make_tokenizer(tmp_path))
    torch.manual_seed(0)
    model = GPT(ArchConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, context_length=64, vocab_size=300))
    a = sample_problems(model, tok, PROBLEMS, SamplingSettings(samples=2, max_new_tokens=10, seed=5))
    b = sample_problems(model, tok, PROBLEMS, SamplingSettings(samples=2, max_new_tokens=10, seed=5))
    c = sample_problems(model, tok, PROBLEMS, SamplingSettings(samples=2, max_new_tokens=10, seed=6))
    assert a == b and len(a) == 4
    assert [s["raw"] for s in a] != [s["raw"] for s in c]


def _tiny_gpt(tok) -> GPT:
    torch.manual_seed(0)
    return GPT(ArchConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, context_length=64,
                          vocab_size=tok.get_vocab_size())).eval()


def test_pipelined_scoring_writes_what_sample_then_score_writes(tmp_path: Path):
    from codenas.eval.generate import score
    from codenas.model.tokenizer import load_tokenizer

    tok = load_tokenizer(make_tokenizer(tmp_path))
    model = _tiny_gpt(tok)
    sampling = SamplingSettings(samples=3, temperature=1.0, max_new_tokens=12, seed=4)
    pipelined = evaluate_model(model, tok, PROBLEMS, tmp_path / "a", sampling, JudgeSettings(timeout=5), ks=(1, 2))
    samples = sample_problems(model, tok, PROBLEMS, sampling)
    after = score(samples, PROBLEMS, tmp_path / "b", JudgeSettings(timeout=5), ks=(1, 2))
    for name in ("samples.jsonl", "results.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert pipelined["pass_at_k"] == after["pass_at_k"] and pipelined["status_counts"] == after["status_counts"]


def test_judging_starts_before_sampling_ends_and_reruns_reuse_verdicts(tmp_path: Path, monkeypatch):
    from codenas.eval import generate, scoring
    from codenas.eval.execution import ExecResult
    from codenas.model.tokenizer import load_tokenizer

    tok = load_tokenizer(make_tokenizer(tmp_path))
    model = _tiny_gpt(tok)
    events = []
    real_stream = generate.stream

    def logged_stream(*args, **kwargs):
        for item in real_stream(*args, **kwargs):
            events.append("sampled")
            yield item

    def instant_judge(programs, **kwargs):
        for j, _ in enumerate(programs):
            events.append("judged")
            yield j, ExecResult("failed", "AssertionError")

    monkeypatch.setattr(generate, "stream", logged_stream)
    monkeypatch.setattr(scoring, "iter_programs", instant_judge)
    summary = evaluate_model(model, tok, PROBLEMS, tmp_path / "out",
                             SamplingSettings(samples=4, max_new_tokens=8, max_batch_size=2))
    assert summary["n_samples"] == 8 and events.count("judged") == 8
    assert events.index("judged") < len(events) - 1 - events[::-1].index("sampled")  # overlap
    events.clear()
    again = evaluate_model(model, tok, PROBLEMS, tmp_path / "out",
                           SamplingSettings(samples=4, max_new_tokens=8, max_batch_size=3))
    assert events.count("judged") == 0 and again["pass_at_k"] == summary["pass_at_k"]


def test_a_sample_cut_to_nothing_keeps_its_raw_text_and_why(tmp_path):
    from codenas.model.tokenizer import load_tokenizer

    tok = load_tokenizer(make_tokenizer(tmp_path))
    model = ScriptedModel(tok, {PROBLEMS[0].prompt: "return a + b\n", PROBLEMS[1].prompt: "    return -x\n"})
    summary = evaluate_model(model, tok, PROBLEMS, tmp_path / "out", SamplingSettings(samples=1, max_new_tokens=20),
                             JudgeSettings(timeout=5))
    cut, passed = (row for _, row in read_jsonl(tmp_path / "out" / "results.jsonl"))
    assert cut["verdict"] == "cut" and cut["completion"] == "" and cut["raw"] == "return a + b\n"
    assert cut["cut_reason"].startswith("unindented code with no def add")
    assert passed["verdict"] == "passed" and "raw" not in passed
    assert summary["verdicts"]["cut"] == 1 and summary["verdicts"]["empty"] == 0
    samples = [row for _, row in read_jsonl(tmp_path / "out" / "samples.jsonl")]
    assert samples[0]["cut_reason"] == cut["cut_reason"] and "cut_reason" not in samples[1]
