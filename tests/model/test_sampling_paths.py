"""Every decode path gives the samples it gave when they were recorded in ``sampling_paths.json``: the
continuously refilled batch (several batch sizes, greedy, top-p, stop strings, the context limit), the stream's
finishing order, the reference path without a cache and the left-padded batches of an ``hf:`` model.

The samples come from tiny seeded models (random weights, CPU, float32), so they are the same on every run;
rerecord them (``python tests/model/test_sampling_paths.py``) only when a change is meant to change what is
sampled.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from codenas.model.config import ArchConfig
from codenas.model.export_hf import hf_model_for
from codenas.model.hf import HFCausalLM
from codenas.model.model import GPT
from codenas.model.sampling import generate, stream
from codenas.model.tokenizer import load_tokenizer, train_tokenizer
from tests.model.conftest import CORPUS

RECORDED = Path(__file__).with_name("sampling_paths.json")
PROMPTS = ["def add(a, b):\n", "", "class Stack:\n    def push(self, item):\n        self.",
           "for i in range(10):\n    print(i, add(i, i * 2), fib(i))\n" * 2 + "def fib(n):\n", "x = 1"]
STOP = ("\n\n", " self", "e")


def _models(tokenizer) -> dict[str, torch.nn.Module]:
    vocab = tokenizer.get_vocab_size()
    torch.manual_seed(0)
    gpt2 = GPT(ArchConfig(n_layer=2, n_head=4, d_model=32, d_ff=64, context_length=64, vocab_size=vocab)).eval()
    torch.manual_seed(1)
    modern = GPT(ArchConfig(n_layer=2, n_head=4, n_kv_head=2, d_model=32, d_ff=64, context_length=48,
                            vocab_size=vocab, position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True,
                            bias=False, tie_embeddings=False)).eval()
    hf = HFCausalLM(hf_model_for(gpt2, eos_id=tokenizer.token_to_id("<|endoftext|>")))
    return {"gpt2": gpt2, "modern": modern, "hf": hf}


def _samples(tokenizer) -> dict[str, list]:
    """What each path samples, keyed by ``model/path/settings``."""
    models = _models(tokenizer)
    settings = {
        "top-p-stop": dict(n=2, max_new_tokens=14, temperature=0.8, top_p=0.9, seed=1, stop=STOP),
        "full-softmax": dict(n=2, max_new_tokens=14, temperature=1.2, top_p=1.0, seed=2),
        "greedy": dict(n=1, max_new_tokens=14, temperature=0.0),
    }
    calls = {
        "gpt2": {"reference": dict(use_cache=False), "batched": {}, "refilled": dict(max_batch_size=3)},
        "modern": {"reference": dict(use_cache=False), "refilled": dict(max_batch_size=3)},
        "hf": {"padded": dict(max_batch_size=3)},
    }
    runs: dict[str, list] = {}
    for name, paths in calls.items():
        for path, options in paths.items():
            for setting, kwargs in settings.items():
                if name == "modern" and setting != "top-p-stop":
                    continue
                runs[f"{name}/{path}/{setting}"] = generate(models[name], tokenizer, PROMPTS, **options, **kwargs)
            order = stream(models[name], tokenizer, PROMPTS, **options, **settings["top-p-stop"])
            runs[f"{name}/{path}/stream-order"] = [list(item) for item in order]
    return runs


def _tokenizer(folder: Path):
    corpus = folder / "corpus.py"
    corpus.write_text(CORPUS * 3, encoding="utf-8")
    return load_tokenizer(train_tokenizer([corpus], vocab_size=400, out=folder / "tokenizer.json"))


def test_every_path_samples_what_was_recorded(tmp_path):
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    runs = _samples(_tokenizer(tmp_path))
    assert runs.keys() == recorded.keys()
    for key, samples in runs.items():
        assert samples == recorded[key], key


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        result = _samples(_tokenizer(Path(tmp)))
    RECORDED.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"recorded {len(result)} runs in {RECORDED}", file=sys.stderr)
