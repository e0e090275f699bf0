"""Run configuration: the TOML presets in configs/, a user TOML layered over them, and ``section.key=value`` overrides.

The schema (every section, key, type, default and help) is generated from the settings dataclasses
(``codenas.settings.SECTIONS``); the values live in the presets. A preset must set every key, so what a run does is
always written down in one file; ``--config`` files and overrides change single keys, and an unknown section or
key is an error naming it. The whole resolved configuration is validated here, before any stage runs
(``pretrain.max_steps must be at least 1, got -3``). It is written back as TOML so that it can be passed again
with ``--config`` (or to any stage command's ``--config``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codenas.io import CodenasError
from codenas.names import RESOLVED_CONFIG
from codenas.paths import resolve_config
from codenas.settings import (
    SECTIONS,
    Part,
    build_section,
    check_keys,
    read_config_file,
    read_toml,
    section_keys,
    toml_literal,
    upgrade_keys,
)

FINETUNE_METHODS = {"lora": ("lora",), "sft": ("sft",), "both": ("sft", "lora"), "none": ()}

# section -> its keys, in order (derived from the settings dataclasses; for the docs and tools)
SCHEMA: dict[str, tuple[str, ...]] = {section: tuple(section_keys(section)) for section in SECTIONS}


def load_run_config(preset: str | os.PathLike = "tiny", config_file: str | os.PathLike | None = None,
                    overrides: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """The resolved run configuration: the preset (a name in configs/ or a path), then ``config_file``, then
    ``overrides`` (``section.key=value``; the value is a TOML literal, else taken as a string).

    Every key of every section is checked (type, range, choices) before this returns.
    """
    preset_path = resolve_config(preset, ".toml")
    config = upgrade_keys(read_toml(preset_path))
    _check(config, preset_path, complete=True)
    if config_file is not None:
        layer = read_config_file(config_file)
        for section, values in layer.items():
            config[section].update(values)
    for item in overrides:
        section, key, value = parse_override(item)
        layer = upgrade_keys({section: {key: value}})
        _check(layer, None, complete=False)
        config[section].update(layer[section])
    for section in SECTIONS:
        build_section(section, config[section], complete=True)
    if config["eval"]["samples"] < 1:
        raise CodenasError(f"eval.samples must be at least 1, got {config['eval']['samples']}")
    return config


def settings_of(config: dict[str, dict[str, Any]], section: str) -> dict[type, Any]:
    """The settings objects of a resolved config's ``section``: ``{TrainSettings: TrainSettings(...), ...}``."""
    return {part.cls: obj for part, obj in build_section(section, config[section], complete=True).items()}


def part_of(config: dict[str, dict[str, Any]], section: str, part: Part) -> Any:
    """The settings object of one part of a section (parts with a prefix share a class with others)."""
    return build_section(section, config[section], parts=(part,), complete=True)[part]


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
        lines = [f"[{section}]"] + [f"{key} = {toml_literal(value)}" for key, value in values.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def read_resolved_config(out: Path) -> dict[str, dict[str, Any]] | None:
    """The resolved configuration a run wrote into ``out``, or None when there is none."""
    path = Path(out) / RESOLVED_CONFIG
    return read_toml(path) if path.is_file() else None


def finetune_stages(config: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The fine-tuning stages the config asks for, in the order they run (``sft`` before ``lora``)."""
    return FINETUNE_METHODS[config["finetune"]["method"]]


def _check(config: dict[str, Any], path: str | os.PathLike | None, *, complete: bool) -> None:
    """Every section and key is known and its value valid; with ``complete``, none is missing."""
    check_keys(config, path)
    for section, values in config.items():
        build_section(section, values, path)
    if complete:
        for section in SECTIONS:
            keys = section_keys(section)
            missing = [k for k in keys if k not in config.get(section, {})]
            if missing:
                raise CodenasError(f"config key {section}.{missing[0]} is missing", path)
            config[section] = {k: config[section][k] for k in keys}
