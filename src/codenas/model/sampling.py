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
All paths run one decode loop (``_decode``: choose each row's token, end the samples it finishes, extend the
rest); they differ only in how a batch's rows are filled and how the model extends them.

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
from typing import Any, Protocol, cast

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


class Decoder(Protocol):
    """What sampling uses of its ``nn.Module`` (``GPT``, a PEFT wrapper around one, an ``hf:`` model's wrapper):
    the arch ``config`` (``context_length``, ``vocab_size``) and ``new_kv_cache`` besides a module's own."""

    config: Any
    training: bool

    def __call__(self, idx: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, Any]: ...

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, **kwargs: Any) -> Any: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...


def generate(model: torch.nn.Module, tokenizer: Tokenizer, prompts: list[str], **options: Any) -> list[list[str]]:
    """For each prompt, its ``n`` continuations in order of sample index: ``stream``'s samples (same options),
    gathered."""
    found: dict[tuple[int, int], str] = {}
    for i, j, text in stream(model, tokenizer, prompts, **options):
        found[i, j] = text
    n = len(found) // len(prompts) if prompts else 0
    return [[found[i, j] for j in range(n)] for i in range(len(prompts))]


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
    """``(prompt index, sample index, text)`` for ``n`` samples of every prompt, in the order they finish (at the
    same step: those ended by end of text or length before those ended by a stop string); ``text`` is the
    continuation after the prompt, cut before the first stop string.

    ``eot_id``: the token that ends a sample (default: the tokenizer's ``<|endoftext|>``; pass the eos id for a
    tokenizer without it). It also stands in for an empty prompt. ``max_batch_size``: rows decoded together
    (default: as many as fit ``CPU_CACHE_BYTES`` of cache, or half the free GPU memory, at most 256).
    ``compile``: compile the decode step (CUDA only; ignored elsewhere).
    """
    if n < 1 or max_new_tokens < 0 or temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"bad sampling settings: n={n}, max_new_tokens={max_new_tokens}, "
                         f"temperature={temperature}, top_p={top_p}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be positive, got {max_batch_size}")
    eot = tokenizer.token_to_id(EOT) if eot_id is None else eot_id
    if eot is None:
        raise ValueError(f"the tokenizer has no {EOT} token: pass eot_id")
    decoder = cast(Decoder, model)  # nn.Module types the attributes a wrapper forwards as Tensor | Module
    context: int = decoder.config.context_length
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
            if use_cache and hasattr(model, "new_kv_cache") and isinstance(decoder.new_kv_cache(1, 1), KVCache):
                finished = _decode(_Refilled(decoder, rules, todo, max_batch_size, compile), rules)
            elif use_cache and getattr(model, "padded_batches", False):
                finished = _padded_batches(decoder, rules, todo, max_batch_size or PADDED_BATCH)
            else:
                finished = _one_prompt_at_a_time(decoder, rules, todo, use_cache)
            for i, j, text in finished:
                bar.update()
                yield i, j, text
    finally:
        model.train(was_training)


