"""Sampling text from a model: batched (n samples per prompt), KV-cached, temperature and top-p, stop strings.

For each prompt the n samples form one batch: the prompt is run once through the model (filling the KV cache),
then one token per step is chosen for every unfinished sample. A sample finishes at ``<|endoftext|>``, at the
first stop string in its decoded text, at ``max_new_tokens`` or when prompt + continuation reach the context
length; finished samples leave the batch. Prompts longer than the context keep their last tokens.

Randomness comes from a ``torch.Generator`` seeded from ``(seed, prompt)``, so a prompt's samples do not depend
on which other prompts are in the call. ``temperature == 0`` is greedy decoding (argmax), which gives the same
tokens with and without the cache.

The model is called in one place, ``_next_logits``: any module with GPT's ``forward(idx) -> (logits, loss)``
and a ``config.context_length`` works; the cache is used when it also has ``new_kv_cache`` like ``GPT``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from tokenizers import Tokenizer

from codenas.model.model import KVCache
from codenas.model.tokenizer import EOT, encode_texts
from codenas.progress import progress


def generate(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompts: list[str],
    *,
    n: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 0.8,
    top_p: float = 0.95,
    stop: Sequence[str] = (),
    seed: int = 0,
    use_cache: bool = True,
    eot_id: int | None = None,
) -> list[list[str]]:
    """For each prompt, ``n`` continuations (the text after the prompt, cut before the first stop string).

    ``eot_id``: the token that ends a sample (default: the tokenizer's ``<|endoftext|>``; pass the eos id for a
    tokenizer without it). It also stands in for an empty prompt.
    """
    if n < 1 or max_new_tokens < 0 or temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"bad sampling settings: n={n}, max_new_tokens={max_new_tokens}, "
                         f"temperature={temperature}, top_p={top_p}")
    eot = tokenizer.token_to_id(EOT) if eot_id is None else eot_id
    if eot is None:
        raise ValueError(f"the tokenizer has no {EOT} token: pass eot_id")
    was_training = model.training
    model.eval()
    try:
        prompt_ids = encode_texts(tokenizer, prompts)
        return [
            _sample_prompt(model, tokenizer, ids, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                           top_p=top_p, stop=stop, seed=_prompt_seed(seed, prompt), use_cache=use_cache, eot=eot)
            for prompt, ids in progress(list(zip(prompts, prompt_ids, strict=True)), desc="sampling", unit="prompt")
        ]
    finally:
        model.train(was_training)


@torch.inference_mode()
def _sample_prompt(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    *,
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop: Sequence[str],
    seed: int,
    use_cache: bool,
    eot: int,
) -> list[str]:
    """``n`` continuations of one tokenized prompt, decoded and cut at the first stop string."""
    context = model.config.context_length
    prompt_ids = prompt_ids[max(0, len(prompt_ids) - context + 1) :] or [eot]
    steps = min(max_new_tokens, context - len(prompt_ids))
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)

    tokens = torch.tensor([prompt_ids] * n, device=device)  # [rows, T], one row per unfinished sample
    rows = list(range(n))  # which sample each row belongs to
    outputs: list[list[int]] = [[] for _ in range(n)]
    cache = model.new_kv_cache(1, len(prompt_ids) + steps) if use_cache and hasattr(model, "new_kv_cache") else None
    logits = _prefill(model, tokens, cache)
    for step in range(steps):
        next_tokens = _choose(logits, temperature, top_p, generator)
        keep = []
        for i, (sample, token) in enumerate(zip(rows, next_tokens.tolist(), strict=True)):
            if token == eot:
                continue
            outputs[sample].append(token)
            if not stop or _stop_index(tokenizer.decode(outputs[sample]), stop) is None:
                keep.append(i)
        if not keep or step == steps - 1:
            break
        if len(keep) < len(rows):
            rows = [rows[i] for i in keep]
            keep_index = torch.tensor(keep, device=device)
            tokens, next_tokens = tokens[keep_index], next_tokens[keep_index]
            if cache is not None:
                cache.select_rows(keep_index)
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
        logits = _next_logits(model, next_tokens[:, None] if cache is not None else tokens, cache)
    return [_cut_at_stop(tokenizer.decode(ids), stop) for ids in outputs]


def _prefill(model: torch.nn.Module, tokens: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """Logits after the prompt for each row of ``tokens`` (n copies of one prompt).

    With a cache (made for one row) the prompt runs once and its keys and values are then copied to all n rows.
    """
    if cache is None:
        return _next_logits(model, tokens, None)
    logits = _next_logits(model, tokens[:1], cache)
    cache.select_rows(torch.zeros(len(tokens), dtype=torch.long, device=tokens.device))
    return logits.expand(len(tokens), -1)


def _next_logits(model: torch.nn.Module, idx: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """Logits ``[rows, vocab]`` for the token after ``idx``; with a cache, ``idx`` holds only the new tokens."""
    logits, _ = model(idx) if cache is None else model(idx, kv_cache=cache)
    return logits[:, -1].float()


def _choose(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row: argmax at temperature 0, else a sample from the top-p nucleus of softmax(logits / T)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside_nucleus = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # the top token always stays
    sorted_probs = sorted_probs.masked_fill(outside_nucleus, 0.0)
    choice = torch.multinomial(sorted_probs, 1, generator=generator)
    return order.gather(-1, choice).squeeze(-1)


def _stop_index(text: str, stop: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in ``text``, or None."""
    found = [i for s in stop if s and (i := text.find(s)) >= 0]
    return min(found) if found else None


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    index = _stop_index(text, stop)
    return text if index is None else text[:index]


def _prompt_seed(seed: int, prompt: str) -> int:
    """A 63-bit seed derived from the call's seed and the prompt text."""
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
