"""MBPP: find the local copy, download it, read and validate it, and convert each task into a record.

MBPP gives a task text, reference code and asserts. The converter splits the code with ``ast``: the function
the asserts call is the tested function; everything else (imports first, then helpers, classes and constants
in their original order) goes into the prompt, followed by the tested function's signature and a docstring with
the task text and the first assert as an example; the tested function's body is the solution. Code is
normalised through ``ast.unparse`` (4-space indentation, comments dropped). See docs/data-format.md.
"""

from __future__ import annotations

import ast
import os
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path

from codenas import paths
from codenas.data.metrics import cyclomatic_complexity, solution_lines
from codenas.io import CodenasError, atomic_write_bytes, check_writable, read_jsonl, sha256_bytes, sha256_file
from codenas.names import MBPP_FILE
from codenas.progress import say
from codenas.records import Record

MBPP_URL = "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl"
MBPP_SHA256 = "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f"
_FIELDS = {"task_id": int, "text": str, "code": str, "test_list": list, "test_setup_code": str,
           "challenge_test_list": list}


OFFLINE_HINT = ("Offline, copy mbpp.jsonl from a machine that has it and pass it with --mbpp PATH or "
                "CODENAS_MBPP=PATH (or `codenas data download --url` a mirror); without MBPP every stage runs "
                "on HumanEval alone")


class UnconvertibleTask(ValueError):
    """An MBPP task whose code cannot be split into prompt and solution."""


def downloaded_mbpp_path() -> Path:
    return paths.cache_dir() / "mbpp" / MBPP_FILE


def resolve_mbpp_path(explicit: Path | None) -> Path | None:
    """The MBPP file to use: ``explicit``, else ``$CODENAS_MBPP``, else the downloaded copy; None if there is none.

    A path that is named (flag or variable) but missing is an error rather than a silent fallback.
    """
    for given, origin in ((explicit, "--mbpp"), (os.environ.get("CODENAS_MBPP"), "$CODENAS_MBPP")):
        if given:
            if not Path(given).is_file():
                raise CodenasError(f"MBPP file given by {origin} does not exist", given)
            return Path(given)
    cached = downloaded_mbpp_path()
    return cached if cached.is_file() else None


def download_mbpp(out: Path | None = None, url: str = MBPP_URL) -> Path:
    """Fetch ``mbpp.jsonl`` (default: into the cache), check its sha256, write it atomically; returns the path.

    A file already there with the right checksum is kept. A checksum mismatch writes nothing.
    """
    out = Path(out) if out is not None else downloaded_mbpp_path()
    return fetch_verified(url, out, MBPP_SHA256, name="MBPP", hint=OFFLINE_HINT, timeout=120)


