"""Batch invariance of sampling: how often a sample changes when the same prompts come in another order or grouping.

A sample's t-th token is drawn with a uniform number that is a hash of (seed, prompt, sample index, t), so in exact
arithmetic a prompt's samples do not depend on the other prompts of the call. In floating point the logits of a
row depend slightly on the batch it is computed in (matmul kernels block and sum differently for other shapes),
and a draw that lands within that difference of a boundary between two tokens picks the other token; from there
the sample differs. This script measures how often that happens with a *trained* small model.

The model: ``--checkpoint`` (a codenas checkpoint), else one trained here: a BPE tokenizer and the ``--arch``
GPT pretrained for ``--steps`` steps on ``--files`` stdlib files (fp32, CPU; in a temporary folder, or in
``--keep DIR`` to reuse it with ``--checkpoint``). Prompts: the first ``--prompts`` HumanEval prompts,
``--samples`` samples each, at the evaluation's settings (temperature 0.8, top-p 0.95, the judge's stop strings,
``--max-new-tokens``). Runs compared with the reference (all prompts in order, the default batch):

- ``reordered``: the prompts in reverse order, at most ``--batch`` rows decoded together;
- ``alone``: each prompt in a call of its own.

Prints, per run, the samples whose text differs from the reference; the last line is
``changed_samples_fraction: X`` over both runs.

    python benchmarks/sampling_batch_invariance.py --steps 400 --prompts 40 --samples 5
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch


def train_model(args: argparse.Namespace, tmp: Path) -> Path:
    """A pretrained checkpoint folder: the given one, or one trained here."""
    if args.checkpoint:
        return Path(args.checkpoint)
    if args.keep:
        tmp = Path(args.keep)
    from codenas.model.config import load_arch
    from codenas.model.tokenizer import load_tokenizer, sample_files, stdlib_dir, stdlib_files, train_tokenizer
    from codenas.settings import PretrainSettings, TrainSettings
    from codenas.train.pretrain import pretrain

    os.environ["CODENAS_HOME"] = str(tmp / "home")  # the token cache stays in the temporary folder
    corpus = tmp / "corpus"
    for f in sample_files(stdlib_files(), stdlib_dir(), args.files):
        dest = corpus / f.relative_to(stdlib_dir())
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read_bytes())
    tokenizer = train_tokenizer(sorted(corpus.rglob("*.py")), args.vocab_size, tmp / "tokenizer.json")
    arch = dataclasses.replace(load_arch(args.arch), vocab_size=load_tokenizer(tokenizer).get_vocab_size())
    training = TrainSettings(max_steps=args.steps, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=20,
                             eval_interval=args.steps, eval_batches=4, log_interval=50, dtype="fp32", device="cpu",
                             seed=0)
    start = time.perf_counter()
    result = pretrain(PretrainSettings(arch=args.arch), training, arch=arch, tokenizer=tokenizer,
                      out=tmp / "run", corpus=corpus)
    print(f"trained {result['params']:,} parameters for {result['steps']} steps in "
          f"{time.perf_counter() - start:.0f} s: val loss {result['final_val_loss']:.3f}", flush=True)
    if args.keep:
        print(f"kept: --checkpoint {tmp / 'run' / 'checkpoint_last'} reuses this model", flush=True)
    return tmp / "run" / "checkpoint_last"


def sample(model, tokenizer, prompts: list[str], args: argparse.Namespace, max_batch_size: int | None
           ) -> list[list[str]]:
    from codenas.eval.postprocess import STOP_SEQUENCES
    from codenas.model.sampling import generate

    return generate(model, tokenizer, prompts, n=args.samples, max_new_tokens=args.max_new_tokens, temperature=0.8,
                    top_p=0.95, stop=STOP_SEQUENCES, seed=args.seed, max_batch_size=max_batch_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="a trained codenas checkpoint folder (default: train one)")
    p.add_argument("--keep", default=None, help="train the model in this folder and keep it (default: a temporary "
                                                "folder)")
    p.add_argument("--arch", default="tiny", help="arch of the model trained here [tiny]")
    p.add_argument("--steps", type=int, default=400, help="pretraining steps of the model trained here [400]")
    p.add_argument("--files", type=int, default=200, help="stdlib files it is trained on [200]")
    p.add_argument("--vocab-size", type=int, default=2048, help="its tokenizer's vocabulary [2048]")
    p.add_argument("--prompts", type=int, default=40, help="HumanEval prompts [40]")
    p.add_argument("--samples", type=int, default=5, help="samples per prompt [5]")
    p.add_argument("--max-new-tokens", type=int, default=96, help="tokens per sample at most [96]")
    p.add_argument("--batch", type=int, default=7, help="rows decoded together in the reordered run [7]")
    p.add_argument("--seed", type=int, default=0, help="sampling seed [0]")
    args = p.parse_args()

    from codenas.data.humaneval import load_humaneval
    from codenas.model.checkpoint import load_checkpoint

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = load_checkpoint(train_model(args, Path(tmp)))
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    prompts = [r.prompt for r in load_humaneval()[: args.prompts]]
    reference = sample(model, tokenizer, prompts, args, None)
    runs = {"reordered": sample(model, tokenizer, prompts[::-1], args, args.batch)[::-1],
            "alone": [sample(model, tokenizer, [prompt], args, None)[0] for prompt in prompts]}
    total_changed = total = 0
    for name, texts in runs.items():
        changed = [(i, j) for i, (ref, got) in enumerate(zip(reference, texts, strict=True))
                   for j in range(args.samples) if ref[j] != got[j]]
        n = len(prompts) * args.samples
        total_changed, total = total_changed + len(changed), total + n
        shown = ", ".join(f"prompt {i} sample {j}" for i, j in changed[:5])
        print(f"{name}: {len(changed)} of {n} samples differ from the reference ({100 * len(changed) / n:.1f}%)"
              + (f": {shown}" if shown else ""), flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"changed_samples_fraction: {total_changed / total:.4f}")


if __name__ == "__main__":
    main()
