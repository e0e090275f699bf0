"""The CLI's shell: one-line errors for unusable output folders, locked output folders, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from codenas.cli import cli
from codenas.data.humaneval import MINI_IDS

from .test_io import HOLDER
from .train.finetune_fixtures import make_base, make_records, tiny_arch


@pytest.fixture()
def inputs(tmp_path):
    """Small valid inputs, so that each command gets as far as its output folder (every command checks its inputs
    before it creates or locks the output folder)."""
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": MINI_IDS[0], "completion": "    return True\n"}) + "\n")
    checkpoint = make_base(tmp_path)
    train_records, _ = make_records(tmp_path)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(tiny_arch().to_dict()))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    return {"samples": str(samples), "checkpoint": str(checkpoint), "adapter": str(adapter),
            "tokenizer": str(tmp_path / "tokenizer.json"), "arch": str(arch), "records": str(train_records)}


def _commands(out: str, inputs: dict) -> dict[str, list[str]]:
    return {
        "data build": ["data", "build", "--out", out],
        "data download": ["data", "download", "--out", f"{out}/mbpp.jsonl"],
        "data mine": ["data", "mine", "stdlib", "--out", out],
        "eval samples": ["eval", "samples", inputs["samples"], "--problems", "mini", "--out", out, "--partial"],
        "eval model": ["eval", "model", "--checkpoint", inputs["checkpoint"], "--out", out],
        "tokenizer train": ["tokenizer", "train", "--out", f"{out}/tokenizer.json"],
        "train pretrain": ["train", "pretrain", "--arch", inputs["arch"], "--tokenizer", inputs["tokenizer"], "--out",
                           out],
        "train sft": ["train", "sft", "--init_checkpoint", inputs["checkpoint"], "--data_path", inputs["records"],
                      "--output_dir", out],
        "train lora": ["train", "lora", "--init_checkpoint", inputs["checkpoint"], "--data_path", inputs["records"],
                       "--output_dir", out],
        "train improve": ["train", "improve", "--init_checkpoint", inputs["checkpoint"], "--pool", inputs["samples"],
                          "--rounds", "1", "--out", out],
        "export": ["export", inputs["checkpoint"], "--hf", out],
        "lora merge": ["lora", "merge", inputs["adapter"], "--out", out],
        "run": ["run", "--out", out],
        "search": ["search", "--max-params", "1000", "--out", out],
    }


COMMANDS = list(_commands("", dict.fromkeys(["samples", "checkpoint", "adapter", "tokenizer", "arch", "records"], "")))
LONG_COMMANDS = ["data build", "data mine", "eval samples", "eval model", "train pretrain", "train sft", "train lora",
                 "train improve", "run"]


@pytest.mark.parametrize("name", COMMANDS)
def test_an_output_under_a_file_is_a_one_line_error_before_any_work(name, inputs, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(cli, _commands(str(blocker / "out"), inputs)[name])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.strip().splitlines()[-1] == f"Error: {blocker}: cannot write here: it is a file, not a folder"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", LONG_COMMANDS)
def test_a_long_command_refuses_an_output_folder_another_process_writes(name, inputs, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        result = CliRunner().invoke(cli, _commands(str(out), inputs)[name])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1, result.output
    assert f"Error: {out}: in use by another codenas process (pid {holder.pid})" in result.output


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path):
    slow = "    import time\n    time.sleep(30)\n"
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": i, "completion": slow}) + "\n" for i in MINI_IDS[:3]))
    proc = subprocess.Popen([sys.executable, "-m", "codenas.cli", "eval", "samples", str(samples), "--problems",
                             "mini", "--out", str(tmp_path / "out"), "--workers", "1", "--partial"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: an ignored SIGINT (which a test process may have inherited) would
                            # be inherited across exec, and Python then never raises KeyboardInterrupt
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (tmp_path / "out" / "results.partial.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "Interrupted: run the same command again to continue where it stopped."


def test_ctrl_c_in_training_points_at_resume(monkeypatch, tmp_path):
    import codenas.train.pretrain

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(codenas.train.pretrain, "pretrain", interrupted)
    tokenizer = tmp_path / "tok.json"
    tokenizer.write_text("{}")
    result = CliRunner().invoke(cli, ["train", "pretrain", "--arch", "a.json", "--tokenizer", str(tokenizer),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 130
    assert "run the same command again with --resume" in result.output


HEAVY = ("torch", "datatrove", "tokenizers", "numpy")
HELP_SCRIPT = """
import json, sys
from codenas.cli import cli
for args in (["--help"], ["corpus", "build", "--help"], ["train", "pretrain", "--help"], ["run", "--help"]):
    try:
        cli(args, prog_name="codenas")
    except SystemExit as e:
        assert e.code == 0, (args, e.code)
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[1])))
print(json.dumps(heavy), file=sys.stderr)
"""


def test_help_imports_neither_torch_nor_datatrove():
    proc = subprocess.run([sys.executable, "-c", HELP_SCRIPT, json.dumps(HEAVY)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: codenas" in proc.stdout and "--min-alnum-fraction" in proc.stdout
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []


def _bad_inputs(tmp_path, inputs: dict) -> dict[str, list[str]]:
    """Command lines whose inputs are each wrong in one way; ``{out}`` stands for the output folder."""
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    arch = json.loads((tmp_path / "arch.json").read_text())
    odd_arch = tmp_path / "odd_arch.json"
    odd_arch.write_text(json.dumps({**arch, "n_head": 3}))
    huge_arch = tmp_path / "huge_arch.json"
    huge_arch.write_text(json.dumps({**arch, "d_model": 10**9, "d_ff": 4 * 10**9}))
    bad_samples = tmp_path / "bad_samples.jsonl"
    bad_samples.write_text(json.dumps({"task_id": MINI_IDS[0], "completion": "    return 1\n"}) + "\n{torn\n")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[pretrain]\nmax_steps = -1\n")
    ckpt, tok, records = inputs["checkpoint"], inputs["tokenizer"], inputs["records"]
    pretrain = ["train", "pretrain", "--tokenizer", tok, "--out", "{out}", "--arch"]
    finetune = ["--output_dir", "{out}", "--init_checkpoint"]
    search = ["search", "--max-params", "10000000", "--out", "{out}"]
    return {
        "data build: malformed MBPP file": ["data", "build", "--mbpp", str(bad_json), "--out", "{out}"],
        "eval samples: malformed samples file": ["eval", "samples", str(bad_samples), "--problems", "mini", "--out",
                                                 "{out}", "--partial"],
        "eval model: folder without a checkpoint": ["eval", "model", "--checkpoint", str(empty), "--out", "{out}"],
        "eval model: no such checkpoint": ["eval", "model", "--checkpoint", str(tmp_path / "none"), "--out",
                                           "{out}"],
        "train pretrain: malformed arch file": [*pretrain, str(bad_json)],
        "train pretrain: invalid arch": [*pretrain, str(odd_arch)],
        "train pretrain: arch far too large": [*pretrain, str(huge_arch)],
        "train pretrain: not a tokenizer": ["train", "pretrain", "--tokenizer", str(bad_json), "--out", "{out}",
                                            "--arch", str(tmp_path / "arch.json")],
        "train pretrain: no such corpus": [*pretrain, str(tmp_path / "arch.json"), "--corpus", str(tmp_path / "no")],
        "train pretrain: corpus without .py files": [*pretrain, str(tmp_path / "arch.json"), "--corpus", str(empty)],
        "train sft: folder without a checkpoint": ["train", "sft", *finetune, str(empty), "--data_path", records],
        "train sft: malformed records": ["train", "sft", *finetune, ckpt, "--data_path", str(bad_samples)],
        "train sft: arch not the checkpoint's": ["train", "sft", *finetune, ckpt, "--data_path", records,
                                                 "--arch_json", str(odd_arch)],
        "train lora: no such base": ["train", "lora", *finetune, str(tmp_path / "none"), "--data_path", records],
        "train lora: malformed records": ["train", "lora", *finetune, ckpt, "--data_path", str(bad_samples)],
        "search: not a tokenizer": [*search, "--tokenizer", str(bad_json)],
        "search: corpus without .py files": [*search, "--corpus", str(empty)],
        "search: a budget no shape fits": [*search[:2], "10", *search[3:], "--tokenizer", tok],
        "search: not a storage URL": [*search, "--tokenizer", tok, "--storage", "not a url"],
        "run: invalid config file": ["run", "--config", str(bad_toml), "--out", "{out}"],
    }


@pytest.fixture()
def bad_inputs(inputs, tmp_path):
    return _bad_inputs(tmp_path, inputs)


EXPECTED = {  # what each case's one-line error says
    "data build: malformed MBPP file": "bad.json:1: malformed JSON",
    "eval samples: malformed samples file": "bad_samples.jsonl:2: malformed JSON",
    "eval model: folder without a checkpoint": "empty_dir/codenas.json: file not found",
    "eval model: no such checkpoint": "none: checkpoint not found",
    "train pretrain: malformed arch file": "bad.json:1: invalid JSON",
    "train pretrain: invalid arch": "odd_arch.json: arch field 'n_kv_head' (2) must divide 'n_head' (3)",
    "train pretrain: arch far too large": "huge_arch.json: this arch needs at least ",
    "train pretrain: not a tokenizer": "bad.json: not a tokenizer file",
    "train pretrain: no such corpus": "no: corpus source not found",
    "train pretrain: corpus without .py files": "empty_dir: corpus source holds no readable .py",
    "train sft: folder without a checkpoint": "empty_dir/codenas.json: file not found",
    "train sft: malformed records": "bad_samples.jsonl:1: record is missing field(s)",
    "train sft: arch not the checkpoint's": "odd_arch.json: arch field 'n_kv_head'",
    "train lora: no such base": "none: checkpoint not found",
    "train lora: malformed records": "bad_samples.jsonl:1: record is missing field(s)",
    "search: not a tokenizer": "bad.json: not a tokenizer file",
    "search: corpus without .py files": "empty_dir: corpus source holds no readable .py",
    "search: a budget no shape fits": "no shape of the search space fits max_params 10:",
    "search: not a storage URL": "not a database URL",
    "run: invalid config file": "bad.toml: pretrain.max_steps must be at least 1",
}


def test_invalid_input_creates_no_output_folder(bad_inputs, tmp_path):
    """Every command reads and checks its inputs before it creates (or locks) its output folder."""
    wrong = []
    for i, (case, args) in enumerate(bad_inputs.items()):
        out = tmp_path / f"out{i}"
        result = CliRunner().invoke(cli, [a.replace("{out}", str(out)) for a in args])
        last = (result.output.strip().splitlines() or [""])[-1]
        if result.exit_code != 1 or not isinstance(result.exception, SystemExit) or not last.startswith("Error: ") \
                or EXPECTED[case] not in last:
            wrong.append(f"{case}: exit {result.exit_code}, {last or result.exception!r}")
        elif out.exists():
            wrong.append(f"{case}: created the output folder ({last})")
    assert not wrong, "\n".join(wrong)
