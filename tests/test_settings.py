"""Settings: every field of every settings dataclass is a flag of each command that uses it and a key of the run
schema, under the same name; --config files with flags over them; errors that name the key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from codenas import settings as S
from codenas.cli import cli
from codenas.io import CodenasError
from codenas.run.config import SCHEMA, dumps_toml, load_run_config

# command path -> (its TOML section, the settings parts it exposes)
COMMANDS = {
    ("data", "build"): ("data", (S.Part(S.DataSettings),)),
    ("corpus", "build"): ("corpus", (S.Part(S.CorpusSettings),)),
    ("data", "mine"): ("mine", (S.Part(S.MineSettings),)),
    ("tokenizer", "train"): ("tokenizer", (S.Part(S.TokenizerSettings),)),
    ("train", "pretrain"): ("pretrain", (S.Part(S.PretrainSettings), S.Part(S.TrainSettings))),
    ("train", "sft"): ("finetune", S.TRAIN_FINETUNE),
    ("train", "lora"): ("finetune", (*S.TRAIN_FINETUNE, S.LORA)),
    ("eval", "model"): ("eval", S.EVAL),
    ("eval", "samples"): ("eval", (S.Part(S.JudgeSettings),)),
    ("train", "improve"): ("improve", (S.Part(S.ImproveSettings),)),
}
# commands outside `codenas run` (no TOML section, no --config) -> the settings parts they expose
OTHER_COMMANDS = {
    ("search",): (S.Part(S.SearchSettings),),
}
SETTINGS_CLASSES = [S.DataSettings, S.CorpusSettings, S.TokenizerSettings, S.PretrainSettings, S.TrainSettings,
                    S.LoraSettings, S.SamplingSettings, S.JudgeSettings, S.EvalSettings, S.FinetuneSettings,
                    S.BenchmarkSettings, S.ImproveSettings, S.MineSourcesSettings, S.MineSettings,
                    S.MixSettings]


def _command(path: tuple[str, ...]) -> click.Command:
    command = cli
    for name in path:
        command = command.commands[name]
    return command


def _flags(command: click.Command) -> dict[str, click.Parameter]:
    return {opt: p for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def test_every_settings_class_is_frozen_and_every_field_has_help():
    for cls in [*SETTINGS_CLASSES, *(p.cls for parts in OTHER_COMMANDS.values() for p in parts)]:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help", "").strip(), f"{cls.__name__}.{f.name} has no help"
            assert "\n" not in f.metadata["help"]


def test_every_settings_class_is_in_the_run_schema():
    in_schema = {part.cls for parts in S.SECTIONS.values() for part in parts}
    assert set(SETTINGS_CLASSES) <= in_schema


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_command_flags_and_run_schema_expose_every_field_under_the_same_name(path):
    section, parts = COMMANDS[path]
    command = _command(path)
    flags = _flags(command)
    assert "--config" in flags
    for part in parts:
        assert part in S.SECTIONS[section], f"{part.cls.__name__} is not in [{section}]"
        for f in dataclasses.fields(part.cls):
            key = part.prefix + f.name
            assert key in SCHEMA[section], f"{section}.{key} missing from the run schema"
            assert "--" + key.replace("_", "-") in flags, f"{' '.join(path)} has no --{key.replace('_', '-')}"
            param = flags["--" + key.replace("_", "-")]
            assert param.name == key
            assert f.metadata["help"] in param.help
            default = getattr(part.default_object(), f.name)
            if default is not None and not isinstance(default, tuple):
                assert param.default == default, (key, param.default, default)


def test_commands_outside_run_are_in_the_generated_reference():
    assert {(name,): parts for name, parts in S.OTHER_COMMANDS.items()} == OTHER_COMMANDS


@pytest.mark.parametrize("path", list(OTHER_COMMANDS), ids=" ".join)
def test_commands_outside_run_expose_every_field_under_the_same_name(path):
    flags = _flags(_command(path))
    assert "--config" not in flags
    for part in OTHER_COMMANDS[path]:
        for f in dataclasses.fields(part.cls):
            key = part.prefix + f.name
            param = flags.get("--" + key.replace("_", "-"))
            assert param is not None, f"{' '.join(path)} has no --{key.replace('_', '-')}"
            assert param.name == key
            assert f.metadata["help"] in param.help
            assert param.required == bool(f.metadata.get("required"))
            default = getattr(part.default_object(), f.name)
            if not param.required and not isinstance(default, tuple):
                assert param.default == default, (key, param.default, default)


def _search_config(monkeypatch, args: list[str]):
    """The SearchConfig `codenas search ARGS` hands the library (the search itself is not run)."""
    import codenas.search.study as study

    seen = []

    def fake_run_search(cfg):
        seen.append(cfg)
        raise CodenasError("stopped before searching")

    monkeypatch.setattr(study, "run_search", fake_run_search)
    result = CliRunner().invoke(cli, ["search", *args])
    assert result.exit_code == 1 and "stopped before searching" in result.output, result.output
    return seen[0]


def test_search_flags_reach_the_library_as_settings(monkeypatch, tmp_path):
    cfg = _search_config(monkeypatch, ["--max-params", "5000", "--out", str(tmp_path), "--max-files", "0",
                                       "--pruner", "halving", "--max-latency-ms", "2.5", "--lr", "0.01",
                                       "--dtype", "fp32"])
    assert isinstance(cfg, S.SearchSettings)
    assert (cfg.max_params, cfg.max_files, cfg.pruner, cfg.max_latency_ms, cfg.lr) == (5000, None, "halving", 2.5, 0.01)
    assert cfg.dtype == "fp32"
    assert (cfg.trials, cfg.budget_tokens, cfg.vocab_size, cfg.study_name) == (20, 2_000_000, 8192, "codenas-search")
    assert cfg.storage_url() == f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    default = _search_config(monkeypatch, ["--max-params", "5000", "--out", str(tmp_path)])
    assert {f.name: getattr(default, f.name) for f in dataclasses.fields(S.SearchSettings)} == \
        dataclasses.asdict(S.SearchSettings(max_params=5000))


def test_search_without_max_params_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["search", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--max-params" in result.output
    result = CliRunner().invoke(cli, ["search", "--out", str(tmp_path), "--max-params", "0"])
    assert result.exit_code == 2 and "--max-params" in result.output
    with pytest.raises(CodenasError, match="max_params must be given"):
        from codenas.search.study import SearchConfig
        SearchConfig(out=tmp_path)


def test_search_settings_rules_are_checked():
    with pytest.raises(CodenasError, match="pruner must be one of hyperband, halving, none"):
        S.SearchSettings(pruner="asha")
    with pytest.raises(CodenasError, match="max_latency_ms must be greater than 0"):
        S.SearchSettings(max_latency_ms=0.0)


def test_run_schema_has_only_generated_keys():
    for section, keys in SCHEMA.items():
        generated = {p.prefix + f.name for p in S.SECTIONS[section] for f in dataclasses.fields(p.cls)}
        assert set(keys) == generated


def test_flag_and_key_share_the_name():
    assert S.flag("lr_decay_steps") == "--lr-decay-steps"
    assert "lr_decay_steps" in SCHEMA["pretrain"] and "lr_decay_steps" in SCHEMA["finetune"]
    assert "--lr-decay-steps" in _flags(_command(("train", "pretrain")))
    assert "--lr-decay-steps" in _flags(_command(("train", "sft")))


@pytest.mark.parametrize("flag", ["--init_checkpoint", "--max_steps", "--batch_size", "--eval_interval",
                                  "--data_path", "--val_path", "--output_dir", "--arch_json", "--tokenizer_path",
                                  "--lora_rank", "--eval_max_new_tokens"])
def test_the_seeds_underscore_spellings_still_parse(flag):
    assert flag in _flags(_command(("train", "lora")))


def test_help_shows_the_dashed_name_once():
    text = CliRunner().invoke(cli, ["train", "pretrain", "--help"]).output
    assert "--max-steps" in text and "--max_steps" not in text


def test_bad_value_names_the_key():
    with pytest.raises(CodenasError, match=r"^pretrain\.max_steps must be at least 1, got -3$"):
        load_run_config("tiny", None, ["pretrain.max_steps=-3"])
    with pytest.raises(CodenasError, match=r"finetune\.eval_top_p must be at most 1, got 2"):
        load_run_config("tiny", None, ["finetune.eval_top_p=2"])
    with pytest.raises(CodenasError, match=r"pretrain\.min_lr \(0\.5\) must not exceed lr"):
        load_run_config("tiny", None, ["pretrain.min_lr=0.5"])



def test_old_key_names_still_work():
    config = load_run_config("tiny", None, ["finetune.lora_r=4", "finetune.targets=['qkv_proj']",
                                            "finetune.eval_problems=3"])
    ft = config["finetune"]
    assert (ft["lora_rank"], ft["lora_targets"], ft["eval_limit"], ft["eval_samples"]) == (4, ["qkv_proj"], 3, 1)
    assert "lora_r" not in ft
    assert load_run_config("tiny", None, ["finetune.eval_problems=0"])["finetune"]["eval_samples"] == 0


def test_settings_objects_validate_on_construction():
    with pytest.raises(CodenasError, match="max_steps must be at least 1, got 0"):
        S.TrainSettings(max_steps=0)
    with pytest.raises(CodenasError, match="ks must hold positive integers"):
        S.EvalSettings(ks=(1, 0))


def test_optional_integers_are_zero_in_toml():
    config = load_run_config("tiny")
    assert config["pretrain"]["lr_decay_steps"] == 0
    from codenas.run.config import settings_of

    assert settings_of(config, "pretrain")[S.TrainSettings].lr_decay_steps is None
    assert tomllib.loads(dumps_toml(config)) == config


def _pretrain_settings_seen(monkeypatch) -> dict:
    seen: dict = {}

    def fake_pretrain(settings, training, **kwargs):
        seen.update(settings=settings, training=training, resume=kwargs["resume"])
        return {"steps": 0, "tokens": 0, "final_val_loss": 0.0, "best_val_loss": None, "best_checkpoint": None}

    import codenas.train.pretrain

    monkeypatch.setattr(codenas.train.pretrain, "pretrain", fake_pretrain)
    return seen


def test_stage_command_reads_config_file_and_flags_override_it(tmp_path, monkeypatch):
    seen = _pretrain_settings_seen(monkeypatch)
    (tmp_path / "tok.json").write_text("{}")
    config = tmp_path / "run.toml"
    config.write_text('[pretrain]\narch = "tiny"\nmax_steps = 7\nlr = 0.01\nlr_decay_steps = 5\n'
                      '[eval]\nsamples = 3\n')
    args = ["train", "pretrain", "--tokenizer", str(tmp_path / "tok.json"), "--out", str(tmp_path / "o"),
            "--config", str(config)]
    result = CliRunner().invoke(cli, [*args, "--max-steps", "9"])
    assert result.exit_code == 0, result.output
    assert seen["settings"].arch == "tiny"
    assert (seen["training"].max_steps, seen["training"].lr, seen["training"].lr_decay_steps) == (9, 0.01, 5)
    assert seen["training"].batch_size == S.TrainSettings().batch_size  # neither file nor flag: the default

    # the resolved config of `codenas run` is itself a valid --config for every stage command
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(dumps_toml(load_run_config("tiny", None, ["pretrain.max_steps=11"])))
    result = CliRunner().invoke(cli, [*args[:-1], str(resolved)])
    assert result.exit_code == 0, result.output
    assert seen["training"].max_steps == 11 and seen["training"].dtype == "fp32"


def test_stage_command_config_errors_name_file_and_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[pretrain]\nmax_steps = -3\n")
    result = CliRunner().invoke(cli, ["train", "pretrain", "--tokenizer", str(config), "--out", str(tmp_path / "o"),
                                      "--config", str(config), "--arch", "tiny"])
    assert result.exit_code == 1
    assert f"{config}: pretrain.max_steps must be at least 1, got -3" in result.output


def test_required_field_is_named(tmp_path):
    (tmp_path / "tok.json").write_text("{}")
    result = CliRunner().invoke(cli, ["train", "pretrain", "--tokenizer", str(tmp_path / "tok.json"), "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 1 and "pretrain.arch must be given (--arch)" in result.output


def test_bad_override_fails_before_any_stage_folder_is_created(tmp_path):
    out = tmp_path / "run"
    for override in ("pretrain.max_steps=-3", "finetune.lora_rank=0", "eval.benchmarks=['nope']"):
        result = CliRunner().invoke(cli, ["run", "--preset", "tiny", "--out", str(out), override])
        assert result.exit_code == 1, result.output
        key = override.split("=")[0]
        assert key in result.output
        assert not out.exists()


def test_bad_arch_file_fails_before_any_stage_folder_is_created(tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text('{"n_layer": 2, "n_head": 3, "d_model": 64, "d_ff": 128, "context_length": 32, '
                    '"vocab_size": 512}')
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--preset", "tiny", "--out", str(out), f"pretrain.arch={arch}"])
    assert result.exit_code == 1 and str(arch) in result.output
    assert not out.exists()


def test_docs_list_every_key():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()
    assert S.markdown_reference() in doc, "regenerate the reference of docs/settings.md"
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in doc
        for key in keys:
            assert f"`{key}`" in doc, f"docs/settings.md does not describe {section}.{key}"


def test_corpus_settings_follow_the_shared_rules(tmp_path):
    assert S.CorpusSettings().max_files is None and S.CorpusSettings().workers is None  # unset is None, as elsewhere
    with pytest.raises(CodenasError, match=r"^max_files must be at least 1, got 0$"):
        S.CorpusSettings(max_files=0)
    with pytest.raises(CodenasError, match=r"^near_threshold must be less than 1, got 1.5$"):
        S.CorpusSettings(near_threshold=1.5)
    with pytest.raises(CodenasError, match="max_bytes must be larger than min_bytes"):
        S.CorpusSettings(min_bytes=100, max_bytes=50)
    config = tmp_path / "c.toml"
    config.write_text("[corpus]\nmin_alnum_fraction = 2\n")
    with pytest.raises(CodenasError, match=r"corpus.min_alnum_fraction must be at most 1, got 2"):
        S.read_config_file(config)
    config.write_text("[corpus]\nmax_files = 0\nworkers = 0\n")
    corpus = S.build_section("corpus", S.read_config_file(config)["corpus"])[S.Part(S.CorpusSettings)]
    assert (corpus.max_files, corpus.workers) == (None, None)
    for flag, value in (("--near-threshold", "1.5"), ("--max-files", "-1"), ("--tasks", "0"),
                        ("--min-alnum-fraction", "2")):  # ranges on the flags, before any work
        result = CliRunner().invoke(cli, ["corpus", "build", "stdlib", "--out", str(tmp_path / "o"), flag, value])
        assert result.exit_code == 2 and flag in result.output, result.output
        assert not (tmp_path / "o").exists()


def test_keys_that_do_nothing_left_the_schema_and_old_configs_still_read(tmp_path, capsys):
    for section, key in S.DROPPED:
        assert key not in SCHEMA[section]
    assert SCHEMA["tokenizer"] == ("vocab_size",) and "max_files" not in SCHEMA["pretrain"]
    old = tmp_path / "old.toml"
    old.write_text("[pretrain]\nmax_files = 300\nval_fraction = 0.02\nmax_steps = 7\n"
                   "[tokenizer]\nmax_files = 300\nval_fraction = 0.02\nvocab_size = 512\n")
    config = load_run_config("tiny", old)
    assert config["pretrain"]["max_steps"] == 7 and config["tokenizer"] == {"vocab_size": 512}
    assert "max_files" not in config["pretrain"] and "val_fraction" not in config["pretrain"]
    err = capsys.readouterr().err
    assert "pretrain.max_files is no longer used" in err and "tokenizer.val_fraction is no longer used" in err


def test_benchmark_choices_come_from_the_registry():
    from codenas.benchmarks import BENCHMARKS, HOLDOUTS, RUN_BENCHMARKS

    choices = {f.name: f.metadata.get("choices")
               for cls in (S.BenchmarkSettings, S.DataSettings) for f in dataclasses.fields(cls)}
    assert choices["benchmarks"] == RUN_BENCHMARKS == tuple(n for n, b in BENCHMARKS.items() if b.built)
    assert choices["holdout"] == HOLDOUTS
    assert S.BenchmarkSettings(benchmarks=("humaneval",)).benchmarks == ("humaneval",)
    with pytest.raises(CodenasError, match="must be one of mini, mbpp-test, humaneval, got 'humaneval\\+'"):
        S.BenchmarkSettings(benchmarks=("humaneval+",))
