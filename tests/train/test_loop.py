"""The shared loop with plugged-in parts (toy model, batch source, evaluation, checkpointer), schedule, dtype."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from codenas.io import CodenasError, atomic_directory, read_jsonl
from codenas.settings import TrainSettings
from codenas.train.loop import BEST, LAST, autocast_dtype, lr_at, make_optimizer, metrics_text, train, train_line


class CountingSource:
    """Batches of a noisy linear target; its state is a counter."""

    def __init__(self) -> None:
        self.drawn = 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.drawn)
        self.drawn += 1
        x = torch.randn(16, 4, generator=g)
        return {"input_ids": x, "y": x @ torch.tensor([1.0, -2.0, 3.0, 0.5])}

    def state_dict(self) -> dict:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        self.drawn = state["drawn"]


class MemoryCheckpointer:
    """Keeps what would be saved in memory (as an adapter-saving stage might write a small file)."""

    def __init__(self) -> None:
        self.saved: dict[str, dict] = {}

    def save(self, path: Path, model: nn.Module, *, step: int, metrics: dict, trainer_state: dict | None) -> None:
        self.saved[path.name] = {"step": step, "metrics": metrics, "trainer_state": trainer_state,
                                 "weights": {k: v.clone() for k, v in model.state_dict().items()}}
        path.mkdir(parents=True, exist_ok=True)

    def restore(self, path: Path, model: nn.Module) -> dict:
        model.load_state_dict(self.saved[path.name]["weights"])
        return self.saved[path.name]["trainer_state"]


def regression_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return ((model(batch["input_ids"]).squeeze(-1) - batch["y"]) ** 2).mean()


def _config(**overrides) -> TrainSettings:
    settings = dict(max_steps=12, lr=0.05, min_lr=0.005, warmup_steps=2, eval_interval=4, log_interval=2,
                    weight_decay=0.0, dtype="fp32", device="cpu")
    return TrainSettings(**{**settings, **overrides})


def test_custom_parts_best_by_max_metric_and_resume(tmp_path):
    scores = {4: 0.5, 8: 0.9, 12: 0.7}  # "higher is better", best at step 8

    def evaluate(model: nn.Module, step: int) -> dict[str, float]:
        assert not model.training and not torch.is_grad_enabled()
        return {"pass@1": scores[step], "val_loss": float(step)}

    ckpt = MemoryCheckpointer()
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    result = train(model, CountingSource(), _config(), tmp_path, evaluate=evaluate, checkpointer=ckpt,
                   loss_fn=regression_loss, best=(("pass@1", "max"),))
    assert (result.best_step, result.best_value) == (8, 0.9)
    assert ckpt.saved[BEST]["step"] == 8 and ckpt.saved[BEST]["trainer_state"] is None
    assert ckpt.saved[LAST]["trainer_state"]["ranks"][0]["batches"] == {"drawn": 12}
    rows = [row for _, row in read_jsonl(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12] and rows[1]["pass@1"] == 0.5
    assert rows[-1]["loss"] < rows[0]["loss"]

    scores.update({16: 0.95})
    resumed = train(nn.Linear(4, 1), CountingSource(), _config(max_steps=16, lr_decay_steps=12), tmp_path,
                    evaluate=evaluate, checkpointer=ckpt, loss_fn=regression_loss, best=(("pass@1", "max"),),
                    resume=True)
    assert resumed.step == 16 and (resumed.best_step, resumed.best_value) == (16, 0.95)
    assert resumed.tokens == 16 * 16 * 4


def test_evaluation_must_return_the_best_metric(tmp_path):
    with pytest.raises(CodenasError, match="val_loss"):
        train(nn.Linear(4, 1), CountingSource(), _config(max_steps=4), tmp_path,
              evaluate=lambda m, s: {"other": 1.0}, loss_fn=regression_loss)


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = _config(max_steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    decay = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert lr_at(100, cfg) == pytest.approx(0.1) and lr_at(55, cfg) == pytest.approx(0.55)


def test_weight_decay_only_on_matrices():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    groups = make_optimizer(model, _config(weight_decay=0.1), torch.device("cpu")).param_groups
    assert [len(g["params"]) for g in groups] == [2, 3] and [g["weight_decay"] for g in groups] == [0.1, 0.0]


def test_dtype_choice_and_bf16_training_on_cpu(tmp_path):
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("bf16", cpu) is torch.bfloat16
    result = train(nn.Linear(4, 1), CountingSource(), _config(max_steps=4, dtype="bf16"), tmp_path,
                   loss_fn=regression_loss)
    assert result.step == 4
    losses = [row["loss"] for _, row in read_jsonl(tmp_path / "metrics.jsonl")]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_auto_dtype_is_fp32_on_every_cpu(monkeypatch):
    import codenas.train.loop as loop

    monkeypatch.setattr(loop, "has_fast_bf16", lambda device: True)  # a CPU with AVX512-BF16 or AMX
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16


def test_bf16_training_keeps_torchs_norm_dtype_warning_off_the_console(tmp_path):
    import warnings

    from codenas.model.config import ArchConfig
    from codenas.model.model import GPT

    arch = ArchConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, context_length=8, vocab_size=64, bias=False,
                      position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True)

    class Tokens:
        def next_batch(self) -> dict[str, torch.Tensor]:
            x = torch.randint(0, 64, (2, 9))
            return {"input_ids": x[:, :-1], "targets": x[:, 1:]}

        def state_dict(self) -> dict:
            return {}

        def load_state_dict(self, state: dict) -> None:
            pass

    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(GPT(arch), Tokens(), _config(max_steps=2, dtype="bf16", eval_interval=1), tmp_path,
              evaluate=lambda model, step: {"val_loss": 1.0})
    assert not [w for w in caught if "Mismatch dtype" in str(w.message)]


def test_bad_settings_raise():
    with pytest.raises(CodenasError, match="dtype"):
        TrainSettings(dtype="fp16")
    with pytest.raises(CodenasError, match="min_lr"):
        TrainSettings(lr=1e-4, min_lr=1e-3)


def test_a_fresh_run_starts_a_fresh_log(tmp_path):
    for _ in range(2):
        train(nn.Linear(4, 1), CountingSource(), _config(max_steps=4), tmp_path, loss_fn=regression_loss)
    assert [row["step"] for _, row in read_jsonl(tmp_path / "metrics.jsonl")] == [2, 4]


def test_a_log_that_is_not_a_terminal_gets_a_compact_line_per_log_interval(tmp_path, capsys, monkeypatch):
    import codenas.progress as progress_mod

    monkeypatch.setattr(progress_mod, "_quiet", False)
    cfg = _config(max_steps=6, eval_interval=3, log_interval=2)
    train(nn.Linear(4, 1), CountingSource(), cfg, tmp_path, evaluate=lambda m, s: {"val_loss": 1.5},
          loss_fn=regression_loss, desc="test")
    err = capsys.readouterr().err  # captured: not a terminal
    lines = [line for line in err.splitlines() if line.startswith("test step ") and "|" in line]
    assert [line.split(" | ")[0] for line in lines] == [f"test step {s}/6" for s in (2, 3, 4, 6)]  # + evals
    for line in lines:
        assert re.search(r"\| loss \d+\.\d{4} \| lr \d\.\d\de-\d\d \| [\d,]+ tok/s \| ETA ", line), line
    assert lines[-1].endswith("ETA 0.0 s")
    assert "test step 3: val loss 1.5000" in err


def test_evaluation_metrics_are_shown_in_words():
    assert metrics_text({"val_loss": 3.821, "val_passed": 1, "val_pass@1": 0.1}) == (
        "val loss 3.8210, 1 val samples passed, val pass@1 10.0%")


def test_train_line_has_room_for_mfu():
    row = {"loss": 2.0, "lr": 1e-3, "tokens_per_s": 12345.6, "mfu": 0.123}
    assert train_line("pretrain", 40, 1200, row, 250.0) == (
        "pretrain step 40/1200 | loss 2.0000 | lr 1.00e-03 | 12,346 tok/s | MFU 12.3% | ETA 4 min 10 s")


def test_best_checkpoint_by_ordered_key_pass_count_then_lower_loss(tmp_path):
    # step 4: 1 passed; step 8: 2 passed (loss 3.0); step 12: 2 passed, lower loss -> best; step 16: 2 passed,
    # higher loss -> not best; a packed float would need the loss to stay in [0, 1) to order these
    scores = {4: (1, 0.5), 8: (2, 3.0), 12: (2, 2.5), 16: (2, 2.7)}

    def evaluate(model: nn.Module, step: int) -> dict[str, float]:
        passed, loss = scores[step]
        return {"val_passed": passed, "val_loss": loss}

    ckpt = MemoryCheckpointer()
    result = train(nn.Linear(4, 1), CountingSource(), _config(max_steps=16), tmp_path, evaluate=evaluate,
                   checkpointer=ckpt, loss_fn=regression_loss, best=(("val_passed", "max"), ("val_loss", "min")))
    assert result.best_step == 12 and result.best_metrics == {"val_passed": 2, "val_loss": 2.5}
    assert ckpt.saved[BEST]["step"] == 12


@pytest.mark.parametrize(("metrics", "best", "expected"), [
    ({"p": 3, "l": 9.0}, {"p": 2, "l": 0.1}, True),  # more passed wins whatever the loss
    ({"p": 2, "l": 0.2}, {"p": 2, "l": 0.3}, True),  # tie on passes: lower loss wins
    ({"p": 2, "l": 0.3}, {"p": 2, "l": 0.3}, False),  # a full tie is not an improvement
    ({"p": 1, "l": 0.0}, {"p": 2, "l": 5.0}, False),
])
def test_is_better_compares_the_key_in_order(metrics, best, expected):
    from codenas.train.loop import is_better

    assert is_better(metrics, best, (("p", "max"), ("l", "min"))) is expected


class Killed(BaseException):
    """Stands for a kill -9 at a chosen moment (nothing after it runs but ``finally`` blocks)."""


class DirCheckpointer:
    """Saves into a real directory with ``atomic_directory``, as the model checkpointers do."""

    def save(self, path: Path, model: nn.Module, *, step: int, metrics: dict, trainer_state: dict | None) -> None:
        with atomic_directory(path) as tmp:
            torch.save({"weights": model.state_dict(), "trainer_state": trainer_state}, tmp / "state.pt")

    def restore(self, path: Path, model: nn.Module) -> dict:
        saved = torch.load(path / "state.pt", weights_only=False)
        model.load_state_dict(saved["weights"])
        return saved["trainer_state"]


def _run(out: Path, checkpointer, resume: bool = False):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    train(model, CountingSource(), _config(), out, evaluate=lambda m, step: {"val_loss": 1.0 / step},
          checkpointer=checkpointer, loss_fn=regression_loss, resume=resume)
    return model


def test_a_kill_between_the_renames_of_a_checkpoint_still_resumes(tmp_path, monkeypatch):
    one_go = _run(tmp_path / "one_go", DirCheckpointer())
    real_replace, out = os.replace, tmp_path / "killed"

    def kill_after_moving_the_old_one_aside(src, dst):
        real_replace(src, dst)
        if Path(src).name == LAST and Path(dst).name.endswith(".old"):
            raise Killed  # checkpoint_last (step 4) is only under its .old name; step 8 is not in place yet

    with monkeypatch.context() as m:
        m.setattr(os, "replace", kill_after_moving_the_old_one_aside)
        with pytest.raises(Killed):
            _run(out, DirCheckpointer())
    assert not (out / LAST).exists()
    resumed = _run(out, DirCheckpointer(), resume=True)
    assert torch.equal(resumed.weight, one_go.weight) and torch.equal(resumed.bias, one_go.bias)
    assert [row["step"] for _, row in read_jsonl(out / "metrics.jsonl")] == [2, 4, 6, 8, 10, 12]
    assert not [p.name for p in out.iterdir() if p.name.endswith((".old", ".tmp"))]  # leftovers cleaned


def test_a_kill_between_the_checkpoint_and_the_log_loses_no_row(tmp_path):
    class KilledAfterSaving(DirCheckpointer):
        def save(self, path, model, **kwargs):
            super().save(path, model, **kwargs)
            if path.name == LAST and kwargs["step"] == 8:
                raise Killed

    with pytest.raises(Killed):
        _run(tmp_path, KilledAfterSaving())
    _run(tmp_path, DirCheckpointer(), resume=True)
    rows = [row for _, row in read_jsonl(tmp_path / "metrics.jsonl")]
    assert [row["step"] for row in rows] == [2, 4, 6, 8, 10, 12]
    assert all("val_loss" in row for row in rows if row["step"] % 4 == 0)
