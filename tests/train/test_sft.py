"""Fine-tuning (full SFT): loss masks, batching, the seed's command shape end to end, flag checks, exact resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from codenas.cli import cli
from codenas.io import CodenasError, read_jsonl
from codenas.model.checkpoint import load_checkpoint
from codenas.model.model import GPT
from codenas.model.tokenizer import eot_id, load_tokenizer, pad_id
from codenas.records import Record, read_records
from codenas.settings import FINETUNE_TRAIN, SamplingSettings
from codenas.train import sft
from codenas.train.batching import IGNORE_INDEX, SupervisedBatches, collate, encode_records
from codenas.train.sft import finetune
from tests.train.finetune_fixtures import make_base, make_records, make_tokenizer, tiny_arch


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sft")
    make_base(folder, dropout=0.1)
    make_records(folder)
    return folder


def _examples(folder: Path, context_length: int = 96):
    tok = load_tokenizer(folder / "tokenizer.json")
    records = read_records(folder / "train.jsonl")
    return tok, records, encode_records(records, tok, eot_id(tok), context_length)


def test_targets_are_masked_on_prompt_and_padding(workdir):
    tok, records, (examples, dropped) = _examples(workdir)
    assert dropped == 0
    inputs, targets = collate(examples[:3], pad_id(tok))
    for row, (rec, ex) in enumerate(zip(records, examples[:3], strict=False)):
        prompt_len = len(tok.encode(rec.prompt, add_special_tokens=False).ids)
        assert ex.n_prompt == prompt_len
        supervised = targets[row][targets[row] != IGNORE_INDEX].tolist()
        # exactly the solution tokens followed by end-of-text, nothing of the prompt or the padding
        assert tok.decode(supervised[:-1]) == rec.solution
        assert supervised[-1] == eot_id(tok)
        assert (targets[row, : prompt_len - 1] == IGNORE_INDEX).all()
        assert inputs[row, : prompt_len].tolist() == tok.encode(rec.prompt, add_special_tokens=False).ids


def test_prompt_tokens_contribute_no_loss(workdir):
    tok, _, (examples, _) = _examples(workdir)
    inputs, targets = collate(examples[:2], pad_id(tok))
    torch.manual_seed(0)
    model = GPT(tiny_arch()).eval()
    logits, loss = model(inputs, targets)
    keep = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(loss, expected)
    # the loss has zero gradient with respect to every prediction made at a prompt (or padding) position
    leaf = logits.detach().requires_grad_(True)
    F.cross_entropy(leaf.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX).backward()
    per_position = leaf.grad.abs().sum(-1)
    for row, ex in enumerate(examples[:2]):
        assert (per_position[row, : ex.n_prompt - 1] == 0).all()
        assert (per_position[row, ex.n_prompt - 1: len(ex.ids) - 1] > 0).all()
        assert (per_position[row, len(ex.ids) - 1:] == 0).all()


def test_long_prompts_are_dropped_and_long_solutions_truncated(workdir):
    tok = load_tokenizer(workdir / "tokenizer.json")
    long_prompt = Record("p", "t", "def f():\n" + "    x = 1\n" * 40, "    return 1\n", "assert f() == 1", "f")
    long_solution = Record("s", "t", "def g():\n", "    y = 2\n" * 40, "assert g() is None", "g")
    examples, dropped = encode_records([long_prompt, long_solution], tok, eot_id(tok), 32)
    assert dropped == 1 and len(examples) == 1
    assert len(examples[0].ids) == 33 and examples[0].ids[-1] != eot_id(tok)


def test_batches_are_seeded_and_resumable(workdir):
    tok, _, (examples, _) = _examples(workdir)
    a = SupervisedBatches(examples, 4, pad_id(tok), seed=3)
    first = [a.next_batch() for _ in range(5)]
    b = SupervisedBatches(examples, 4, pad_id(tok), seed=3)
    b.load_state_dict({"drawn": 2})
    for expected in first[2:]:
        got = b.next_batch()
        assert torch.equal(got["input_ids"], expected["input_ids"])
    # ranks of one draw take disjoint rows; one epoch covers every example once
    ranks = [SupervisedBatches(examples, 3, pad_id(tok), seed=3, rank=r, world_size=2) for r in range(2)]
    assert sorted(ranks[0].indices(0) + ranks[1].indices(0)) == list(range(len(examples)))


def test_seed_command_shape_runs_end_to_end_with_an_eval_interval(workdir):
    out = workdir / "cli_sft"
    args = ["-q", "train", "sft", "--init_checkpoint", str(workdir / "base"), "--data_path",
            str(workdir / "train.jsonl"), "--val_path", str(workdir / "val.jsonl"), "--output_dir", str(out),
            "--max_steps", "2", "--lr", "1e-3", "--batch_size", "2", "--eval_interval", "2", "--dtype", "fp32",
            "--device", "cpu", "--eval-max-new-tokens", "8", "--arch_json", str(workdir / "arch.json")]
    (workdir / "arch.json").write_text(json.dumps(tiny_arch(dropout=0.1).to_dict()))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "trainable parameters" in result.output
    rows = [row for _, row in read_jsonl(out / "metrics.jsonl")]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [2]
    assert 0.0 <= evals[0]["val_pass@1"] <= 1.0 and evals[0]["val_loss"] > 0
    for folder in ("step2", "checkpoint_best", "checkpoint_last"):
        assert load_checkpoint(out / folder).meta["step"] == 2
    summary = json.loads((out / "evals" / "step2" / "summary.json").read_text())
    assert summary["n_samples"] == 2  # one sample per val record
    # the trained model is no longer the base
    base, tuned = load_checkpoint(workdir / "base").model, load_checkpoint(out / "step2").model
    assert not torch.equal(base.blocks[0].attn.qkv_proj.weight, tuned.blocks[0].attn.qkv_proj.weight)

    # the seed's run_mini_benchmark shape on the result: one checkpoint writes straight into --out
    ev = workdir / "cli_eval"
    result = CliRunner().invoke(cli, ["-q", "eval", "model", "--checkpoint", str(out / "step2"), "--problems",
                                      str(workdir / "val.jsonl"), "--samples", "1", "--temperature", "0.8",
                                      "--max-new-tokens", "8", "--out", str(ev)])
    assert result.exit_code == 0, result.output
    assert json.loads((ev / "summary.json").read_text())["n_samples"] == 2
    assert len(list(read_jsonl(ev / "samples.jsonl"))) == len(list(read_jsonl(ev / "results.jsonl"))) == 2


def test_given_arch_or_tokenizer_must_match_the_checkpoint(workdir, tmp_path):
    common = dict(init_checkpoint=str(workdir / "base"), data_path=workdir / "train.jsonl", out=tmp_path / "x",
                  training=dataclasses.replace(FINETUNE_TRAIN, max_steps=1, device="cpu"))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**tiny_arch().to_dict(), "n_layer": 3}))
    with pytest.raises(CodenasError, match="n_layer"):
        finetune(**common, arch_json=str(other))
    other_tok = make_tokenizer(tmp_path)
    other_tok.write_text(other_tok.read_text() + "\n")  # same tokens, different file
    with pytest.raises(CodenasError, match="not the tokenizer"):
        finetune(**common, tokenizer_path=other_tok)


def _interrupt_at(monkeypatch, step: int) -> None:
    real = sft.Evaluator.__call__

    def evaluate(self, model, at):
        if at == step:
            raise KeyboardInterrupt
        return real(self, model, at)

    monkeypatch.setattr(sft.Evaluator, "__call__", evaluate)


def test_resumed_run_ends_with_the_same_weights(workdir, tmp_path, monkeypatch):
    def run(out: Path, resume: bool = False):
        cfg = dataclasses.replace(FINETUNE_TRAIN, max_steps=4, eval_interval=2, batch_size=2, lr=1e-3, dtype="fp32",
                                  device="cpu")
        return finetune(init_checkpoint=str(workdir / "base"), data_path=workdir / "train.jsonl", out=out,
                        training=cfg, sampling=SamplingSettings(samples=0), resume=resume)

    run(tmp_path / "straight")
    with monkeypatch.context() as m:
        _interrupt_at(m, 4)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint_last").meta["step"] == 2
    run(tmp_path / "resumed", resume=True)
    a = load_checkpoint(tmp_path / "straight" / "checkpoint_last").model.state_dict()
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint_last").model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps = [row["step"] for _, row in read_jsonl(tmp_path / "resumed" / "metrics.jsonl") if "val_loss" in row]
    assert steps == [2, 4]


def test_bare_weights_file_needs_arch_and_tokenizer(workdir, tmp_path):
    from codenas.model.loading import load_model

    model = load_checkpoint(workdir / "base").model
    weights = tmp_path / "seed.pt"
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}}, weights)
    with pytest.raises(CodenasError, match="--arch_json and --tokenizer_path"):
        load_model(str(weights))
    with pytest.raises(CodenasError, match="the tokenizer has 300 tokens but the arch's vocab_size is 256"):
        load_model(str(weights), arch=dataclasses.replace(tiny_arch(), vocab_size=256),
                  tokenizer_path=workdir / "tokenizer.json")
    base = load_model(str(weights), arch=tiny_arch(dropout=0.1), tokenizer_path=workdir / "tokenizer.json")
    ids = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        assert torch.equal(base.model(ids)[0], model(ids)[0])


def test_checkpoint_globs_sort_by_step(tmp_path):
    from codenas.eval.checkpoints import expand_checkpoints

    for name in ("step10", "step2", "step100", "checkpoint_best"):
        (tmp_path / name).mkdir()
    got = expand_checkpoints([str(tmp_path / "step*"), str(tmp_path / "checkpoint_best")])
    assert [Path(p).name for p in got] == ["step2", "step10", "step100", "checkpoint_best"]
    with pytest.raises(CodenasError, match="no checkpoint folder"):
        expand_checkpoints([str(tmp_path / "nothing*")])


def test_records_dropped_for_filling_the_context_are_written_with_their_reason(workdir, tmp_path):
    records = read_records(workdir / "train.jsonl")
    long_prompt = dataclasses.replace(records[0], id="long", prompt="def f():\n" + "    x = 1\n" * 60)
    from codenas.records import write_records

    write_records(tmp_path / "train.jsonl", [*records, long_prompt])
    write_records(tmp_path / "val.jsonl", [records[0], long_prompt])
    cfg = dataclasses.replace(FINETUNE_TRAIN, max_steps=1, batch_size=2, dtype="fp32", device="cpu")
    result = finetune(init_checkpoint=str(workdir / "base"), data_path=tmp_path / "train.jsonl", out=tmp_path / "out",
                      training=cfg, sampling=SamplingSettings(samples=0))
    drops = {"train": {"prompt fills the context": 1}, "val": {"prompt fills the context": 1}}
    assert result["dropped"] == drops and result["dropped_examples"] == 1
    assert result["train_examples"] == len(records)
    settings = json.loads((tmp_path / "out" / "finetune.json").read_text())
    assert settings["dropped"] == drops
    assert settings["records"] == {"train": len(records) + 1, "val": 2}
    assert settings["examples"] == {"train": len(records), "val": 1}


def test_a_rerun_refuses_a_folder_holding_a_run_and_overwrite_starts_over(workdir, tmp_path):
    def run(max_steps: int, **kwargs):
        cfg = dataclasses.replace(FINETUNE_TRAIN, max_steps=max_steps, eval_interval=2, batch_size=2, dtype="fp32",
                                  device="cpu")
        return finetune(init_checkpoint=str(workdir / "base"), data_path=workdir / "train.jsonl",
                        out=tmp_path / "out", training=cfg, sampling=SamplingSettings(samples=0), **kwargs)

    run(4)
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"step2", "step4", "checkpoint_last"}
    with pytest.raises(CodenasError, match="holds a run at step 4: --resume to continue, --overwrite to start over"):
        run(2)
    run(2, overwrite=True)
    assert not (tmp_path / "out" / "step4").exists()  # the earlier run's step folders went with it
    assert load_checkpoint(tmp_path / "out" / "checkpoint_last").meta["step"] == 2
