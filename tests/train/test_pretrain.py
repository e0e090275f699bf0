"""Pretraining end to end on a small stdlib corpus: loss falls, exact resume, checkpoints, metrics, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from codenas.cli import cli
from codenas.io import CodenasError, read_json, read_jsonl
from codenas.model.checkpoint import WEIGHTS, load_checkpoint
from codenas.settings import TrainSettings
from codenas.train.loop import BEST, LAST
from codenas.train.pretrain import pretrain


def _config(**overrides) -> TrainSettings:
    settings = dict(max_steps=10, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=5, eval_interval=5,
                    eval_batches=2, log_interval=1, dtype="fp32", device="cpu", seed=7)
    return TrainSettings(**{**settings, **overrides})


def _rows(run_dir) -> list[dict]:
    return [row for _, row in read_jsonl(run_dir / "metrics.jsonl")]


def test_loss_falls_over_50_steps(small_corpus, small_tokenizer, micro_arch, tmp_path):
    result = pretrain(arch=micro_arch, tokenizer=small_tokenizer, corpus=small_corpus, out=tmp_path,
                      training=_config(max_steps=50, eval_interval=10, log_interval=10, lr=1e-2, min_lr=1e-3))
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.3
    assert rows[-1]["val_loss"] < math.log(512) - 0.5  # an untrained model scores about ln(vocab)
    assert result["best_val_loss"] == min(r["val_loss"] for r in rows)
    assert result["final_val_loss"] == rows[-1]["val_loss"]
    assert result["tokens"] == 50 * 8 * 32 and result["steps"] == 50
    best = load_checkpoint(result["best_checkpoint"])
    assert best.meta["metrics"]["val_loss"] == result["best_val_loss"]
    assert all(k in rows[0] for k in ("loss", "lr", "tokens", "tokens_per_s", "val_loss"))


def test_resume_continues_exactly(small_corpus, small_tokenizer, micro_arch, tmp_path):
    common = dict(eval_interval=3, lr_decay_steps=8, grad_accum=2)
    kwargs = dict(arch=micro_arch, tokenizer=small_tokenizer, corpus=small_corpus)
    pretrain(out=tmp_path / "one_go", training=_config(max_steps=8, **common), **kwargs)
    pretrain(out=tmp_path / "split", training=_config(max_steps=5, **common), **kwargs)
    resumed = pretrain(out=tmp_path / "split", training=_config(max_steps=8, **common), resume=True, **kwargs)
    assert resumed["steps"] == 8 and resumed["tokens"] == 8 * 2 * 8 * 32
    one_go = load_file(tmp_path / "one_go" / LAST / "model.safetensors")
    split = load_file(tmp_path / "split" / LAST / "model.safetensors")
    assert one_go.keys() == split.keys()
    assert all(torch.equal(one_go[k], split[k]) for k in one_go)
    losses = {r["step"]: r["loss"] for r in _rows(tmp_path / "one_go")}
    assert {r["step"]: r["loss"] for r in _rows(tmp_path / "split")} == losses
    assert sorted(losses) == list(range(1, 9))


def test_resume_truncates_rows_logged_after_the_checkpoint(small_corpus, small_tokenizer, micro_arch, tmp_path):
    kwargs = dict(arch=micro_arch, tokenizer=small_tokenizer, corpus=small_corpus, out=tmp_path)
    pretrain(training=_config(max_steps=4, eval_interval=2), **kwargs)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "loss": 1.0}\n{"step": 10, "lo')  # rows of a killed run, one torn
    pretrain(training=_config(max_steps=6, eval_interval=2), resume=True, **kwargs)
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_resume_without_checkpoint_fails(small_corpus, small_tokenizer, micro_arch, tmp_path):
    with pytest.raises(CodenasError, match="nothing to resume"):
        pretrain(arch=micro_arch, tokenizer=small_tokenizer, corpus=small_corpus, out=tmp_path,
                 training=_config(max_steps=2), resume=True)


def test_vocab_larger_than_arch_is_rejected(small_corpus, small_tokenizer, micro_arch, tmp_path):
    import dataclasses

    with pytest.raises(CodenasError, match="vocab_size"):
        pretrain(arch=dataclasses.replace(micro_arch, vocab_size=256), tokenizer=small_tokenizer,
                 corpus=small_corpus, out=tmp_path, training=_config(max_steps=1))


def test_checkpoints_carry_arch_tokenizer_and_step(small_corpus, small_tokenizer, micro_arch, tmp_path):
    result = pretrain(arch=micro_arch, tokenizer=small_tokenizer, corpus=small_corpus, out=tmp_path,
                      training=_config(max_steps=4, eval_interval=2))
    last = load_checkpoint(tmp_path / LAST)
    assert last.meta["step"] == 4 and last.arch == micro_arch
    assert (tmp_path / LAST / "trainer_state.pt").is_file()
    assert not (tmp_path / BEST / "trainer_state.pt").exists()
    assert read_json(tmp_path / "pretrain.json")["arch"]["name"] == "micro"
    assert result["last_checkpoint"] == str(tmp_path / LAST)


def test_cli_tokenizer_train_and_pretrain(small_corpus, micro_arch, tmp_path):
    runner = CliRunner()
    tok = tmp_path / "tok.json"
    config = tmp_path / "corpus.toml"  # how both commands build the corpus of the folder
    config.write_text("[corpus]\nmax_files = 40\nval_fraction = 0.1\ntasks = 2\nworkers = 1\n")
    res = runner.invoke(cli, ["-q", "tokenizer", "train", "--vocab-size", "512", "--corpus", str(small_corpus),
                              "--out", str(tok), "--config", str(config)])
    assert res.exit_code == 0, res.output
    assert "held-out chars/token:" in res.output and tok.is_file()
    arch = tmp_path / "micro.json"
    arch.write_text(__import__("json").dumps(micro_arch.to_dict()))
    res = runner.invoke(cli, ["-q", "train", "pretrain", "--arch", str(arch), "--tokenizer", str(tok),
                              "--corpus", str(small_corpus), "--out", str(tmp_path / "run"), "--max-steps", "3",
                              "--batch-size", "4", "--eval-batches", "1", "--dtype", "fp32", "--device", "cpu",
                              "--config", str(config)])
    assert res.exit_code == 0, res.output
    assert "3 steps, 384 tokens" in res.output
    assert (tmp_path / "run" / BEST / "model.safetensors").is_file()
    corpus = read_json(tmp_path / "run" / "pretrain.json")["corpus"]
    manifest = read_json(Path(corpus["corpus"]) / "manifest.json")  # built with the config's [corpus] settings
    assert manifest["settings"]["max_files"] == 40 and manifest["sources"][str(small_corpus)]["files"] == 40
    res = runner.invoke(cli, ["train", "pretrain", "--arch", str(arch), "--tokenizer", str(tok),
                              "--out", str(tmp_path / "run2"), "--max-steps", "1", "--corpus", str(tmp_path / "none")])
    assert res.exit_code != 0 and "not found" in res.output
    small_vocab = tmp_path / "small_vocab.json"
    small_vocab.write_text(__import__("json").dumps({**micro_arch.to_dict(), "vocab_size": 300}))
    res = runner.invoke(cli, ["train", "pretrain", "--arch", str(small_vocab), "--tokenizer", str(tok),
                              "--out", str(tmp_path / "run3"), "--max-steps", "1", "--corpus", str(small_corpus)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "tokenizer has 512 tokens but the arch's vocab_size is 300" in res.output


def test_proxy_run_reports_evaluations_and_writes_no_checkpoints(small_corpus, small_tokenizer, micro_arch,
                                                                  tmp_path):
    seen = []
    result = pretrain(arch=micro_arch, tokenizer=small_tokenizer, corpus=small_corpus, out=tmp_path,
                      training=_config(max_steps=4, eval_interval=2), on_eval=lambda s, m: seen.append((s, m)),
                      save_checkpoints=False)
    assert [s for s, _ in seen] == [2, 4] and seen[-1][1]["val_loss"] == result["final_val_loss"]
    assert result["best_checkpoint"] is None and result["last_checkpoint"] is None
    assert not (tmp_path / LAST).exists() and not (tmp_path / BEST).exists()

    def stop(step: int, metrics: dict) -> None:
        raise KeyboardInterrupt("pruned")

    with pytest.raises(KeyboardInterrupt):
        pretrain(arch=micro_arch, tokenizer=small_tokenizer, corpus=small_corpus, out=tmp_path / "pruned",
                 training=_config(max_steps=4, eval_interval=2), on_eval=stop)
    assert [r["step"] for r in _rows(tmp_path / "pruned")] == [1]


def test_a_rerun_refuses_a_folder_holding_a_run_until_resume_or_overwrite(small_corpus, small_tokenizer, micro_arch,
                                                                        tmp_path, capsys, monkeypatch):
    import codenas.progress as progress_mod

    kwargs = dict(arch=micro_arch, tokenizer=small_tokenizer, corpus=small_corpus, out=tmp_path)
    pretrain(training=_config(max_steps=4, eval_interval=2), **kwargs)
    log = (tmp_path / "metrics.jsonl").read_bytes()
    with pytest.raises(CodenasError, match="holds a run at step 4: --resume to continue, --overwrite to start over"):
        pretrain(training=_config(max_steps=6, eval_interval=2), **kwargs)
    assert (tmp_path / "metrics.jsonl").read_bytes() == log  # nothing touched
    with pytest.raises(CodenasError, match="give one"):
        pretrain(training=_config(max_steps=6, eval_interval=2), resume=True, overwrite=True, **kwargs)

    monkeypatch.setattr(progress_mod, "_quiet", False)
    pretrain(training=_config(max_steps=6, eval_interval=2), resume=True, **kwargs)
    assert f"pretrain: resuming from {tmp_path / LAST} (step 4 of 6)" in capsys.readouterr().err
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2, 3, 4, 5, 6]

    pretrain(training=_config(max_steps=2, eval_interval=2), overwrite=True, **kwargs)
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2]
    assert load_checkpoint(tmp_path / LAST).meta["step"] == 2 and load_checkpoint(tmp_path / BEST).meta["step"] == 2


def test_the_cli_refuses_a_rerun_in_one_line(small_corpus, small_tokenizer, micro_arch, tmp_path):
    arch = tmp_path / "micro.json"
    arch.write_text(__import__("json").dumps(micro_arch.to_dict()))
    args = ["-q", "train", "pretrain", "--arch", str(arch), "--tokenizer", str(small_tokenizer), "--corpus",
            str(small_corpus), "--out", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "4",
            "--eval-batches", "1", "--dtype", "fp32", "--device", "cpu"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [
        f"Error: {tmp_path / 'run'}: holds a run at step 2: --resume to continue, --overwrite to start over"]
    assert CliRunner().invoke(cli, [*args, "--overwrite"]).exit_code == 0


@pytest.mark.parametrize("failure", ["oserror", "safetensors"])
def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(failure, small_corpus, small_tokenizer,
                                                                      micro_arch, tmp_path, monkeypatch):
    import errno
    import os

    from safetensors import SafetensorError

    import codenas.model.checkpoint as checkpoint_mod

    kwargs = dict(arch=micro_arch, tokenizer=small_tokenizer, corpus=small_corpus,
                  training=_config(max_steps=6, eval_interval=2))
    pretrain(out=tmp_path / "one_go", **kwargs)
    out, real, writes = tmp_path / "full", checkpoint_mod.save_file, []

    def full_disk(tensors, filename, *args, **kw):  # the second checkpoint_last (step 4) meets a full disk
        writes.append(filename)
        if sum(f".{LAST}." in w for w in writes) == 2:
            with open(filename, "wb") as f:
                f.write(b"\0" * 64)  # a partial file, as the writer leaves it
            if failure == "oserror":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, *args, **kw)

    with monkeypatch.context() as m:
        m.setattr(checkpoint_mod, "save_file", full_disk)
        with pytest.raises(CodenasError) as caught:
            pretrain(out=out, **kwargs)
    message = str(caught.value)
    assert message.startswith(f"{out / LAST}: cannot write the checkpoint of step 4 (")
    assert "No space left on device" in message and " MiB free" in message
    assert message.endswith(f"{LAST} of step 2 is intact: free space, then rerun with --resume")
    assert load_checkpoint(out / LAST).meta["step"] == 2  # the previous complete checkpoint, untouched
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".old"))]  # the half-written one is gone
    pretrain(out=out, resume=True, **kwargs)
    one_go, resumed = load_file(tmp_path / "one_go" / LAST / "model.safetensors"), load_file(out / LAST / WEIGHTS)
    assert all(torch.equal(one_go[k], resumed[k]) for k in one_go)


def test_an_arch_far_too_large_is_refused_before_anything_is_built(small_corpus, small_tokenizer, micro_arch,
                                                                   tmp_path):
    import dataclasses

    from codenas.model.memory import device_memory_bytes, size_text

    huge = dataclasses.replace(micro_arch, d_model=10**9, n_head=2, d_ff=4 * 10**9)
    with pytest.raises(CodenasError) as caught:
        pretrain(arch=huge, tokenizer=small_tokenizer, corpus=small_corpus, out=tmp_path / "out",
                 training=_config(max_steps=1))
    message = str(caught.value)
    assert "this arch needs at least" in message and "EiB to train" in message
    assert message.endswith(f"the device cpu has {size_text(device_memory_bytes('cpu'))}")
    assert not (tmp_path / "out").exists()
