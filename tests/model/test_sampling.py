"""Sampling: continuous batching across prompts agrees with one prompt at a time, with and without the cache;
batch invariance; n samples per prompt; stop strings (also split across tokens); context limit; end of text."""

from __future__ import annotations

import pytest
import torch

from codenas.model.sampling import _choose, _uniform, generate, stream

PROMPTS = ["def add(a, b):\n", "class Stack:\n    def push(self, item):\n"]


def test_cache_matches_no_cache_greedy(model, tokenizer):
    cached = generate(model, tokenizer, PROMPTS, n=2, max_new_tokens=30, temperature=0, use_cache=True)
    uncached = generate(model, tokenizer, PROMPTS, n=2, max_new_tokens=30, temperature=0, use_cache=False)
    assert cached == uncached
    assert all(len(samples) == 2 and samples[0] == samples[1] for samples in cached)  # greedy: n copies


def test_cached_forward_matches_full_forward(model):
    idx = torch.randint(0, model.config.vocab_size, (3, 40))
    full, _ = model(idx)
    cache = model.new_kv_cache(3)
    pieces = [model(idx[:, a:b], kv_cache=cache)[0] for a, b in [(0, 17), (17, 18), (18, 40)]]
    assert cache.pos == 40
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_sampling_shapes_and_determinism(model, tokenizer):
    first = generate(model, tokenizer, PROMPTS, n=4, max_new_tokens=20, temperature=1.0, top_p=0.9, seed=3)
    assert [len(s) for s in first] == [4, 4]
    assert generate(model, tokenizer, PROMPTS, n=4, max_new_tokens=20, temperature=1.0, top_p=0.9, seed=3) == first
    # a prompt's samples do not depend on the other prompts in the call
    alone = generate(model, tokenizer, PROMPTS[1:], n=4, max_new_tokens=20, temperature=1.0, top_p=0.9, seed=3)
    assert alone == first[1:]
    other_seed = generate(model, tokenizer, PROMPTS, n=4, max_new_tokens=20, temperature=1.0, top_p=0.9, seed=4)
    assert other_seed != first


@pytest.fixture
def no_eot_model(model, tokenizer):
    """The model with <|endoftext|> made impossible, counting its forward calls in ``model.calls``."""
    eot = tokenizer.token_to_id("<|endoftext|>")
    model.calls = 0

    def ban_eot(module, args, output):
        module.calls += 1
        logits, loss = output
        return logits.index_fill(-1, torch.tensor([eot]), float("-inf")), loss

    model.register_forward_hook(ban_eot)
    return model


def test_max_new_tokens_bounds_steps(no_eot_model, tokenizer):
    samples = generate(no_eot_model, tokenizer, PROMPTS[:1], n=3, max_new_tokens=5, temperature=1.0)
    assert no_eot_model.calls == 5  # one prefill, then one call per new token, nothing more
    assert all(samples[0])


def test_generation_stops_at_context_length(no_eot_model, tokenizer):
    long_prompt = "x = 1\n" * 200  # far more tokens than the 64-token context: its last 63 tokens are kept
    (cached,) = generate(no_eot_model, tokenizer, [long_prompt], n=2, max_new_tokens=10, temperature=0)
    assert no_eot_model.calls == 1  # room for exactly one more token
    assert generate(no_eot_model, tokenizer, [long_prompt], n=2, max_new_tokens=10, temperature=0,
                    use_cache=False) == [cached]


