#!/usr/bin/env bash
# Build the self-contained GPU bundle (docs/gpu.md), here, on a machine with the project installed and PyPI in reach:
#
#   bash benchmarks/gpu_prepare.sh --out gpu_bundle [--python-version 3.12] [--mbpp PATH]
#
# The bundle (at most 48 MiB) holds: wheels/ (the codenas wheel of this checkout, and a wheel for the target Python
# on x86_64 manylinux of every runtime dependency the GPU image lacks, as benchmarks/gpu_bundle.py derives them from
# pyproject.toml and the image's list in docs/gpu.md), data/mbpp.jsonl (from --mbpp or $CODENAS_MBPP; without one
# mbpp-test is skipped and bundle.json says so), configs/, gpu_seed.py and sampling_throughput.py, run.sh (a copy of
# benchmarks/gpu_run.sh) and bundle.json (what is in it and why). There,
# `bash gpu_bundle/run.sh --out OUT [--smoke] [section.key=value ...]` runs it offline.
#
# PYTHON: the interpreter of this checkout's environment (default python3); its pip downloads the wheels.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
max_mib=48

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
out="" pyver="" mbpp="${CODENAS_MBPP:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --python-version) pyver="$2"; shift 2 ;;
        --mbpp) mbpp="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$out" ]; then echo "error: --out DIR is required (see --help)" >&2; exit 2; fi
if [ -z "$pyver" ]; then pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"; fi
if [ -n "$mbpp" ] && [ ! -f "$mbpp" ]; then echo "error: --mbpp $mbpp: no such file" >&2; exit 2; fi
out="$(realpath -m "$out")"
# never replace a folder this script did not make
if [ -e "$out" ] && [ ! -f "$out/bundle.json" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
    echo "error: $out exists and is not a bundle (no bundle.json): refusing to replace it" >&2; exit 2
fi

# built aside, then swapped in: the bundle is complete or absent
mkdir -p "$(dirname "$out")"
stage="$(mktemp -d "$(dirname "$out")/.$(basename "$out").XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/wheels" "$stage/data"

echo "codenas wheel from $repo"
"$python" -m pip wheel --no-deps --no-build-isolation --quiet -w "$stage/wheels" "$repo"

echo "the dependencies the image lacks, for Python $pyver (benchmarks/gpu_bundle.py)"
"$python" "$here/gpu_bundle.py" missing --python-version "$pyver" --json > "$stage/missing.json"
"$python" -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))["pins"]))' "$stage/missing.json" \
    > "$stage/requirements.txt"
sed 's/^/  /' "$stage/requirements.txt"
# x86_64 manylinux up to glibc 2.28 (torch's own wheels need 2.28, so the image has at least that)
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 28); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
"$python" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp --python-version "$pyver" \
    "${platforms[@]}" -d "$stage/wheels" -r "$stage/requirements.txt"

chmod 755 "$stage"
cp "$here/gpu_seed.py" "$here/sampling_throughput.py" "$here/gpu_run.sh" "$stage/"
mv "$stage/gpu_run.sh" "$stage/run.sh"
cp -r "$repo/configs" "$stage/configs"
if [ -n "$mbpp" ]; then
    cp "$mbpp" "$stage/data/mbpp.jsonl"
    mbpp_note="data/mbpp.jsonl, from $mbpp"
else
    mbpp_note="no mbpp.jsonl (give --mbpp PATH or set CODENAS_MBPP): mbpp-test is skipped on the GPU machine"
    echo "note: $mbpp_note" >&2
fi

"$python" - "$stage" "$pyver" "$mbpp_note" "$max_mib" <<'EOF'
import json, sys
from pathlib import Path

stage, pyver, mbpp_note, max_mib = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
found = json.loads((stage / "missing.json").read_text())
(stage / "missing.json").unlink()
wheels = sorted(p.name for p in (stage / "wheels").glob("*.whl"))
size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
manifest = {"python_version": pyver, "platform": "x86_64 manylinux (glibc >= 2.17, <= 2.28)", "wheels": wheels,
            "dependencies": found["pins"], "needed_by": found["needed_by"], "notes": found["notes"],
            "mbpp": mbpp_note, "bytes": size}
(stage / "bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
print(f"{len(wheels)} wheels; bundle size {size / 2**20:.1f} MiB (limit {max_mib} MiB)")
for note in found["notes"]:
    print("note:", note)
if size > max_mib * 2**20:
    sys.exit(f"error: the bundle is {size / 2**20:.1f} MiB, over the {max_mib} MiB limit")
EOF
rm -f "$stage/requirements.txt"

if [ -e "$out" ]; then
    old="$(mktemp -d "$(dirname "$out")/.$(basename "$out").old.XXXXXX")"
    mv "$out" "$old/bundle"
    mv "$stage" "$out"
    rm -rf "$old"
else
    mv "$stage" "$out"
fi
echo "bundle: $out ($(du -sh "$out" | cut -f1))"
echo "run it there: bash $(basename "$out")/run.sh --out \$OUT   (docs/gpu.md)"
