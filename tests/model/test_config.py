"""Arch config validation: good configs load, every kind of bad field is reported by name with the file path."""

from __future__ import annotations

import dataclasses
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


def test_each_layout_field_is_declared_once_and_reaches_the_flags_the_json_and_the_search():
    """A field declared with ``search`` choices is a `codenas search` flag, a key of the arch JSON (round trip)
    and a dimension of the search space, sampled into the arch, with nothing else written for it."""
    import dataclasses

    import optuna
    from click.testing import CliRunner

    from codenas.cli import cli
    from codenas.model.config import layout_fields, layout_flag_help
    from codenas.search.space import SearchSpace, parse_space, sample_arch

    names = [f.name for f in layout_fields()]
    assert names == ["bias", "position", "norm", "mlp", "qk_norm", "n_kv_head"]
    flags = {p.name: p for p in cli.commands["search"].params}
    space_fields = {f.name: f.default for f in dataclasses.fields(SearchSpace)}
    base = {"n_layer": 2, "n_head": 4, "d_model": 32, "d_ff_ratio": 2, "context_length": 64, "dropout": 0.0,
            "optimizer": "adamw"}
    help_text = CliRunner().invoke(cli, ["search", "--help"], terminal_width=200).output
    for f in layout_fields():
        assert flags[f.name].opts == [f"--{f.name.replace('_', '-')}"] and flags[f.name].help == layout_flag_help(f)
        assert layout_flag_help(f) in help_text
        assert space_fields[f.name] == f.metadata["search"]
        for value in f.metadata["search"]:
            text = str(value).lower()
            assert getattr(parse_space({f.name: text}), f.name) == (value,)
            cap = f.metadata["cap"]
            arch = ArchConfig.from_dict({**GOOD, f.name: min(value, GOOD[cap]) if cap else value})
            assert ArchConfig.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
            sampled, _ = sample_arch(optuna.trial.FixedTrial({**base, **{g.name: g.metadata["search"][0]
                                                                         for g in layout_fields()}, f.name: value}),
                                     SearchSpace(d_model=(32,), context_length=(64,), **{f.name: (value,)}), 300)
            assert getattr(sampled, f.name) == (min(value, base[cap]) if cap else value)


def test_describe_layout_shows_the_layout_fields_from_their_declaration():
    from codenas.model.config import describe_layout

    gpt2 = ArchConfig.from_dict(GOOD)
    assert describe_layout(gpt2) == "2 layers, 4 heads, d_model 32, d_ff 64, context 64, vocab 300"
    modern = ArchConfig.from_dict({**GOOD, "position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_head": 2})
    assert describe_layout(modern).endswith("vocab 300, rope, rmsnorm, swiglu, 2 kv heads")


def test_the_arch_json_schema_in_the_docs_has_a_row_per_field():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    for f in dataclasses.fields(ArchConfig):
        assert f"| `{f.name}` |" in doc, f"docs/architecture.md: no row for arch field {f.name}"