def test_stop_strings_cut_and_stop_early(no_eot_model, tokenizer):
    ((full,),) = generate(no_eot_model, tokenizer, PROMPTS[:1], max_new_tokens=30, temperature=0)
    assert no_eot_model.calls == 30 and len(full) >= 12
    stop = full[10:12]
    ((cut,),) = generate(no_eot_model, tokenizer, PROMPTS[:1], max_new_tokens=30, temperature=0,
                         stop=["never appears", stop])
    assert cut == full[: full.index(stop)]
    assert no_eot_model.calls < 60  # the second call stopped as soon as the stop string appeared


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, -1)
    keys, steps = torch.arange(4000), torch.zeros(4000, dtype=torch.long)
    picks = _choose(logits, 1.0, 0.7, keys, steps)
    assert set(picks.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7; tokens 2 and 3 are outside the nucleus
    assert abs((picks == 0).float().mean().item() - 0.5 / 0.8) < 0.03  # renormalised within the nucleus
    everything = _choose(logits, 1.0, 1.0, keys, steps)
    shares = torch.bincount(everything, minlength=4).float() / 4000
    assert torch.allclose(shares, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    assert _choose(logits, 0.0, 0.7, keys, steps).unique().tolist() == [0]


def test_row_random_numbers_are_uniform_and_depend_on_key_and_step():
    u = _uniform(torch.arange(20000), torch.zeros(20000, dtype=torch.long))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
    assert torch.histc(u.float(), bins=10, min=0, max=1).min() > 1800
    assert not torch.equal(u, _uniform(torch.arange(20000), torch.ones(20000, dtype=torch.long)))


def test_bad_settings_rejected(model, tokenizer):
    with pytest.raises(ValueError, match="top_p"):
        generate(model, tokenizer, PROMPTS, top_p=0.0)


MANY = [f"def f{i}(x):\n    return x + {i}\n" * (1 + i % 3) for i in range(7)] + PROMPTS


def test_greedy_batched_equals_one_prompt_at_a_time(model, tokenizer):
    alone = [generate(model, tokenizer, [p], n=1, max_new_tokens=25, temperature=0, max_batch_size=1)[0][0]
             for p in MANY]
    uncached = generate(model, tokenizer, MANY, n=1, max_new_tokens=25, temperature=0, use_cache=False)
    assert alone == [s[0] for s in uncached]
    for max_batch_size in (3, 16):
        batched = generate(model, tokenizer, MANY, n=2, max_new_tokens=25, temperature=0,
                           max_batch_size=max_batch_size)
        assert [s[0] for s in batched] == alone
        assert all(s[0] == s[1] for s in batched)


def test_samples_do_not_depend_on_the_batch(model, tokenizer):
    kwargs = dict(n=3, max_new_tokens=20, temperature=1.0, top_p=0.9, seed=5)
    full = generate(model, tokenizer, MANY, max_batch_size=32, **kwargs)
    assert generate(model, tokenizer, MANY, max_batch_size=4, **kwargs) == full
    assert generate(model, tokenizer, MANY[::-1], max_batch_size=5, **kwargs) == full[::-1]
    assert generate(model, tokenizer, MANY[2:3], max_batch_size=1, **kwargs) == full[2:3]
    assert generate(model, tokenizer, MANY, use_cache=False, **kwargs) == full  # same draws on the reference path
    assert len({s for samples in full for s in samples}) > len(MANY)  # the n samples differ


def test_continuous_batching_refills_rows_of_very_different_lengths(no_eot_model, tokenizer):
    """Two rows: one sample needs 40 tokens, the others stop after a few; the short ones take turns in the
    second row while the long one runs, so the whole call costs about 40 decode steps, not 40 per pair."""
    ((full,),) = generate(no_eot_model, tokenizer, PROMPTS[:1], max_new_tokens=40, temperature=0)
    prompts = PROMPTS[:1] + [PROMPTS[0] + full[:i] for i in range(1, 6)]
    stops = {p: None for p in prompts}
    no_eot_model.calls = 0
    got = generate(no_eot_model, tokenizer, prompts, max_new_tokens=40, temperature=0, max_batch_size=2,
                   stop=[full[8:12]])
    assert got[0] == [full[: full.index(full[8:12])]]
    steps = no_eot_model.calls - len(stops)  # minus one prefill per prompt
    assert steps < 20  # every prompt stops within a few tokens and its row is refilled at once
    long = generate(no_eot_model, tokenizer, prompts[:1], max_new_tokens=40, temperature=0, max_batch_size=2)
    assert long == [[full]]
    no_eot_model.calls = 0
    mixed = generate(no_eot_model, tokenizer, prompts, max_new_tokens=40, temperature=0, max_batch_size=2,
                     stop=["never appears"])
    assert mixed[0] == [full] and no_eot_model.calls <= len(prompts) + 40 * 3


def test_stream_yields_samples_as_they_finish(no_eot_model, tokenizer):
    """The last prompt fills the context after one token: it comes out first, before the earlier prompts."""
    prompts = ["a = 1\n", "b = 2\n", "x = 1\n" * 200]
    order = [i for i, _, _ in stream(no_eot_model, tokenizer, prompts, n=1, max_new_tokens=30, temperature=0,
                                     max_batch_size=3)]
    assert order[0] == 2 and sorted(order) == [0, 1, 2]


def test_stop_string_split_across_tokens(no_eot_model, tokenizer):
    kwargs = dict(max_new_tokens=30, temperature=1.0, top_p=1.0, seed=2)
    ((full,),) = generate(no_eot_model, tokenizer, PROMPTS[:1], **kwargs)
    ids = tokenizer.encode(full, add_special_tokens=False).ids
    # a stop string that begins inside one token and ends inside a later one
    pieces = [tokenizer.decode(ids[:k]) for k in range(len(ids) + 1)]
    boundary = next(len(pieces[k]) for k in range(1, len(ids))
                    if 0 < len(pieces[k]) < len(full) and full.index(full[len(pieces[k]) - 1:len(pieces[k]) + 1])
                    == len(pieces[k]) - 1)
    stop = full[boundary - 1: boundary + 1]  # its first character ends one token, its second starts the next
    ((cut,),) = generate(no_eot_model, tokenizer, PROMPTS[:1], stop=[stop], **kwargs)
    assert cut == full[: full.index(stop)]


def test_eot_ends_a_sample(model, tokenizer):
    """The model says token 50 three times, then <|endoftext|>: the sample is those three tokens."""
    eot, word = tokenizer.token_to_id("<|endoftext|>"), 50
    model.calls = 0

    def word_then_eot(module, args, output):
        logits, loss = output
        module.calls += 1
        forced = torch.full_like(logits, -1e9)
        forced[..., eot if module.calls > 3 else word] = 0
        return forced, loss

    model.register_forward_hook(word_then_eot)
    assert generate(model, tokenizer, PROMPTS[:1], max_new_tokens=30, temperature=0) == [[tokenizer.decode([word] * 3)]]
    assert model.calls == 4


def test_n_samples_with_top_p_batched(model, tokenizer):
    got = generate(model, tokenizer, MANY[:3], n=5, max_new_tokens=12, temperature=1.0, top_p=0.8, seed=1,
                   max_batch_size=4)
    assert [len(s) for s in got] == [5, 5, 5]
    assert all(len(set(s)) > 1 for s in got)
    assert got == generate(model, tokenizer, MANY[:3], n=5, max_new_tokens=12, temperature=1.0, top_p=0.8, seed=1)


def test_context_limit_in_a_mixed_batch(no_eot_model, tokenizer):
    long_prompt = "x = 1\n" * 200
    got = generate(no_eot_model, tokenizer, [long_prompt, PROMPTS[0]], n=2, max_new_tokens=10, temperature=0,
                   max_batch_size=4)
    alone = generate(no_eot_model, tokenizer, [long_prompt], n=1, max_new_tokens=10, temperature=0,
                     use_cache=False)
    assert got[0] == [alone[0][0]] * 2
    assert len(tokenizer.encode(got[0][0], add_special_tokens=False).ids) <= 1


def test_positions_forward_matches_plain_forward(model):
    """Rows at different lengths in one cache give the logits each row gets alone."""
    a, b = torch.randint(0, model.config.vocab_size, (1, 20)), torch.randint(0, model.config.vocab_size, (1, 9))
    full_a, _ = model(a)
    full_b, _ = model(b)
    cache = model.new_kv_cache(2, 32, per_row=True)
    for seq, row in ((a, 0), (b, 1)):
        one = model.new_kv_cache(1, seq.shape[1], per_row=True)
        model(seq[:, :-1], positions=torch.arange(seq.shape[1] - 1)[None], kv_cache=one)
        cache.k[:, row, :, : seq.shape[1] - 1] = one.k[:, 0, :, :-1]
        cache.v[:, row, :, : seq.shape[1] - 1] = one.v[:, 0, :, :-1]
    last = torch.tensor([[a[0, -1]], [b[0, -1]]])
    cache.span = 20
    logits, _ = model(last, positions=torch.tensor([[19], [8]]), kv_cache=cache)
    assert torch.allclose(logits[0, 0], full_a[0, -1], atol=1e-5)
    assert torch.allclose(logits[1, 0], full_b[0, -1], atol=1e-5)
    last_only, _ = model(a, last_only=True)
    assert last_only.shape[1] == 1 and torch.allclose(last_only[0, 0], full_a[0, -1], atol=1e-5)


def test_modern_layout_batched_greedy_equals_reference(arch, tokenizer):
    """Rotary positions and grouped-query attention take the same per-row path."""
    from dataclasses import replace

    from codenas.model.model import GPT

    torch.manual_seed(1)
    modern = GPT(replace(arch, position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True, n_kv_head=2)).eval()
    batched = generate(modern, tokenizer, MANY[:5], n=2, max_new_tokens=15, temperature=0, max_batch_size=3)
    uncached = generate(modern, tokenizer, MANY[:5], n=1, max_new_tokens=15, temperature=0, use_cache=False)
    assert [s[0] for s in batched] == [s[0] for s in uncached]


def test_nucleus_from_candidates_equals_full_sort():
    """CPU top-p looks at the 64 likeliest tokens first; rows with a wider nucleus sort everything: same draws."""
    from codenas.model.sampling import _invert, _sorted

    torch.manual_seed(0)
    peaked, flat = torch.randn(50, 1000) * 8, torch.randn(50, 1000) * 0.1
    logits = torch.cat([peaked, flat])[torch.randperm(100)]
    keys, steps = torch.arange(100), torch.full((100,), 3)
    chosen = _choose(logits, 1.0, 0.9, keys, steps)
    reference = _invert(*_sorted(torch.softmax(logits, dim=-1)), _uniform(keys, steps), 0.9)
    assert torch.equal(chosen, reference)
    alone = torch.cat([_choose(logits[i:i + 1], 1.0, 0.9, keys[i:i + 1], steps[i:i + 1]) for i in range(100)])
    assert torch.equal(chosen, alone)
