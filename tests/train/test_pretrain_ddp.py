"""DDP: `torchrun --nproc_per_node 2` (gloo on CPU) trains, only rank 0 writes, every rank's state is saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from codenas.io import read_jsonl
from codenas.model.checkpoint import load_trainer_state
from codenas.train.loop import LAST


def test_torchrun_two_processes(small_corpus, small_tokenizer, micro_arch, tmp_path):
    arch = tmp_path / "micro.json"
    arch.write_text(json.dumps(micro_arch.to_dict()))
    out = tmp_path / "run"
    config = tmp_path / "corpus.toml"  # rank 0 builds the folder's corpus (small and quick), rank 1 waits for it
    config.write_text("[corpus]\ntasks = 2\nworkers = 1\nval_fraction = 0.1\ndecontaminate = false\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "codenas.cli", "-q", "train", "pretrain", "--arch", str(arch), "--tokenizer", str(small_tokenizer),
           "--corpus", str(small_corpus), "--out", str(out), "--max-steps", "3", "--batch-size", "4",
           "--eval-batches", "2", "--device", "cpu", "--dtype", "fp32", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("3 steps, 768 tokens") == 1  # 3 steps x 2 ranks x 4 x 32 tokens; rank 0 reports
    state = load_trainer_state(out / LAST)
    ranks = state["ranks"]
    assert len(ranks) == 2
    assert not torch.equal(ranks[0]["batches"]["generator"], ranks[1]["batches"]["generator"])
    assert [row["step"] for _, row in read_jsonl(out / "metrics.jsonl")] == [3]