def fetch_verified(url: str, out: Path, sha256: str, *, name: str, hint: str, timeout: float) -> Path:
    """Download ``url`` to ``out`` if ``out`` does not already hold the file of checksum ``sha256``; the download
    is checked against it and written atomically, so a mismatch or a failure writes nothing. ``hint`` (what to do
    offline) ends every error."""
    check_writable(out.parent)
    if out.is_file() and sha256_file(out) == sha256:
        say(f"{name} already present at {out}")
        return out
    say(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except OSError as e:
        raise CodenasError(f"cannot download {name} from {url}: {e}. {hint}") from None
    digest = sha256_bytes(data)
    if digest != sha256:
        raise CodenasError(f"downloaded {name} has sha256 {digest}, expected {sha256}; nothing written. {hint}", url)
    atomic_write_bytes(out, data)
    return out


def load_mbpp(path: Path) -> list[dict]:
    """Read and validate ``mbpp.jsonl`` rows; a missing or mistyped field is an error at file:line."""
    rows, seen = [], set()
    for line, row in read_jsonl(path):
        for name, kind in _FIELDS.items():
            if not isinstance(row.get(name), kind):
                raise CodenasError(f"MBPP row needs field {name!r} of type {kind.__name__}", path, line)
        if row["task_id"] in seen:
            raise CodenasError(f"duplicate task_id {row['task_id']}", path, line)
        seen.add(row["task_id"])
        rows.append(row)
    if sha256_file(path) != MBPP_SHA256:
        say(f"note: {path} is not the canonical MBPP release (sha256 differs); using it as given")
    return rows


def mbpp_split(task_id: int) -> str:
    """The upstream split convention: 1-10 prompt, 11-510 test, 511-600 validation, 601+ train."""
    if task_id <= 10:
        return "prompt"
    if task_id <= 510:
        return "test"
    return "validation" if task_id <= 600 else "train"


def _normalise(code: str) -> str:
    return code.replace("\r\n", "\n").replace("\r", "\n")


def _tested_name(test_list: list[str], defined: set[str]) -> str:
    """The first function (breadth-first, so the outermost) that the first testing assert calls."""
    for test in test_list:
        try:
            tree = ast.parse(_normalise(test).strip())
        except SyntaxError as e:
            raise UnconvertibleTask(f"assert does not parse: {e.msg}") from None
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
                return node.func.id
    raise UnconvertibleTask("the asserts call no top-level function of the code")


def _example(test: str) -> list[str]:
    """A doctest line pair for ``assert call == literal``; otherwise the assert itself as a doctest line."""
    stmt = ast.parse(_normalise(test).strip()).body[0]
    if isinstance(stmt, ast.Assert):
        cmp = stmt.test
        if isinstance(cmp, ast.Compare) and len(cmp.ops) == 1 and isinstance(cmp.ops[0], ast.Eq):
            try:
                ast.literal_eval(cmp.comparators[0])
                return [f">>> {ast.unparse(cmp.left)}", ast.unparse(cmp.comparators[0])]
            except ValueError:
                pass
    return [f">>> {ast.unparse(stmt)}"]


def _docstring(text: str, example: list[str]) -> str:
    lines = [line.strip() for line in text.strip().splitlines()] + [""] + example
    escaped = [line.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') for line in lines]
    body = "\n".join(f"    {line}" if line else "" for line in escaped[1:])
    return f'    """{escaped[0]}\n{body}\n    """\n'


def _split_function(func: ast.FunctionDef) -> tuple[str, str]:
    """(signature lines, body text) of a function, both via ``ast.unparse``; an existing docstring is dropped."""
    body = list(func.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        raise UnconvertibleTask(f"function {func.name!r} has an empty body")
    header = ast.unparse(ast.FunctionDef(**{**func.__dict__, "body": [ast.Pass()]})).splitlines()[:-1]
    full = ast.unparse(ast.FunctionDef(**{**func.__dict__, "body": body})).splitlines()
    return "\n".join(header) + "\n", "\n".join(full[len(header):]) + "\n"


def _join_statements(stmts: Sequence[ast.stmt]) -> str:
    """Top-level statements as source; definitions are separated by a blank line."""
    parts = []
    for i, stmt in enumerate(stmts):
        is_def = isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        if i and (is_def or isinstance(stmts[i - 1], ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)):
            parts.append("\n")
        parts.append(ast.unparse(stmt) + "\n")
    return "".join(parts)


def mbpp_record(row: dict) -> Record:
    """Convert one MBPP row; raises ``UnconvertibleTask`` when the code cannot be split."""
    code = _normalise(row["code"])
    try:
        with warnings.catch_warnings():  # MBPP code has invalid escapes like "\." that unparse writes properly
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse(code)
    except SyntaxError as e:
        raise UnconvertibleTask(f"code does not parse: {e.msg}") from None
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    tested = _tested_name(row["test_list"], set(functions))
    func = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == tested][-1]
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    others = [n for n in tree.body if n is not func and not isinstance(n, ast.Import | ast.ImportFrom)]
    signature, solution = _split_function(func)
    prefix = _join_statements(imports) + ("\n" if imports and others else "") + _join_statements(others)
    prompt = (prefix + "\n" if prefix else "") + signature + _docstring(row["text"], _example(row["test_list"][0]))
    setup = "\n".join(line.rstrip() for line in _normalise(row["test_setup_code"]).strip().splitlines())
    asserts = "\n".join(_normalise(t).strip() for t in row["test_list"])
    meta = {
        "task_id": row["task_id"],
        "split": mbpp_split(row["task_id"]),
        "text": row["text"],
        "solution_lines": solution_lines(solution),
        "complexity": cyclomatic_complexity(prompt + solution, tested),
    }
    if row["challenge_test_list"]:
        meta["challenge_tests"] = [_normalise(t).strip() for t in row["challenge_test_list"]]
    return Record(id=f"mbpp_{row['task_id']}", source="mbpp", prompt=prompt, solution=solution,
                  tests=(setup + "\n" if setup else "") + asserts, entry_point=tested, meta=meta)
