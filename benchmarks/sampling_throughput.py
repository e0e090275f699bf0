"""Sampling throughput: codenas' batched sampler vs transformers' ``generate`` on the same weights and prompts.

The model is a codenas checkpoint (``--checkpoint``) or a freshly initialised ``--arch`` (seeded; its tokenizer
is trained on HumanEval); it is exported with ``codenas export`` and loaded back with ``AutoModelForCausalLM``,
so both sides run the same weights. The prompts are the first ``--prompts`` HumanEval prompts that leave room
for ``--max-new-tokens`` in the context. transformers gets all prompts x n in one left-padded batch (its usual
best setting on one device: KV cache, ``num_return_sequences=n``); codenas gets them through
``codenas.model.sampling.generate`` (continuous batching, ``--max-batch-size`` rows).

(a) forced length: greedy, every row generates exactly M tokens (no end of text, no stop strings).
(b) realistic: the evaluation's settings (temperature 0.8, top-p 0.95) with the judge's stop strings and end of
    text; transformers gets the same stop strings (``stop_strings``). Tokens counted are the useful ones: the
    tokens of each answer up to its stop string, the same count for both.

Prints tokens/s of both and their ratio for n = 1 and n = 10; the last line is ``speedup_vs_hf_generate: X``
for (b) at n = 1.

    python benchmarks/sampling_throughput.py --arch codenas_l8h512_regularized --prompts 32 --max-new-tokens 128
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from codenas.data.humaneval import load_humaneval
from codenas.eval.postprocess import STOP_SEQUENCES
from codenas.model.checkpoint import load_checkpoint, save_checkpoint
from codenas.model.config import load_arch
from codenas.model.export_hf import export_hf
from codenas.model.model import GPT
from codenas.model.sampling import _cut_at_stop, generate
from codenas.model.tokenizer import EOT, encode_texts, train_tokenizer


def build_model(args: argparse.Namespace, tmp: Path) -> Path:
    """A checkpoint folder: the given one, or a seeded random ``--arch`` with a tokenizer trained on HumanEval."""
    if args.checkpoint:
        return Path(args.checkpoint)
    from dataclasses import replace

    corpus = tmp / "humaneval.py"
    corpus.write_text("\n\n".join(r.prompt + r.solution for r in load_humaneval()), encoding="utf-8")
    tok_path = train_tokenizer([corpus], vocab_size=args.vocab_size, out=tmp / "tokenizer.json")
    from codenas.model.tokenizer import load_tokenizer

    arch = replace(load_arch(args.arch), vocab_size=load_tokenizer(tok_path).get_vocab_size())
    torch.manual_seed(0)
    save_checkpoint(tmp / "model", GPT(arch), tokenizer_path=tok_path, step=0)
    return tmp / "model"


def run_codenas(model, tokenizer, prompts, *, n, max_new, forced, max_batch_size, compile=False):
    """``(tokens, seconds)`` of codenas' sampler; ``compile``: the compiled decode step (CUDA only)."""
    eot = tokenizer.token_to_id(EOT)
    kwargs = dict(n=n, max_new_tokens=max_new, max_batch_size=max_batch_size, compile=compile)
    if forced:  # an end-of-text id that never comes: every row runs its M tokens
        kwargs.update(temperature=0, eot_id=-1)
    else:
        kwargs.update(temperature=0.8, top_p=0.95, stop=STOP_SEQUENCES, eot_id=eot)
    start = time.perf_counter()
    out = generate(model, tokenizer, prompts, seed=1, **kwargs)
    elapsed = time.perf_counter() - start
    if forced:
        return n * len(prompts) * max_new, elapsed
    texts = [t for samples in out for t in samples]
    return sum(len(ids) for ids in encode_texts(tokenizer, texts)), elapsed


