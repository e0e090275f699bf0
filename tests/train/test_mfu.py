"""MFU: the peak table, the formula, and the loop logging it beside tokens/s when a peak is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from codenas.io import CodenasError, read_jsonl
from codenas.model.model import parameter_counts
from codenas.settings import TrainSettings
from codenas.train.loop import train
from codenas.train.mfu import device_peak_flops, mfu, peak_flops_for_name
from tests.train.test_loop import CountingSource, MemoryCheckpointer, regression_loss


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H200", 989e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GH200 480GB", 989e12), ("NVIDIA L4", 121e12),
    ("Tesla T4", None), ("cpu", None),
])
def test_peak_table(name, peak):
    assert peak_flops_for_name(name) == peak


def test_peak_override_and_cpu_has_none():
    assert device_peak_flops("cpu") is None
    assert device_peak_flops("cpu", 2e12) == 2e12


def test_mfu_formula_counts_tied_weights_once():
    model = nn.Linear(10, 10, bias=False)
    model.other = nn.Linear(10, 10, bias=True)
    model.other.weight = model.weight  # tied
    model.other.bias.requires_grad_(False)  # frozen parameters count too: they cost FLOPs
    assert parameter_counts(model) == (100, 110)
    assert mfu(1_000_000, 1000.0, 12e9) == pytest.approx(0.5)  # 6 * 1e6 * 1e3 / 12e9


def test_loop_logs_mfu_with_peak_and_not_without(tmp_path):
    settings = dict(max_steps=4, lr=0.01, min_lr=0.001, warmup_steps=1, eval_interval=0, log_interval=2,
                    dtype="fp32", device="cpu")
    train(nn.Linear(4, 1), CountingSource(), TrainSettings(**settings, peak_flops=1e9), tmp_path / "a",
          loss_fn=regression_loss)
    rows = [row for _, row in read_jsonl(tmp_path / "a" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert r["mfu"] == pytest.approx(6 * 5 * r["tokens_per_s"] / 1e9)
    train(nn.Linear(4, 1), CountingSource(), TrainSettings(**settings), tmp_path / "b", loss_fn=regression_loss)
    assert all("mfu" not in row for _, row in read_jsonl(tmp_path / "b" / "metrics.jsonl"))


def test_negative_peak_is_refused():
    with pytest.raises(CodenasError, match="peak_flops"):
        TrainSettings(peak_flops=-1.0)


def test_prefetched_batches_resume_exactly(tmp_path):
    """The batch drawn ahead is not counted as consumed: N steps, resume, M steps == N + M steps."""
    settings = dict(lr=0.05, min_lr=0.005, warmup_steps=1, lr_decay_steps=6, eval_interval=3, log_interval=1,
                    weight_decay=0.0, dtype="fp32", device="cpu")

    def evaluate(model, step):
        return {"val_loss": float(sum(p.abs().sum() for p in model.parameters()))}

    torch.manual_seed(0)
    straight = nn.Linear(4, 1)
    train(straight, CountingSource(), TrainSettings(max_steps=6, **settings), tmp_path / "s", evaluate=evaluate,
          checkpointer=MemoryCheckpointer(), loss_fn=regression_loss)
    torch.manual_seed(0)
    resumed, ckpt, source = nn.Linear(4, 1), MemoryCheckpointer(), CountingSource()
    train(resumed, source, TrainSettings(max_steps=3, **settings), tmp_path / "r", evaluate=evaluate,
          checkpointer=ckpt, loss_fn=regression_loss)
    assert ckpt.saved["checkpoint_last"]["trainer_state"]["ranks"][0]["batches"] == {"drawn": 3}
    train(resumed, CountingSource(), TrainSettings(max_steps=6, **settings), tmp_path / "r", resume=True,
          evaluate=evaluate, checkpointer=ckpt, loss_fn=regression_loss)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
