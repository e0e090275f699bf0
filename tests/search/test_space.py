"""The search space: exact parameter counts, sampling into valid arch configs, flag parsing."""

from __future__ import annotations

import optuna
import pytest

from codenas.io import CodenasError
from codenas.model.config import ArchConfig, load_arch
from codenas.model.model import GPT
from codenas.search.space import (
    SearchSpace,
    count_params,
    d_ff_of,
    optimizer_of,
    parse_space,
    sample_arch,
    shape_of,
    smallest_arch,
)


@pytest.mark.parametrize("arch", [
    ArchConfig(n_layer=2, n_head=2, d_model=32, d_ff=96, context_length=64, vocab_size=300),
    ArchConfig(n_layer=3, n_head=4, d_model=64, d_ff=128, context_length=32, vocab_size=500, bias=False,
               tie_embeddings=False),
    load_arch("tiny"),
])
def test_count_params_matches_a_real_model(arch):
    assert count_params(arch) == GPT(arch).num_params()


GPT2_LAYOUT = {"bias": True, "position": "learned", "norm": "layernorm", "mlp": "gelu", "qk_norm": False,
               "n_kv_head": 8, "optimizer": "adamw"}
# the GPT-2 components and dropout are searchable, but only when asked for (the default space leaves them out)
WITH_GPT2 = {"bias": (False, True), "position": ("learned", "rope"), "norm": ("layernorm", "rmsnorm"),
             "mlp": ("gelu", "swiglu"), "qk_norm": (False, True), "dropout": (0.0, 0.3)}


def test_default_space_searches_shapes_of_the_modern_block_without_dropout():
    space = SearchSpace()
    assert (space.bias, space.position, space.mlp, space.dropout) == ((False,), ("rope",), ("swiglu",), (0.0, 0.0))
    assert space.norm == ("layernorm", "rmsnorm") and space.qk_norm == (False, True)
    assert space.n_kv_head == (1, 2, 4, 8) and space.optimizer == ("adamw", "muon") and space.bias == (False,)
    assert space.d_ff_ratio == (2, 8 / 3, 3, 4)


def test_fractional_ratios_round_d_ff_to_a_multiple_of_8():
    assert d_ff_of(8 / 3, 128) == 344 and d_ff_of(2.6667, 128) == 344 and d_ff_of(8 / 3, 192) == 512
    assert d_ff_of(3, 128) == 384 and d_ff_of(2, 20) == 40  # whole products are kept as they are
    assert parse_space({"d_ff_ratio": "2, 2.5,3"}).d_ff_ratio == (2, 2.5, 3)
    with pytest.raises(CodenasError, match="d_ff_ratio must be positive numbers"):
        SearchSpace(d_ff_ratio=(0,))


def test_sample_arch_builds_the_sampled_shape():
    params = {"n_layer": 3, "n_head": 4, "d_model": 64, "d_ff_ratio": 3, "context_length": 128, "dropout": 0.123456,
              **GPT2_LAYOUT}
    arch, reason = sample_arch(optuna.trial.FixedTrial(params), SearchSpace(d_model=(64,), **WITH_GPT2), 1000,
                               name="x")
    assert reason == ""
    assert arch == ArchConfig(n_layer=3, n_head=4, d_model=64, d_ff=192, context_length=128, vocab_size=1000,
                              dropout=0.1235, name="x")
    assert shape_of(params) == {k: getattr(arch, k) for k in shape_of(params)}


def test_sample_arch_builds_the_sampled_layout():
    params = {"n_layer": 2, "n_head": 4, "d_model": 64, "d_ff_ratio": 2, "context_length": 128, "dropout": 0.0,
              "bias": False, "position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True, "n_kv_head": 2,
              "optimizer": "muon"}
    arch, reason = sample_arch(optuna.trial.FixedTrial(params), SearchSpace(d_model=(64,)), 1000)
    assert reason == "" and (arch.bias, arch.position, arch.norm, arch.mlp, arch.qk_norm, arch.n_kv_head) == (
        False, "rope", "rmsnorm", "swiglu", True, 2)
    assert optimizer_of(params) == "muon" and optimizer_of({}) == "adamw"
    capped, _ = sample_arch(optuna.trial.FixedTrial({**params, "n_kv_head": 8}), SearchSpace(d_model=(64,)), 1000)
    assert capped.n_kv_head == 4  # capped at n_head: plain multi-head attention
    odd, reason = sample_arch(optuna.trial.FixedTrial({**params, "n_head": 3, "d_model": 192, "n_kv_head": 2}),
                              SearchSpace(n_head=(3,), d_model=(192,)), 1000)
    assert odd is None and "does not divide" in reason


