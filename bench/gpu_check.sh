#!/usr/bin/env bash
# The first-GPU-run checks (bench/gpu_check.py): at most 8 minutes, one BENCHMARKS.md section. On a machine with
# no CUDA GPU it says so in one line and exits 0. Usage: bash bench/gpu_check.sh [--budget-s SECONDS] [--no-record]
# PYTHON picks the interpreter (default: .venv/bin/python if there, else python3); when OUT is set (a lent
# device machine), BENCHMARKS.md and the log are copied there, so they come back.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False in $PYTHON): nothing to check"
  exit 0
fi
# The checks stop starting new work at --budget-s (450 s by default); the hard limit below is the 8 minutes.
timeout --kill-after=10 480 "$PYTHON" bench/gpu_check.py "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_check.log"
code=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then cp BENCHMARKS.md "$OUT/"; fi
exit "$code"
