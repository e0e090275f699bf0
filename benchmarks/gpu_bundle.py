"""Which wheels the GPU bundle carries: every runtime dependency of codenas, transitively, that the GPU image lacks.

The image's packages are listed in docs/gpu.md (the fenced block after the ``image-packages`` marker). The
dependency graph is read from the metadata of the distributions installed here (this checkout's environment, where
the project's dependencies are installed), with every environment marker evaluated for the *target* interpreter
(``--python-version``, CPython on x86_64 Linux), so no wheel has to be downloaded to learn what it needs:

    missing = closure(codenas' dependencies) - closure(the image's packages)

Each missing package is pinned to the version installed here (the version this checkout's tests ran with), and
``benchmarks/gpu_prepare.sh`` downloads those pins for the target Python and platform. A dependency the target
needs but this environment does not have (a marker true only on the target) is passed on unpinned, and its own
dependencies are not walked; the prepare step says so.

    python benchmarks/gpu_bundle.py missing --python-version 3.12     # name==version lines, then # notes
    python benchmarks/gpu_bundle.py image                             # the image's list, one requirement a line
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "gpu.md"
PYPROJECT = REPO / "pyproject.toml"
IMAGE_MARKER = "<!-- image-packages -->"


def image_packages(docs: Path = DOCS) -> list[Requirement]:
    """The GPU image's packages: the fenced block that follows the ``image-packages`` marker in docs/gpu.md."""
    text = docs.read_text(encoding="utf-8")
    at = text.find(IMAGE_MARKER)
    if at < 0:
        raise SystemExit(f"{docs}: no {IMAGE_MARKER} marker before the image's package list")
    block = re.search(r"```[^\n]*\n(.*?)```", text[at:], re.S)
    if not block:
        raise SystemExit(f"{docs}: no fenced block after {IMAGE_MARKER}")
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [Requirement(line) for line in lines if line]


def project_dependencies(pyproject: Path = PYPROJECT) -> list[Requirement]:
    """codenas' runtime dependencies, as pyproject.toml declares them."""
    with open(pyproject, "rb") as f:
        return [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]


def target_environment(python_version: str) -> dict[str, str]:
    """Marker variables of CPython ``python_version`` (``3.12`` or ``3.12.4``) on x86_64 Linux."""
    parts = python_version.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise SystemExit(f"--python-version: expected e.g. 3.12, got {python_version!r}")
    env = dict(default_environment())
    env.update(python_version=".".join(parts[:2]), python_full_version=".".join((parts + ["0"])[:3]),
               implementation_name="cpython", platform_python_implementation="CPython", os_name="posix",
               sys_platform="linux", platform_system="Linux", platform_machine="x86_64")
    return env


@dataclass
class Closure:
    """Distributions reached from some roots: name -> installed version, who needed each, what was not installed."""

    versions: dict[str, str] = field(default_factory=dict)
    needed_by: dict[str, str] = field(default_factory=dict)
    not_installed: dict[str, Requirement] = field(default_factory=dict)


def closure(roots: list[Requirement], env: dict[str, str], root_name: str = "codenas") -> Closure:
    """Every distribution ``roots`` need on the target ``env``, transitively, read from the installed metadata."""
    found = Closure()
    extras_seen: dict[str, set[str]] = {}
    queue = [(r, root_name) for r in roots if _applies(r, env, ())]
    while queue:
        req, parent = queue.pop(0)
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        if name in extras_seen and extras <= extras_seen[name]:
            continue
        new_extras = extras - extras_seen.get(name, set())
        first_visit = name not in extras_seen
        extras_seen.setdefault(name, set()).update(extras)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            found.not_installed.setdefault(name, req)
            found.needed_by.setdefault(name, parent)
            continue
        found.versions[name] = dist.version
        found.needed_by.setdefault(name, parent)
        for line in dist.requires or []:
            child = Requirement(line)
            if first_visit and _applies(child, env, ()) or new_extras and _applies(child, env, new_extras):
                queue.append((child, name))
    return found


def _applies(req: Requirement, env: dict[str, str], extras) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in (*extras, ""))


@dataclass
class Missing:
    """What the bundle must carry: pins for pip, who needed each package, notes on what could not be pinned."""

    pins: list[str]
    needed_by: dict[str, str]
    notes: list[str]


def missing(python_version: str, docs: Path = DOCS, pyproject: Path = PYPROJECT) -> Missing:
    """Every dependency of codenas on the target that the image lacks, pinned to the version installed here."""
    env = target_environment(python_version)
    need = closure(project_dependencies(pyproject), env)
    image = closure(image_packages(docs), env, root_name="image")
    have = set(image.versions) | set(image.not_installed)
    pins = [f"{name}=={need.versions[name]}" for name in sorted(set(need.versions) - have)]
    notes = []
    for name in sorted(set(need.not_installed) - have):
        pins.append(f"{name}{need.not_installed[name].specifier}")
        notes.append(f"{name}: needed on Python {python_version} (by {need.needed_by[name]}) but not installed here: "
                     "passed on unpinned, its own dependencies not walked")
    names = {canonicalize_name(re.split(r"[=<>!~ ]", pin, maxsplit=1)[0]) for pin in pins}
    return Missing(pins, {n: need.needed_by[n] for n in sorted(names)}, notes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("missing", help="name==version of every dependency the image lacks (for pip download)")
    m.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    m.add_argument("--docs", type=Path, default=DOCS, help="the file holding the image's package list")
    m.add_argument("--json", action="store_true", help="print {pins, needed_by, notes} as JSON")
    i = sub.add_parser("image", help="the image's package list, one requirement a line")
    i.add_argument("--docs", type=Path, default=DOCS)
    args = p.parse_args(argv)
    if args.command == "image":
        print("\n".join(str(r) for r in image_packages(args.docs)))
        return 0
    found = missing(args.python_version, args.docs)
    if args.json:
        print(json.dumps({"python_version": args.python_version, **asdict(found)}, indent=1))
    else:
        print("\n".join(found.pins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
