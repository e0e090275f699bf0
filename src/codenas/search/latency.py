"""Generation latency of an architecture: milliseconds per new token, decoding one sequence with the KV cache.

The number depends on the shape, not on the weights, so a freshly initialised model (seeded) is timed. The loop
is the sampler's inner loop without the sampling: prefill a short prompt into a ``KVCache``, then feed one
greedy token at a time. A warm-up pass runs first; the reported figure is the median over ``repeats`` passes
of (decode time / tokens decoded), so one slow pass on a shared machine does not decide a trial.
"""

from __future__ import annotations

import statistics
import time

import torch

from codenas.model.config import ArchConfig
from codenas.model.model import GPT


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _decode_seconds(model: GPT, prompt: torch.Tensor, new_tokens: int) -> float:
    """Seconds spent decoding ``new_tokens`` tokens one by one after prefilling ``prompt`` ([1, P])."""
    cache = model.new_kv_cache(1, prompt.shape[1] + new_tokens)
    logits, _ = model(prompt, kv_cache=cache)
    next_token = logits[:, -1:].argmax(-1)
    _sync(prompt.device)
    start = time.perf_counter()
    for _ in range(new_tokens):
        logits, _ = model(next_token, kv_cache=cache)
        next_token = logits[:, -1:].argmax(-1)
    _sync(prompt.device)
    return time.perf_counter() - start


def measure_latency_ms(arch: ArchConfig, *, new_tokens: int = 32, prompt_tokens: int = 16, repeats: int = 3,
                       device: str = "cpu", seed: int = 0) -> float:
    """Median milliseconds per generated token of a fresh ``GPT(arch)`` (batch 1, KV cache, eval mode).

    ``prompt_tokens + new_tokens`` is capped at the context length (the prompt shrinks first, to one token).
    """
    torch.manual_seed(seed)
    model = GPT(arch).to(device).eval()
    new_tokens = min(new_tokens, arch.context_length - 1)
    prompt_tokens = max(1, min(prompt_tokens, arch.context_length - new_tokens))
    prompt = torch.randint(0, arch.vocab_size, (1, prompt_tokens), device=device,
                           generator=torch.Generator(device=device).manual_seed(seed))
    _decode_seconds(model, prompt, new_tokens)  # warm-up: allocator, kernels, caches
    per_token = [_decode_seconds(model, prompt, new_tokens) / new_tokens for _ in range(repeats)]
    return 1000.0 * statistics.median(per_token)
