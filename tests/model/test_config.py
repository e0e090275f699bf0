"""Arch config validation: good configs load, every kind of bad field is reported by name with the file path."""

from __future__ import annotations

import json

import pytest

from codenas.io import CodenasError
from codenas.model.config import ArchConfig, load_arch

GOOD = {"n_layer": 2, "n_head": 4, "d_model": 32, "d_ff": 64, "context_length": 64, "vocab_size": 300}


@pytest.mark.parametrize("name", ["tiny", "codenas_l8h512_regularized"])
def test_shipped_configs_load(name):
    cfg = load_arch(name)
    assert cfg.name == name
    assert cfg.vocab_size == 8192 and cfg.bias and cfg.tie_embeddings
    assert ArchConfig.from_dict(cfg.to_dict()) == cfg


def test_regularized_config_shape():
    cfg = load_arch("codenas_l8h512_regularized")
    assert (cfg.n_layer, cfg.n_head, cfg.d_model, cfg.d_ff, cfg.context_length) == (8, 8, 512, 2048, 512)
    assert cfg.dropout >= 0.1


def test_defaults_and_name_from_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(GOOD))
    cfg = load_arch(path)
    assert cfg.name == "mine" and cfg.dropout == 0.0 and cfg.bias and cfg.tie_embeddings
    assert cfg.head_dim == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_head": -1}, "arch field 'n_head' must be a positive integer, got -1"),
        ({"n_layer": 0}, "arch field 'n_layer' must be a positive integer, got 0"),
        ({"d_model": 32.0}, "arch field 'd_model' must be a positive integer, got 32.0"),
        ({"vocab_size": True}, "arch field 'vocab_size' must be a positive integer, got True"),
        ({"context_length": "64"}, "arch field 'context_length' must be a positive integer, got '64'"),
        ({"dropout": 1.0}, "arch field 'dropout' must be a number in [0, 1), got 1.0"),
        ({"dropout": -0.1}, "arch field 'dropout' must be a number in [0, 1), got -0.1"),
        ({"bias": 1}, "arch field 'bias' must be true or false, got 1"),
        ({"tie_embeddings": "yes"}, "arch field 'tie_embeddings' must be true or false, got 'yes'"),
        ({"name": 3}, "arch field 'name' must be a string, got 3"),
        ({"n_head": 5}, "arch field 'd_model' (32) must be divisible by 'n_head' (5)"),
        ({"n_heads": 4}, "unknown arch field 'n_heads'"),
    ],
)
def test_bad_field_named_with_path(tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(CodenasError) as err:
        load_arch(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_missing_field_named():
    with pytest.raises(CodenasError, match="missing arch field 'd_ff'"):
        ArchConfig.from_dict({k: v for k, v in GOOD.items() if k != "d_ff"})


def test_not_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(CodenasError, match="must be a JSON object"):
        load_arch(path)


def test_unknown_name():
    with pytest.raises(CodenasError, match="no such config"):
        load_arch("no_such_arch_config")
