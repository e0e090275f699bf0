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


@pytest.fixture()
def inputs(tmp_path):
    """Small valid inputs, so that each command gets as far as its output folder."""
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": MINI_IDS[0], "completion": "    return True\n"}) + "\n")
    (tmp_path / "tok.json").write_text("{}")
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    return {"samples": str(samples), "checkpoint": str(checkpoint), "adapter": str(adapter),
            "tokenizer": str(tmp_path / "tok.json")}


def _commands(out: str, inputs: dict) -> dict[str, list[str]]:
    return {
        "data build": ["data", "build", "--out", out],
        "data download": ["data", "download", "--out", f"{out}/mbpp.jsonl"],
        "data mine": ["data", "mine", "stdlib", "--out", out],
        "eval samples": ["eval", "samples", inputs["samples"], "--problems", "mini", "--out", out, "--partial"],
        "eval model": ["eval", "model", "--checkpoint", inputs["checkpoint"], "--out", out],
        "tokenizer train": ["tokenizer", "train", "--out", f"{out}/tokenizer.json"],
        "train pretrain": ["train", "pretrain", "--arch", "x.json", "--tokenizer", inputs["tokenizer"], "--out", out],
        "train sft": ["train", "sft", "--init_checkpoint", inputs["checkpoint"], "--output_dir", out],
        "train lora": ["train", "lora", "--init_checkpoint", inputs["checkpoint"], "--output_dir", out],
        "train improve": ["train", "improve", "--init_checkpoint", inputs["checkpoint"], "--pool", inputs["samples"],
                          "--rounds", "1", "--out", out],
        "export": ["export", inputs["checkpoint"], "--hf", out],
        "lora merge": ["lora", "merge", inputs["adapter"], "--out", out],
        "run": ["run", "--out", out],
        "search": ["search", "--max-params", "1000", "--out", out],
    }


COMMANDS = list(_commands("", dict.fromkeys(["samples", "checkpoint", "adapter", "tokenizer"], "")))
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
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
