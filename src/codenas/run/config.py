"""Run configuration: the TOML presets in configs/, a user TOML layered over them, and ``section.key=value`` overrides.

The schema (every section, key and type) lives here; the values live in the presets. A preset must set every key,
so what a run does is always written down in one file; ``--config`` files and overrides change single keys, and
an unknown section or key is an error naming it. The resolved configuration is written back as TOML so that it
can be passed again with ``--config``.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from codenas.corpus.settings import CorpusSettings
from codenas.io import CodenasError
from codenas.paths import resolve_config

FINETUNE_METHODS = {"lora": ("lora",), "sft": ("sft",), "both": ("sft", "lora"), "none": ()}


def _dataclass_schema(cls) -> dict[str, type]:
    """key -> type of a settings dataclass (its fields are the section's keys)."""
    import dataclasses

    return {f.name: {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
            for f in dataclasses.fields(cls)}


# section -> key -> type. ``float`` accepts integers; ``list`` holds strings (or, for ``ks``, integers).
SCHEMA: dict[str, dict[str, type]] = {
    "data": {"seed": int, "val_size": int, "holdout": str},
    "tokenizer": {"vocab_size": int, "max_files": int},
    "corpus": {"sources": list, **_dataclass_schema(CorpusSettings)},
    "pretrain": {
        "arch": str, "max_steps": int, "batch_size": int, "grad_accum": int, "lr": float, "min_lr": float,
        "warmup_steps": int, "weight_decay": float, "eval_interval": int, "eval_batches": int, "log_interval": int,
        "dtype": str, "compile": bool, "peak_flops": float, "seed": int, "optimizer": str,
        "muon_lr": float, "muon_momentum": float, "muon_weight_decay": float,
    },
    "finetune": {
        "method": str, "max_steps": int, "batch_size": int, "lr": float, "min_lr": float, "warmup_steps": int,
        "weight_decay": float, "eval_interval": int, "eval_problems": int, "lora_r": int, "lora_alpha": int,
        "targets": list, "dtype": str, "peak_flops": float, "seed": int,
    },
    "eval": {
        "benchmarks": list, "samples": int, "temperature": float, "top_p": float, "max_new_tokens": int,
        "limit": int, "ks": list, "timeout": float, "seed": int,
    },
}
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true or false"}


def load_run_config(preset: str | os.PathLike = "tiny", config_file: str | os.PathLike | None = None,
                    overrides: list[str] = ()) -> dict[str, dict[str, Any]]:
    """The resolved run configuration: the preset (a name in configs/ or a path), then ``config_file``, then
    ``overrides`` (``section.key=value``; the value is a TOML literal, else taken as a string)."""
    preset_path = resolve_config(preset, ".toml")
    config = _read_toml(preset_path)
    _check(config, preset_path, complete=True)
    if config_file is not None:
        layer = _read_toml(Path(config_file))
        _check(layer, config_file, complete=False)
        for section, values in layer.items():
            config[section].update(values)
    for item in overrides:
        section, key, value = parse_override(item)
        _check({section: {key: value}}, None, complete=False)
        config[section][key] = value
    _check_values(config)
    return config


def parse_override(item: str) -> tuple[str, str, Any]:
    """``"pretrain.max_steps=20"`` -> ``("pretrain", "max_steps", 20)``; ``"eval.benchmarks=['mini']"`` -> a list."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise CodenasError(f"override {item!r} must look like section.key=value (e.g. pretrain.max_steps=20)")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return section, key, value


def dumps_toml(config: dict[str, dict[str, Any]]) -> str:
    """The configuration as TOML (sections in schema order); readable back by ``load_run_config``."""
    blocks = []
    for section, values in config.items():
        lines = [f"[{section}]"] + [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def finetune_stages(config: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The fine-tuning stages the config asks for, in the order they run (``sft`` before ``lora``)."""
    return FINETUNE_METHODS[config["finetune"]["method"]]


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CodenasError("config file not found", path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise CodenasError(f"invalid TOML: {e}", path) from None


def _check(config: dict[str, Any], path: str | os.PathLike | None, *, complete: bool) -> None:
    """Every section and key is known and well typed; with ``complete``, none is missing."""
    for section, values in config.items():
        if section not in SCHEMA:
            raise CodenasError(f"unknown config section {section!r} (known: {', '.join(SCHEMA)})", path)
        if not isinstance(values, dict):
            raise CodenasError(f"config section {section!r} must be a table", path)
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise CodenasError(f"unknown config key {section}.{key} (known: {', '.join(SCHEMA[section])})", path)
            _check_type(f"{section}.{key}", value, SCHEMA[section][key], path)
    if complete:
        for section, keys in SCHEMA.items():
            missing = [k for k in keys if k not in config.get(section, {})]
            if missing:
                raise CodenasError(f"config key {section}.{missing[0]} is missing", path)
        for section in SCHEMA:
            config[section] = {k: config[section][k] for k in SCHEMA[section]}


def _check_type(name: str, value: Any, expected: type, path: str | os.PathLike | None) -> None:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise CodenasError(f"config key {name} must be {_TYPE_NAMES[expected]}, got {value!r}", path)


def _check_values(config: dict[str, dict[str, Any]]) -> None:
    method = config["finetune"]["method"]
    if method not in FINETUNE_METHODS:
        raise CodenasError(f"config key finetune.method must be one of {', '.join(FINETUNE_METHODS)}, got {method!r}")
    optimizer = config["pretrain"]["optimizer"]
    if optimizer not in ("adamw", "muon"):
        raise CodenasError(f"config key pretrain.optimizer must be adamw or muon, got {optimizer!r}")
    if not config["corpus"]["sources"] or not all(isinstance(x, str) for x in config["corpus"]["sources"]):
        raise CodenasError("config key corpus.sources must name at least one source (e.g. [\"stdlib\"])")
    try:
        CorpusSettings(**{k: v for k, v in config["corpus"].items() if k != "sources"})
    except CodenasError as e:
        raise CodenasError(f"config section corpus: {e}") from None
    if not config["eval"]["benchmarks"]:
        raise CodenasError("config key eval.benchmarks must name at least one benchmark")
    if config["eval"]["samples"] < 1:
        raise CodenasError("config key eval.samples must be at least 1")
    for k in config["eval"]["ks"]:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise CodenasError(f"config key eval.ks must hold positive integers, got {k!r}")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)
