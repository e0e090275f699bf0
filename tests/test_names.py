"""The names module: light enough for any module to import, and the one place a written file's name is spelled."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import codenas
from codenas import names

SRC = Path(codenas.__file__).parent
HEAVY = ("torch", "datatrove", "tokenizers", "numpy", "transformers")


def test_importing_the_names_module_loads_no_heavy_library():
    code = ("import json, sys; import codenas.names; "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_the_names_module_imports_only_the_standard_library():
    tree = ast.parse((SRC / "names.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_file_names_are_spelled_only_in_the_names_module():
    spelled = {value: name for name, value in vars(names).items()
               if name.isupper() and isinstance(value, str) and "." in value}
    assert "manifest.json" in spelled and "tokenizer.json" in spelled
    found = []
    for path in SRC.rglob("*.py"):
        if path.name in ("names.py", "_worker.py"):  # the sandbox worker runs alone, without codenas
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in spelled:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_run_layout_helpers():
    out = Path("runs/x")
    assert names.eval_folder(out, names.BASE_MODEL, "mini") == out / names.eval_stage(names.BASE_MODEL, "mini")
    assert names.corpus_folder(out).parent == out / names.CORPUS_STAGE
    assert names.trained_by(names.BASE_MODEL) == names.PRETRAIN_STAGE and names.trained_by("sft") == "sft"
