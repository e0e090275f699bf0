"""Sampling text from a model: one KV-cached decode batch across prompts x n samples, continuously refilled.

``stream`` yields each sample as it finishes; ``generate`` collects them per prompt. With a codenas ``GPT`` (or
a PEFT wrapper around one) all samples share one decode batch of up to ``max_batch_size`` rows:

- each prompt is run through the model once (logits of its last position only) and its keys and values are
  copied into the cache row of each of its n samples as rows free up;
- every row has its own position (``forward(..., positions=...)``), so rows of different prompts and lengths
  decode together; a row finishes at end of text, at a stop string, at ``max_new_tokens`` or at the context
  length, and the next waiting sample takes its place at once (continuous batching), so short answers never
  wait for long ones; when nothing waits, the batch shrinks to the rows still running;
- stop strings are looked for only in the text each step adds (incremental detokenization), and the only
  transfer to the host per step is the chosen tokens, which that check needs;
- on CUDA, ``compile=True`` compiles the decode step with ``torch.compile(mode="reduce-overhead")`` (CUDA
  graphs) over static shapes: batch and attention span are rounded up to buckets.

``hf:`` models (``padded_batches``) decode up to ``max_batch_size`` rows of several prompts at once in a
left-padded batch with their own cache and attention mask; finished rows leave it, but are not refilled (their
cache has no per-row positions). ``use_cache=False`` is the reference path: one prompt's n samples at a time.
All paths choose tokens and handle stop strings the same way.

Same answers whatever the batch: the random number that picks a sample's t-th token is a hash of (seed,
prompt, sample index, t), so a prompt's samples depend only on the seed, the prompt and the settings, not on
the other prompts in the call or the order in which rows finish (up to floating-point differences between
batch shapes, which move a choice only when two tokens tie to the last bit). ``temperature == 0`` is greedy
decoding, the same with and without the cache and one prompt at a time.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from codenas.model.model import KVCache
from codenas.model.tokenizer import EOT, encode_texts
from codenas.progress import progress

CPU_CACHE_BYTES = 1 << 30  # the default batch keeps the KV cache within this on CPU ...
GPU_CACHE_FRACTION = 0.5  # ... and within this fraction of the free memory on a GPU
MAX_DEFAULT_BATCH = 256
SPAN_BUCKET = 64  # compiled decode: attention spans are rounded up to a multiple of this
PADDED_BATCH = 64  # default rows of a left-padded batch (models without per-row positions)
NUCLEUS_CANDIDATES = 64  # top-p on CPU: tokens looked at before sorting the whole vocabulary


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
    max_batch_size: int | None = None,
    compile: bool = False,
) -> list[list[str]]:
    """For each prompt, ``n`` continuations (the text after the prompt, cut before the first stop string).

    ``eot_id``: the token that ends a sample (default: the tokenizer's ``<|endoftext|>``; pass the eos id for a
    tokenizer without it). It also stands in for an empty prompt. ``max_batch_size``: rows decoded together
    (default: as many as fit ``CPU_CACHE_BYTES`` of cache, or half the free GPU memory, at most 256).
    ``compile``: compile the decode step (CUDA only; ignored elsewhere).
    """
    out: list[list[str | None]] = [[None] * n for _ in prompts]
    for i, j, text in stream(model, tokenizer, prompts, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p, stop=stop, seed=seed, use_cache=use_cache, eot_id=eot_id,
                             max_batch_size=max_batch_size, compile=compile):
        out[i][j] = text
    return out  # type: ignore[return-value]


def stream(
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
    max_batch_size: int | None = None,
    compile: bool = False,
) -> Iterator[tuple[int, int, str]]:
    """``(prompt index, sample index, text)`` for every sample, in the order they finish (see ``generate``)."""
    if n < 1 or max_new_tokens < 0 or temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"bad sampling settings: n={n}, max_new_tokens={max_new_tokens}, "
                         f"temperature={temperature}, top_p={top_p}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be positive, got {max_batch_size}")
    eot = tokenizer.token_to_id(EOT) if eot_id is None else eot_id
    if eot is None:
        raise ValueError(f"the tokenizer has no {EOT} token: pass eot_id")
    context = model.config.context_length
    jobs = [_Prompt(i, ids[max(0, len(ids) - context + 1):] or [eot], seed, prompt)
            for i, (prompt, ids) in enumerate(zip(prompts, encode_texts(tokenizer, prompts), strict=True))]
    todo = [(job, j) for job in jobs for j in range(n)]
    if max_new_tokens == 0:
        yield from ((job.index, j, "") for job, j in todo)
        return
    for job, _ in todo:
        job.pending += 1
    rules = _Rules(tokenizer, eot, tuple(s for s in stop if s), temperature, top_p, max_new_tokens, context)
    was_training = model.training
    model.eval()
    try:
        with progress(total=len(todo), desc="sampling", unit="sample") as bar:
            if use_cache and hasattr(model, "new_kv_cache") and isinstance(model.new_kv_cache(1, 1), KVCache):
                finished = _Batch(model, rules, todo, max_batch_size, compile).run()
            elif use_cache and getattr(model, "padded_batches", False):
                finished = _padded_batches(model, rules, todo, max_batch_size or PADDED_BATCH)
            else:
                finished = _one_prompt_at_a_time(model, rules, todo, use_cache)
            for i, j, text in finished:
                bar.update()
                yield i, j, text
    finally:
        model.train(was_training)


@dataclass
class _Prompt:
    index: int
    ids: list[int]
    seed: int
    text: str
    pending: int = 0  # samples of this prompt still waiting for a row
    prefill: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # keys, values, last logits

    def key(self, sample: int) -> int:
        """The 63-bit random key of one of this prompt's samples: a hash of (seed, sample index, prompt)."""
        digest = hashlib.sha256(f"{self.seed}\0{sample}\0{self.text}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class _Rules:
    """How tokens are chosen and when a sample ends."""

    tokenizer: Tokenizer
    eot: int
    stop: tuple[str, ...]
    temperature: float
    top_p: float
    max_new_tokens: int
    context: int

    def limit(self, prompt_len: int) -> int:
        """Most tokens a sample of a prompt of this length may generate."""
        return min(self.max_new_tokens, self.context - prompt_len)

    def finish(self, ids: list[int]) -> str:
        return _cut_at_stop(self.tokenizer.decode(ids), self.stop)


@dataclass
class _Sample:
    """One running sample: its tokens and, when there are stop strings, its text decoded so far."""

    prompt: int
    index: int
    limit: int
    ids: list[int] = field(default_factory=list)
    text: str = ""
    prefix: int = 0  # ids[prefix:read] were decoded last time, as context for the next piece
    read: int = 0

    def add(self, token: int, rules: _Rules, pieces: list) -> bool:
        """Append ``token`` (unless it ends the sample); False when the sample is finished by it or its limit.

        With stop strings, the token windows to decode are appended to ``pieces`` for ``check_stop``.
        """
        if token == rules.eot:
            return False
        self.ids.append(token)
        if rules.stop:
            pieces.append(self)
        return len(self.ids) < self.limit

    def check_stop(self, before: str, after: str, stop: tuple[str, ...]) -> bool:
        """Extend the text with what the newest tokens decode to; True when a stop string has appeared.

        ``before``/``after``: the decoding of ``ids[prefix:read]`` and ``ids[prefix:]``; a piece that ends in
        an incomplete UTF-8 character waits for the next token.
        """
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return False
        new = after[len(before):]
        start = max(0, len(self.text) - max(map(len, stop)) + 1)
        self.text += new
        self.prefix, self.read = self.read, len(self.ids)
        return any(s in self.text[start:] for s in stop)


def _decode_step(rules: _Rules, grown: list[_Sample]) -> set[int]:
    """ids of the samples in ``grown`` whose newest tokens complete a stop string."""
    decode = rules.tokenizer.decode  # a few tokens each: faster one by one than decode_batch's thread pool
    return {id(s) for s in grown
            if s.check_stop(decode(s.ids[s.prefix:s.read]), decode(s.ids[s.prefix:]), rules.stop)}


class _Batch:
    """The continuous-batching decode loop over a ``GPT``-style model with per-row positions."""

    def __init__(self, model: torch.nn.Module, rules: _Rules, todo: list[tuple[_Prompt, int]],
                 max_batch_size: int | None, compile: bool):
        self.model, self.rules = model, rules
        self.device = next(model.parameters()).device
        self.waiting = deque(todo)
        self.max_len = max(len(p.ids) + rules.limit(len(p.ids)) for p, _ in todo)
        self.compiled = compile and self.device.type == "cuda"
        rows = max_batch_size or self._default_batch_size()
        self.size = max(1, min(rows, len(todo)))
        if self.compiled:  # fewer shapes to compile
            self.size = min(_next_pow2(self.size), rows)
        self.step_fn = self._compiled_step() if self.compiled else self._step

    def _default_batch_size(self) -> int:
        probe = self.model.new_kv_cache(1, self.max_len)
        row_bytes = 2 * probe.k.numel() * probe.k.element_size()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget = GPU_CACHE_FRACTION * free
        else:
            budget = CPU_CACHE_BYTES
        return max(1, min(MAX_DEFAULT_BATCH, int(budget // row_bytes)))

    @torch.inference_mode()
    def run(self) -> Iterator[tuple[int, int, str]]:
        rules, device, size = self.rules, self.device, self.size
        cache = self._new_cache(size)
        rows: list[_Sample | None] = [None] * size
        lengths = [0] * size  # host copy of each row's next position, for the attention span
        positions = torch.zeros(size, dtype=torch.long, device=device)  # where each row's next token goes
        active = torch.zeros(size, dtype=torch.long, device=device)  # 1 for rows holding a sample
        keys = torch.zeros(size, dtype=torch.long, device=device)  # each row's random key ...
        steps = torch.zeros(size, dtype=torch.long, device=device)  # ... and the tokens it has chosen
        logits = torch.zeros(size, self.model.config.vocab_size, device=device)
        while True:
            admitted = self._admit(rows, cache, lengths)
            if admitted:
                index = torch.tensor([b for b, _, _ in admitted], device=device)
                logits[index] = torch.stack([first for _, _, first in admitted])
                positions[index] = torch.tensor([lengths[b] for b, _, _ in admitted], device=device)
                keys[index] = torch.tensor([key for _, key, _ in admitted], device=device)
                steps[index] = 0
                active[index] = 1
            tokens = _choose(logits, rules.temperature, rules.top_p, keys, steps)
            steps += 1
            grown: list[_Sample] = []
            done = [b for b, token in enumerate(tokens.tolist())
                    if rows[b] is not None and not rows[b].add(token, rules, grown)]
            stopped = _decode_step(rules, grown)
            done += [b for b, r in enumerate(rows) if r is not None and id(r) in stopped and b not in done]
            for b in done:
                sample, rows[b], lengths[b] = rows[b], None, 0
                yield sample.prompt, sample.index, rules.finish(sample.ids)
            if done:
                index = torch.tensor(done, device=device)
                positions[index] = 0  # an idle row computes along, writing harmlessly at its slot 0
                active[index] = 0
            live = [b for b, r in enumerate(rows) if r is not None]
            if not self.waiting:
                if not live:
                    return
                if len(live) <= size // 2:  # nothing left to admit: shrink the batch to the rows still running
                    keep = live + [b for b, r in enumerate(rows) if r is None][:self._batch_for(len(live)) - len(live)]
                    index = torch.tensor(keep, device=device)
                    cache.select_rows(index)
                    self._mark_static(cache)
                    rows, lengths = [rows[b] for b in keep], [lengths[b] for b in keep]
                    positions, active, keys, steps, tokens = (t[index] for t in (positions, active, keys, steps,
                                                                                 tokens))
                    size = len(keep)
                    live = list(range(len(live)))
            if not live:
                continue  # every row finished at once: admit the next samples
            span = max(lengths[b] for b in live) + 1
            if self.compiled:
                span = min(self.max_len, -(-span // SPAN_BUCKET) * SPAN_BUCKET)
            cache.span = span
            logits = self.step_fn(tokens, positions, cache)
            positions += active
            for b in live:
                lengths[b] += 1

    def _new_cache(self, size: int) -> KVCache:
        cache = self.model.new_kv_cache(size, self.max_len, per_row=True)
        self._mark_static(cache)
        return cache

    def _mark_static(self, cache: KVCache) -> None:
        """Under CUDA graphs the cache is updated in place at fixed addresses."""
        if self.compiled:
            torch._dynamo.mark_static_address(cache.k)
            torch._dynamo.mark_static_address(cache.v)

    def _batch_for(self, live: int) -> int:
        """Rows of the shrunk batch: exactly the live ones, or a power of two when compiled (fewer shapes)."""
        return _next_pow2(live) if self.compiled else live

    def _admit(self, rows: list[_Sample | None], cache: KVCache, lengths: list[int]) -> list:
        """Put waiting samples into free rows: ``(row, random key, first logits)`` for each."""
        admitted = []
        for b in range(self.size):
            if not self.waiting:
                break
            if rows[b] is not None:
                continue
            prompt, j = self.waiting.popleft()
            if prompt.prefill is None:
                prompt.prefill = self._prefill(prompt.ids)
            k, v, first = prompt.prefill
            T = len(prompt.ids)
            cache.k[:, b, :, :T] = k[:, 0]
            cache.v[:, b, :, :T] = v[:, 0]
            prompt.pending -= 1
            if not prompt.pending:
                prompt.prefill = None  # every sample of it has its row
            rows[b] = _Sample(prompt.index, j, self.rules.limit(T))
            lengths[b] = T
            admitted.append((b, prompt.key(j), first))
        return admitted

    def _prefill(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys and values of a prompt's tokens, and the logits after its last token."""
        T = len(ids)
        cache = self.model.new_kv_cache(1, T, per_row=True)
        idx = torch.tensor([ids], device=self.device)
        logits, _ = self.model(idx, positions=torch.arange(T, device=self.device)[None], kv_cache=cache,
                               last_only=True)
        return cache.k, cache.v, logits[0, -1].float()

    def _step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        logits, _ = self.model(tokens[:, None], positions=positions[:, None], kv_cache=cache)
        return logits[:, -1].float()

    def _compiled_step(self):
        step = torch.compile(self._step, mode="reduce-overhead", dynamic=False)

        def run(tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
            return step(tokens, positions, cache).clone()  # the graph's output buffer is reused by the next replay

        return run


@torch.inference_mode()
def _padded_batches(model: torch.nn.Module, rules: _Rules, todo: list[tuple[_Prompt, int]],
                    max_batch_size: int) -> Iterator[tuple[int, int, str]]:
    """Left-padded batches of up to ``max_batch_size`` samples through a model with its own cache, taking
    ``positions`` and ``attention_mask`` (``hf:`` models); finished rows leave the batch."""
    device = next(model.parameters()).device
    for start in range(0, len(todo), max_batch_size):
        chunk = todo[start:start + max_batch_size]
        width = max(len(p.ids) for p, _ in chunk)
        rows = [_Sample(p.index, j, rules.limit(len(p.ids))) for p, j in chunk]
        idx = torch.tensor([[rules.eot] * (width - len(p.ids)) + p.ids for p, _ in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p.ids)) + [1] * len(p.ids) for p, _ in chunk], device=device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        keys = torch.tensor([p.key(j) for p, j in chunk], device=device)
        cache = model.new_kv_cache(len(chunk))
        logits, _ = model(idx, kv_cache=cache, positions=positions, attention_mask=mask, last_only=True)
        logits, positions = logits[:, -1].float(), positions[:, -1]
        step = 0
        while True:
            tokens = _choose(logits, rules.temperature, rules.top_p, keys, torch.full_like(keys, step))
            step += 1
            grown: list[_Sample] = []
            ended = {id(r) for r, t in zip(rows, tokens.tolist(), strict=True) if not r.add(t, rules, grown)}
            ended |= _decode_step(rules, grown)
            for r in rows:
                if id(r) in ended:
                    yield r.prompt, r.index, rules.finish(r.ids)
            keep = [i for i, r in enumerate(rows) if id(r) not in ended]
            if not keep:
                break
            if len(keep) < len(rows):
                index = torch.tensor(keep, device=device)
                rows = [rows[i] for i in keep]
                tokens, keys, mask, positions = tokens[index], keys[index], mask[index], positions[index]
                cache.select_rows(index)
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            positions = positions + 1
            logits, _ = model(tokens[:, None], kv_cache=cache, positions=positions[:, None], attention_mask=mask)
            logits = logits[:, -1].float()


def _one_prompt_at_a_time(model: torch.nn.Module, rules: _Rules, todo: list[tuple[_Prompt, int]],
                          use_cache: bool) -> Iterator[tuple[int, int, str]]:
    """The reference path: one prompt's samples as one batch, rows leaving as they finish; any model with
    GPT's ``forward(idx) -> (logits, loss)`` (and ``new_kv_cache`` with ``pos``/``select_rows`` for the cache)."""
    device = next(model.parameters()).device
    by_prompt: dict[int, list[int]] = {}
    prompts = {}
    for prompt, j in todo:
        by_prompt.setdefault(prompt.index, []).append(j)
        prompts[prompt.index] = prompt
    for i, samples in by_prompt.items():
        yield from _sample_prompt(model, rules, prompts[i], samples, use_cache, device)


@torch.inference_mode()
def _sample_prompt(model: torch.nn.Module, rules: _Rules, prompt: _Prompt, samples: list[int], use_cache: bool,
                   device: torch.device) -> Iterator[tuple[int, int, str]]:
    steps = rules.limit(len(prompt.ids))
    if steps <= 0:
        for j in samples:
            yield prompt.index, j, ""
        return
    rows = [_Sample(prompt.index, j, steps) for j in samples]
    tokens = torch.tensor([prompt.ids] * len(rows), device=device)
    keys = torch.tensor([prompt.key(j) for j in samples], device=device)
    cache = model.new_kv_cache(1, len(prompt.ids) + steps) if use_cache and hasattr(model, "new_kv_cache") else None
    if cache is None:
        logits = _next_logits(model, tokens, None)
    else:  # the prompt runs once; its keys and values are then copied to every row
        logits = _next_logits(model, tokens[:1], cache).expand(len(rows), -1)
        cache.select_rows(torch.zeros(len(rows), dtype=torch.long, device=device))
    for step in range(steps):
        next_tokens = _choose(logits, rules.temperature, rules.top_p, keys, torch.full_like(keys, step))
        grown: list[_Sample] = []
        ended = {id(r) for r, t in zip(rows, next_tokens.tolist(), strict=True) if not r.add(t, rules, grown)}
        ended |= _decode_step(rules, grown)
        keep = [i for i, r in enumerate(rows) if id(r) not in ended]
        for r in rows:
            if id(r) in ended:
                yield r.prompt, r.index, rules.finish(r.ids)
        if not keep:
            return
        if len(keep) < len(rows):
            rows = [rows[i] for i in keep]
            index = torch.tensor(keep, device=device)
            tokens, next_tokens, keys = tokens[index], next_tokens[index], keys[index]
            if cache is not None:
                cache.select_rows(index)
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
        logits = _next_logits(model, next_tokens[:, None] if cache is not None else tokens, cache)


def _next_logits(model: torch.nn.Module, idx: torch.Tensor, cache) -> torch.Tensor:
    """Logits ``[rows, vocab]`` for the token after ``idx``; with a cache, ``idx`` holds only the new tokens."""
    logits, _ = model(idx) if cache is None else model(idx, kv_cache=cache)
    return logits[:, -1].float()


_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)  # splitmix64's constants as signed 64-bit integers
_MIX2 = 0x94D049BB133111EB - (1 << 64)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)


def _uniform(keys: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """A uniform number in [0, 1) per row from (key, step): splitmix64 on the device, no generator state."""

    def shr(z: torch.Tensor, s: int) -> torch.Tensor:  # logical right shift of int64
        return (z >> s) & ((1 << (64 - s)) - 1)

    z = keys + (steps + 1) * _GOLDEN
    z = (z ^ shr(z, 30)) * _MIX1
    z = (z ^ shr(z, 27)) * _MIX2
    z = z ^ shr(z, 31)
    return shr(z, 11).double() * 2.0**-53


def _choose(logits: torch.Tensor, temperature: float, top_p: float, keys: torch.Tensor,
            steps: torch.Tensor) -> torch.Tensor:
    """One token per row: argmax at temperature 0, else a draw from the top-p nucleus of softmax(logits / T)
    by inverting its distribution at the row's own uniform number.

    On CPU, where sorting the vocabulary dominates a small model's step, a row's nucleus is first looked for among
    its ``NUCLEUS_CANDIDATES`` most likely tokens; only rows whose nucleus is larger sort everything (exact
    either way, and decided per row, so rows do not affect each other)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    u = _uniform(keys, steps)
    if top_p >= 1:
        return _invert(probs.double(), None, u)
    if probs.is_cuda or probs.shape[-1] <= NUCLEUS_CANDIDATES:
        return _invert(*_sorted(probs), u, top_p)
    top, order = probs.topk(NUCLEUS_CANDIDATES, dim=-1)
    choice = _invert(top.double(), order, u, top_p)
    short = (top.double().sum(dim=-1) < top_p).nonzero().squeeze(1)
    if len(short):
        choice[short] = _invert(*_sorted(probs[short]), u[short], top_p)
    return choice


def _sorted(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    return sorted_probs.double(), order


def _invert(probs: torch.Tensor, order: torch.Tensor | None, u: torch.Tensor, top_p: float = 1.0) -> torch.Tensor:
    """The token where each row's cumulative distribution first exceeds ``u`` (of its total), within the
    nucleus when ``probs`` are sorted (descending, token ids in ``order``) and ``top_p < 1``."""
    if top_p < 1:
        outside_nucleus = probs.cumsum(dim=-1) - probs >= top_p  # the top token always stays
        probs = probs.masked_fill(outside_nucleus, 0.0)
    cdf = probs.cumsum(dim=-1)
    choice = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    last_possible = probs.shape[-1] - 1 - (probs.flip(-1) > 0).int().argmax(dim=-1, keepdim=True)
    choice = torch.minimum(choice, last_possible)
    return (choice if order is None else order.gather(-1, choice)).squeeze(-1)


def _stop_index(text: str, stop: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in ``text``, or None."""
    found = [i for s in stop if s and (i := text.find(s)) >= 0]
    return min(found) if found else None


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    index = _stop_index(text, stop)
    return text if index is None else text[:index]


def _next_pow2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()
