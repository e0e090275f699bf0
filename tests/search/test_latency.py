"""Latency measurement: a positive per-token figure, also for contexts shorter than the default decode length."""

from __future__ import annotations

from codenas.model.config import ArchConfig
from codenas.search.latency import measure_latency_ms


def test_latency_is_positive_and_respects_a_short_context():
    arch = ArchConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, context_length=8, vocab_size=300)
    latency = measure_latency_ms(arch, new_tokens=32, prompt_tokens=16, repeats=1)
    assert latency > 0