def test_sample_arch_reports_heads_that_do_not_divide_the_width():
    params = {"n_layer": 2, "n_head": 3, "d_model": 64, "d_ff_ratio": 2, "context_length": 128, "dropout": 0.0,
              **GPT2_LAYOUT}
    arch, reason = sample_arch(optuna.trial.FixedTrial(params), SearchSpace(n_head=(3,), d_model=(64,), **WITH_GPT2),
                               1000)
    assert arch is None
    assert "not a multiple" in reason


def test_sampling_stays_inside_the_space():
    space = SearchSpace(n_layer=(2, 3), n_head=(2, 4), d_model=(32, 64), d_ff_ratio=(2, 4), context_length=(64,),
                        dropout=(0.1, 0.2))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(10):
        arch, reason = sample_arch(study.ask(), space, 300)
        assert reason == "" and 2 <= arch.n_layer <= 3 and arch.n_head in (2, 4) and arch.d_model in (32, 64)
        assert arch.d_ff // arch.d_model in (2, 4) and arch.context_length == 64 and 0.1 <= arch.dropout <= 0.2


def test_smallest_arch_has_the_fewest_parameters():
    space = SearchSpace(n_layer=(2, 3), n_head=(2, 4), d_model=(64, 32), d_ff_ratio=(4, 2), context_length=(64, 32),
                        dropout=(0.0, 0.1))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampled = [count_params(sample_arch(study.ask(), space, 300)[0]) for _ in range(20)]
    assert count_params(smallest_arch(space, 300)) <= min(sampled)
    assert smallest_arch(space, 300).d_ff == 64


def test_parse_space_reads_ranges_and_choices():
    space = parse_space({"n_layer": "2:4", "d_model": "128, 256", "dropout": "0:0.25", "n_head": None,
                         "position": "rope", "qk_norm": "false, true", "n_kv_head": "1,4", "optimizer": "muon"})
    assert space.n_layer == (2, 4) and space.d_model == (128, 256) and space.dropout == (0.0, 0.25)
    assert space.n_head == SearchSpace().n_head and space.norm == ("layernorm", "rmsnorm")
    assert (space.position, space.qk_norm, space.n_kv_head, space.optimizer) == (
        ("rope",), (False, True), (1, 4), ("muon",))


def test_layout_sampling_stays_inside_the_space():
    space = SearchSpace(n_layer=(2, 2), n_head=(4,), d_model=(32,), d_ff_ratio=(2,), context_length=(64,),
                        position=("rope",), mlp=("swiglu",), n_kv_head=(1, 2), optimizer=("muon",))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        arch, _ = sample_arch(trial, space, 300)
        assert arch.position == "rope" and arch.mlp == "swiglu" and arch.n_kv_head in (1, 2)
        assert optimizer_of(trial.params) == "muon"


@pytest.mark.parametrize("flags, message", [
    ({"n_layer": "4"}, "low:high"),
    ({"n_layer": "4:2"}, "empty"),
    ({"d_model": "128,abc"}, "not an integer"),
    ({"dropout": "0:1.5"}, "dropout"),
    ({"context_length": "0,128"}, "positive"),
    ({"position": "alibi"}, "position must be among learned, rope"),
    ({"optimizer": "sgd"}, "optimizer must be among adamw, muon"),
    ({"qk_norm": "yes"}, "qk_norm must be true"),
])
def test_parse_space_rejects_bad_flags(flags, message):
    with pytest.raises(CodenasError, match=message):
        parse_space(flags)
