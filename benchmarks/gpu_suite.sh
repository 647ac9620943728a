#!/usr/bin/env bash
# One prepared GPU run: benchmarks/gpu_suite.sh [--smoke] OUT_DIR
# Writes OUT_DIR/gpu_suite.json and OUT_DIR/gpu_suite.md (see benchmarks/gpu_suite.py for
# what is measured and the time budget: under 8 minutes on one H100/H200, nothing fetched).
# --smoke: tiny sizes, so that the same script is checked on CPUs by `make test`.
# Exit status: 0 when every measurement succeeded, 1 when one failed (still recorded), 2 on
# bad usage.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"

smoke=()
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=(--smoke)
    shift
fi
if [[ $# -ne 1 || "$1" == -* ]]; then
    echo "usage: $0 [--smoke] OUT_DIR" >&2
    exit 2
fi

export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$python" "$here/gpu_suite.py" "${smoke[@]}" "$1"