@dataclass
class _Prompt:
    index: int
    ids: list[int]  # never empty, and shorter than the context: every sample has room for a token
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

    def stopped(self, rules: _Rules) -> bool:
        """Extend the text with what the newest tokens decode to; True when a stop string has appeared.

        The newest tokens are decoded after ``ids[prefix:read]`` (decoded last time, so that a piece joins its
        neighbour as in the whole text) and a piece that ends in an incomplete UTF-8 character waits for the next
        token. One sample at a time: a few tokens each are faster so than through decode_batch's thread pool.
        """
        before = rules.tokenizer.decode(self.ids[self.prefix:self.read])
        after = rules.tokenizer.decode(self.ids[self.prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return False
        new = after[len(before):]
        start = max(0, len(self.text) - max(map(len, rules.stop)) + 1)
        self.text += new
        self.prefix, self.read = self.read, len(self.ids)
        return any(s in self.text[start:] for s in rules.stop)


class _Rows:
    """A decode batch as the decode loop sees it: the sample in each row (None: an idle row), the logits each
    row's next token is chosen from, and each row's random key and count of chosen tokens.

    A kind of batch says how rows are filled (``fill``) and how the model extends them (``advance``); the loop
    (``_decode``) chooses the tokens and decides which samples end, the same for every kind. Here a batch starts
    full and finished rows leave it (left-padded and one-prompt batches: ``_select`` and ``_extend``); the
    refilled batch overrides both.
    """

    rows: list[_Sample | None]
    logits: torch.Tensor  # [rows, vocab], float32
    keys: torch.Tensor
    steps: torch.Tensor

    def fill(self) -> bool:
        """Put waiting samples into free rows; False when no row holds a sample (decoding is over)."""
        return bool(self.rows)

    def advance(self, tokens: torch.Tensor, done: list[int]) -> None:
        """Release the rows in ``done`` (their samples have ended) and run the model on the others' new
        ``tokens``, leaving their next logits in ``logits``. Here finished rows leave the batch."""
        if done:
            gone = set(done)
            keep = [b for b in range(len(self.rows)) if b not in gone]
            self.rows = [self.rows[b] for b in keep]
            if not keep:
                return
            index = torch.tensor(keep, dtype=torch.long, device=self.keys.device)
            self.keys, self.steps, tokens = self.keys[index], self.steps[index], tokens[index]
            self._select(index)
        self.logits = self._extend(tokens)

    def _select(self, index: torch.Tensor) -> None:
        """Keep the rows at ``index`` of the batch's own state (its cache, ...)."""
        raise NotImplementedError

    def _extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the model on each row's new token; the next logits."""
        raise NotImplementedError


@torch.inference_mode()
def _decode(batch: _Rows, rules: _Rules) -> Iterator[tuple[int, int, str]]:
    """The decode loop: choose each row's next token, end the samples it finishes (yielding them) and let the
    batch run the model on the rest, until no sample is left."""
    while batch.fill():
        tokens = _choose(batch.logits, rules.temperature, rules.top_p, batch.keys, batch.steps)
        batch.steps += 1
        done = _finished(batch.rows, tokens.tolist(), rules)  # the only transfer to the host per step
        for b in done:
            sample = batch.rows[b]
            assert sample is not None  # _finished names only rows holding a sample
            yield sample.prompt, sample.index, rules.finish(sample.ids)
        batch.advance(tokens, done)


def _finished(rows: list[_Sample | None], tokens: list[int], rules: _Rules) -> list[int]:
    """The rows whose sample ends with its new token: those ended by end of text (not appended) or their length
    limit, then those ended by a stop string, each in row order; every other row's token is appended to its
    sample."""
    ended, stopped = [], []
    for b, (sample, token) in enumerate(zip(rows, tokens, strict=True)):
        if sample is None:
            continue
        if token == rules.eot:
            ended.append(b)
            continue
        sample.ids.append(token)
        if len(sample.ids) >= sample.limit:
            ended.append(b)
        elif rules.stop and sample.stopped(rules):
            stopped.append(b)
    return ended + stopped


class _Refilled(_Rows):
    """Continuous batching over a ``GPT``-style model with per-row positions: a finished row takes the next
    waiting sample at once; once nothing waits, the batch shrinks to the rows still running."""

    def __init__(self, model: Decoder, rules: _Rules, todo: list[tuple[_Prompt, int]],
                 max_batch_size: int | None, compile: bool):
        self.model, self.rules = model, rules
        self.device = device = next(model.parameters()).device
        self.waiting = deque(todo)
        self.max_len = max(len(p.ids) + rules.limit(len(p.ids)) for p, _ in todo)
        self.compiled = compile and device.type == "cuda"
        rows = max_batch_size or self._default_batch_size()
        self.size = size = max(1, min(rows, len(todo)))
        if self.compiled:  # fewer shapes to compile
            self.size = size = min(_next_pow2(size), rows)
        self.step_fn = self._compiled_step() if self.compiled else self._step
        self.cache = self._new_cache(size)
        self.rows = [None] * size
        self.lengths = [0] * size  # host copy of each row's next position, for the attention span
        self.positions = torch.zeros(size, dtype=torch.long, device=device)  # where each row's next token goes
        self.active = torch.zeros(size, dtype=torch.long, device=device)  # 1 for rows holding a sample
        self.keys = torch.zeros(size, dtype=torch.long, device=device)
        self.steps = torch.zeros(size, dtype=torch.long, device=device)
        self.logits = torch.zeros(size, model.config.vocab_size, device=device)

    def _default_batch_size(self) -> int:
        probe = self.model.new_kv_cache(1, self.max_len)
        row_bytes = 2 * probe.k.numel() * probe.k.element_size()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget = GPU_CACHE_FRACTION * free
        else:
            budget = CPU_CACHE_BYTES
        return max(1, min(MAX_DEFAULT_BATCH, int(budget // row_bytes)))

    def fill(self) -> bool:
        admitted = self._admit()
        if admitted:
            device = self.device
            index = torch.tensor([b for b, _, _ in admitted], device=device)
            self.logits[index] = torch.stack([first for _, _, first in admitted])
            self.positions[index] = torch.tensor([self.lengths[b] for b, _, _ in admitted], device=device)
            self.keys[index] = torch.tensor([key for _, key, _ in admitted], device=device)
            self.steps[index] = 0
            self.active[index] = 1
        return any(r is not None for r in self.rows)

    def advance(self, tokens: torch.Tensor, done: list[int]) -> None:
        for b in done:
            self.rows[b], self.lengths[b] = None, 0
        if done:
            index = torch.tensor(done, device=self.device)
            self.positions[index] = 0  # an idle row computes along, writing harmlessly at its slot 0
            self.active[index] = 0
        live = [b for b, r in enumerate(self.rows) if r is not None]
        if not live:
            return  # every row finished at once: the next samples are admitted, or decoding is over
        if not self.waiting and len(live) <= self.size // 2:
            tokens = self._shrink(live, tokens)  # nothing left to admit: keep only the rows still running
            live = list(range(len(live)))
        span = max(self.lengths[b] for b in live) + 1
        if self.compiled:
            span = min(self.max_len, -(-span // SPAN_BUCKET) * SPAN_BUCKET)
        self.cache.span = span
        self.logits = self.step_fn(tokens, self.positions, self.cache)
        self.positions += self.active
        for b in live:
            self.lengths[b] += 1

    def _shrink(self, live: list[int], tokens: torch.Tensor) -> torch.Tensor:
        """Shrink the batch to the ``live`` rows (first, in order; when compiled, padded with idle rows to a power
        of two); ``tokens`` of the rows kept."""
        idle = [b for b, r in enumerate(self.rows) if r is None]
        keep = live + idle[:self._batch_for(len(live)) - len(live)]
        index = torch.tensor(keep, device=self.device)
        self.cache.select_rows(index)
        self._mark_static(self.cache)
        self.rows, self.lengths = [self.rows[b] for b in keep], [self.lengths[b] for b in keep]
        self.positions, self.active, self.keys, self.steps = (
            t[index] for t in (self.positions, self.active, self.keys, self.steps))
        self.size = len(keep)
        return tokens[index]

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

    def _admit(self) -> list:
        """Put waiting samples into free rows: ``(row, random key, first logits)`` for each."""
        admitted = []
        cache = self.cache
        for b in range(self.size):
            if not self.waiting:
                break
            if self.rows[b] is not None:
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
            self.rows[b] = _Sample(prompt.index, j, self.rules.limit(T))
            self.lengths[b] = T
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


class _LeftPadded(_Rows):
    """Samples of several prompts, left-padded into one batch through a model with its own cache, taking
    ``positions`` and ``attention_mask`` (``hf:`` models); finished rows leave the batch."""

    def __init__(self, model: Decoder, rules: _Rules, chunk: list[tuple[_Prompt, int]]):
        device = next(model.parameters()).device
        width = max(len(p.ids) for p, _ in chunk)
        self.model = model
        self.rows = [_Sample(p.index, j, rules.limit(len(p.ids))) for p, j in chunk]
        idx = torch.tensor([[rules.eot] * (width - len(p.ids)) + p.ids for p, _ in chunk], device=device)
        self.mask = torch.tensor([[0] * (width - len(p.ids)) + [1] * len(p.ids) for p, _ in chunk], device=device)
        positions = (self.mask.cumsum(dim=1) - 1).clamp(min=0)
        self.keys = torch.tensor([p.key(j) for p, j in chunk], device=device)
        self.steps = torch.zeros_like(self.keys)
        self.cache = model.new_kv_cache(len(chunk))
        logits, _ = model(idx, kv_cache=self.cache, positions=positions, attention_mask=self.mask, last_only=True)
        self.logits, self.positions = logits[:, -1].float(), positions[:, -1]

    def _select(self, index: torch.Tensor) -> None:
        self.mask, self.positions = self.mask[index], self.positions[index]
        self.cache.select_rows(index)

    def _extend(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        self.positions = self.positions + 1
        logits, _ = self.model(tokens[:, None], kv_cache=self.cache, positions=self.positions[:, None],
                               attention_mask=self.mask)
        return logits[:, -1].float()


class _OnePrompt(_Rows):
    """The reference batch: one prompt's samples, rows leaving as they finish; any model with GPT's
    ``forward(idx) -> (logits, loss)`` (and ``new_kv_cache`` with ``pos``/``select_rows`` for the cache).
    Without the cache every step runs the model over the whole sequence."""

    def __init__(self, model: Decoder, rules: _Rules, prompt: _Prompt, samples: list[int], use_cache: bool):
        device = next(model.parameters()).device
        limit = rules.limit(len(prompt.ids))
        self.model = model
        self.rows = [_Sample(prompt.index, j, limit) for j in samples]
        self.keys = torch.tensor([prompt.key(j) for j in samples], device=device)
        self.steps = torch.zeros_like(self.keys)
        self.tokens = torch.tensor([prompt.ids] * len(samples), device=device)
        self.cache = (model.new_kv_cache(1, len(prompt.ids) + limit)
                      if use_cache and hasattr(model, "new_kv_cache") else None)
        if self.cache is None:
            self.logits = _next_logits(model, self.tokens, None)
        else:  # the prompt runs once; its keys and values are then copied to every row
            self.logits = _next_logits(model, self.tokens[:1], self.cache).expand(len(samples), -1)
            self.cache.select_rows(torch.zeros(len(samples), dtype=torch.long, device=device))

    def _select(self, index: torch.Tensor) -> None:
        self.tokens = self.tokens[index]
        if self.cache is not None:
            self.cache.select_rows(index)

    def _extend(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens = torch.cat([self.tokens, tokens[:, None]], dim=1)
        return _next_logits(self.model, tokens[:, None] if self.cache is not None else self.tokens, self.cache)


@torch.inference_mode()
def _padded_batches(model: Decoder, rules: _Rules, todo: list[tuple[_Prompt, int]],
                    max_batch_size: int) -> Iterator[tuple[int, int, str]]:
    """Left-padded batches of up to ``max_batch_size`` samples, one after the other."""
    for start in range(0, len(todo), max_batch_size):
        yield from _decode(_LeftPadded(model, rules, todo[start:start + max_batch_size]), rules)


@torch.inference_mode()
def _one_prompt_at_a_time(model: Decoder, rules: _Rules, todo: list[tuple[_Prompt, int]],
                          use_cache: bool) -> Iterator[tuple[int, int, str]]:
    """The reference path: one prompt's samples as one batch, prompt after prompt."""
    by_prompt: dict[int, list[int]] = {}
    prompts = {}
    for prompt, j in todo:
        by_prompt.setdefault(prompt.index, []).append(j)
        prompts[prompt.index] = prompt
    for i, samples in by_prompt.items():
        yield from _decode(_OnePrompt(model, rules, prompts[i], samples, use_cache), rules)


def _next_logits(model: Decoder, idx: torch.Tensor, cache) -> torch.Tensor:
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
