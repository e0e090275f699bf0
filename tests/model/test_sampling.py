"""Sampling: KV-cached and uncached greedy decoding agree; n samples per prompt; stop strings; determinism."""

from __future__ import annotations

import pytest
import torch

from codenas.model.sampling import _choose, generate

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
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    picks = {_choose(logits, 1.0, 0.7, g).item() for _ in range(200)}
    assert picks == {0, 1}  # 0.5 + 0.3 reaches 0.7; tokens 2 and 3 are outside the nucleus
    assert _choose(logits, 0.0, 0.7, g).item() == 0


def test_bad_settings_rejected(model, tokenizer):
    with pytest.raises(ValueError, match="top_p"):
        generate(model, tokenizer, PROMPTS, top_p=0.0)