def run_hf(hf_model, hf_tokenizer, tokenizer, prompts, *, n, max_new, forced):
    """``(tokens, seconds)`` of transformers' ``generate``, all prompts x n in one left-padded batch."""
    if forced:  # greedy decoding takes no num_return_sequences: each prompt n times in the batch
        prompts, n = [p for p in prompts for _ in range(n)], 1
    batch = hf_tokenizer(prompts, return_tensors="pt", padding=True).to(hf_model.device)
    kwargs = dict(max_new_tokens=max_new, num_return_sequences=n, pad_token_id=hf_tokenizer.pad_token_id)
    if forced:
        kwargs.update(do_sample=False, min_new_tokens=max_new)
    else:
        kwargs.update(do_sample=True, temperature=0.8, top_p=0.95, top_k=0, stop_strings=list(STOP_SEQUENCES),
                      tokenizer=hf_tokenizer, eos_token_id=hf_tokenizer.eos_token_id)
    torch.manual_seed(1)
    start = time.perf_counter()
    with torch.inference_mode():
        out = hf_model.generate(**batch, **kwargs)
    elapsed = time.perf_counter() - start
    generated = out[:, batch["input_ids"].shape[1]:]
    if forced:
        return generated.numel(), elapsed
    texts = [_cut_at_stop(tokenizer.decode(row.tolist()), STOP_SEQUENCES) for row in generated]
    return sum(len(ids) for ids in encode_texts(tokenizer, texts)), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a codenas checkpoint folder (default: a random --arch)")
    parser.add_argument("--arch", default="codenas_l8h512_regularized", help="arch of the random model")
    parser.add_argument("--vocab-size", type=int, default=8192, help="tokenizer size for the random model")
    parser.add_argument("--prompts", type=int, default=32, help="HumanEval prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="M: new tokens per sample")
    parser.add_argument("--ns", default="1,10", help="samples per prompt, comma separated")
    parser.add_argument("--max-batch-size", type=int, default=None, help="codenas rows decoded together")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = load_checkpoint(build_model(args, Path(tmp)))
        export_hf(ckpt.path, Path(tmp) / "hf")
        hf_model = AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf", local_files_only=True).eval()
        hf_tokenizer = AutoTokenizer.from_pretrained(Path(tmp) / "hf", local_files_only=True, padding_side="left")
    model, tokenizer = ckpt.model.eval(), ckpt.tokenizer
    context = ckpt.arch.context_length
    fits = [r.prompt for r in load_humaneval()
            if len(encode_texts(tokenizer, [r.prompt])[0]) + args.max_new_tokens <= context]
    prompts = fits[: args.prompts]
    print(f"{ckpt.arch.name or 'model'}: {model.num_params() / 1e6:.1f}M parameters, {len(prompts)} HumanEval "
          f"prompts, M = {args.max_new_tokens}, {torch.get_num_threads()} threads")
    run_codenas(model, tokenizer, prompts[:2], n=1, max_new=4, forced=True, max_batch_size=None)  # warm up
    run_hf(hf_model, hf_tokenizer, tokenizer, prompts[:2], n=1, max_new=4, forced=True)
    speedups = {}
    for workload, forced in (("a forced", True), ("b realistic", False)):
        for n in (int(x) for x in args.ns.split(",")):
            ours, ours_s = run_codenas(model, tokenizer, prompts, n=n, max_new=args.max_new_tokens, forced=forced,
                                       max_batch_size=args.max_batch_size)
            theirs, theirs_s = run_hf(hf_model, hf_tokenizer, tokenizer, prompts, n=n, max_new=args.max_new_tokens,
                                      forced=forced)
            ratio = (ours / ours_s) / (theirs / theirs_s)
            speedups[(forced, n)] = ratio
            print(f"({workload}) n={n:<3} codenas {ours / ours_s:8.1f} tok/s ({ours} tokens, {ours_s:.1f} s)   "
                  f"hf generate {theirs / theirs_s:8.1f} tok/s ({theirs} tokens, {theirs_s:.1f} s)   x{ratio:.2f}",
                  flush=True)
    print(f"speedup_vs_hf_generate: {speedups.get((False, 1), float('nan')):.2f}")


if __name__ == "__main__":
    main()
