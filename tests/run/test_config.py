"""Run presets, --config layering and section.key=value overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from codenas.io import CodenasError
from codenas.run.config import SCHEMA, dumps_toml, finetune_stages, load_run_config, parse_override


@pytest.mark.parametrize("preset", ["tiny", "seed", "cpu"])
def test_presets_set_every_key(preset):
    config = load_run_config(preset)
    assert {s: set(v) for s, v in config.items()} == {s: set(keys) for s, keys in SCHEMA.items()}


def test_cpu_preset_mines_fine_tunes_improves_and_evaluates_every_problem():
    from codenas.model.config import load_arch
    from codenas.run.stages import plan

    config = load_run_config("cpu")
    assert config["mine"]["enabled"] and config["finetune"]["mined_share"] > 0 and config["improve"]["rounds"] > 0
    assert (config["eval"]["samples"], config["eval"]["limit"], config["eval"]["temperature"]) == (10, 0, 0.8)
    assert config["eval"]["benchmarks"] == ["mini", "mbpp-test"] and config["eval"]["ks"] == [1, 10]
    assert load_arch(config["pretrain"]["arch"]).n_layer == 4
    names = [s.name for s in plan(config, Path("run"), Path("../shared/data/mbpp/mbpp.jsonl"))]
    assert names[:6] == ["data", "corpus", "mine", "pretrain", "sft", "improve"]
    assert {"eval/base/mbpp-test", "eval/sft/mbpp-test", "eval/improve/mbpp-test", "eval/improve/mini"} <= set(names)


def test_seed_preset_is_the_seed_experiment():
    config = load_run_config("seed")
    ft = config["finetune"]
    assert config["pretrain"]["arch"] == "codenas_l8h512_regularized"
    assert (ft["method"], ft["lora_rank"], ft["lora_alpha"]) == ("lora", 8, 16)
    assert ft["lora_targets"] == ["qkv_proj", "out_proj"]
    assert (ft["max_steps"], ft["lr"], ft["batch_size"], ft["eval_interval"]) == (20000, 1e-4, 8, 2000)
    assert config["eval"]["temperature"] == 0.8
    assert config["eval"]["benchmarks"] == ["mini", "mbpp-test"]


@pytest.mark.parametrize(("text", "expected"), [
    ("pretrain.max_steps=20", ("pretrain", "max_steps", 20)),
    ("pretrain.lr=3e-4", ("pretrain", "lr", 3e-4)),
    ("pretrain.arch=tiny", ("pretrain", "arch", "tiny")),
    ("pretrain.arch=configs/x.json", ("pretrain", "arch", "configs/x.json")),
    ("eval.benchmarks=['mini']", ("eval", "benchmarks", ["mini"])),
    (' finetune.method = "sft" ', ("finetune", "method", "sft")),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_overrides_layer_over_config_file_over_preset(tmp_path):
    user = tmp_path / "user.toml"
    user.write_text('[pretrain]\nmax_steps = 7\nlr = 0.01\n[eval]\nlimit = 3\n')
    config = load_run_config("tiny", user, ["pretrain.max_steps=9", "finetune.method=both"])
    assert config["pretrain"]["max_steps"] == 9  # override beats the file
    assert config["pretrain"]["lr"] == 0.01  # the file beats the preset
    assert config["eval"]["limit"] == 3
    assert config["tokenizer"] == load_run_config("tiny")["tokenizer"]  # untouched section
    assert finetune_stages(config) == ("sft", "lora")


@pytest.mark.parametrize(("override", "message"), [
    ("pretrain.max_stepz=3", "unknown config key pretrain.max_stepz"),
    ("pretrian.max_steps=3", "unknown config section 'pretrian'"),
    ("pretrain.max_steps=many", "pretrain.max_steps must be an integer"),
    ("pretrain.max_steps=true", "pretrain.max_steps must be an integer"),
    ("finetune.method=qlora", "finetune.method must be one of"),
    ("eval.benchmarks=[]", "eval.benchmarks must name at least one"),
    ("eval.ks=[0]", "eval.ks must hold positive integers"),
    ("max_steps=3", "must look like section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(CodenasError, match=message):
        load_run_config("tiny", None, [override])


def test_unknown_key_in_config_file_names_file_and_key(tmp_path):
    user = tmp_path / "user.toml"
    user.write_text("[eval]\nsamplez = 3\n")
    with pytest.raises(CodenasError, match=r"user\.toml: unknown config key eval\.samplez"):
        load_run_config("tiny", user)


def test_integer_is_accepted_for_a_float_key():
    assert load_run_config("tiny", None, ["pretrain.lr=1"])["pretrain"]["lr"] == 1


def test_incomplete_preset_names_the_missing_key(tmp_path):
    preset = tmp_path / "partial.toml"
    preset.write_text(dumps_toml(load_run_config("tiny")).replace("val_size = 50\n", ""))
    with pytest.raises(CodenasError, match="data.val_size is missing"):
        load_run_config(preset)


def test_resolved_config_round_trips_through_toml(tmp_path):
    config = load_run_config("tiny", None, ['pretrain.arch="a \\"quoted\\" name"', "eval.benchmarks=['mini']"])
    text = dumps_toml(config)
    assert tomllib.loads(text) == config
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(text)
    assert load_run_config(resolved) == config  # a resolved config is itself a complete preset
