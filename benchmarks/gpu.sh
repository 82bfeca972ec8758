#!/usr/bin/env bash
# GPU readiness (issue 21 item 5): on a machine with a CUDA GPU, run the GPU tests (tests/test_gpu.py, marked `gpu`,
# skipped without CUDA), then time a teacher epoch (32-true and bf16-mixed), a cached-KD epoch and, with more than one
# GPU, a DDP epoch on the synthetic HAR-scale set (64k windows), through benchmarks/gpu.py; writes
# benchmarks/results/gpu.md. Meant to finish in under 8 minutes on one H100-class GPU: the timings run under a
# 7-minute limit after the tests.
#
# Run on one H200 on 2026-12-04: 85 s in all (benchmarks/results/gpu.md). `benchmarks/gpu.sh --dry-run` runs the same Python entry on
# the CPU at tiny sizes (the DDP arm as 2 CPU processes) and leaves benchmarks/results untouched; tests/test_gpu.py
# runs that dry run too.
#
# Usage: benchmarks/gpu.sh [--dry-run]      (PYTHON=... to choose the interpreter; default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"

if [[ "${1:-}" == "--dry-run" ]]; then
    exec "$PY" benchmarks/gpu.py --dry-run
fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "benchmarks/gpu.sh: torch sees no CUDA device here; nothing to time (try --dry-run for the CPU path)" >&2
    exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

start=$(date +%s)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The GPU tests: a failure is reported in gpu.md, and the timings still run.
set +e
# (-o addopts=: the project's own -q on top of this -q would leave out the summary line read below)
timeout 60 "$PY" -m pytest -q -o addopts= -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$log"
summary="$(grep -E '(passed|failed|skipped|error)' "$log" | tail -n 1)"
set -e
echo "GPU tests: ${summary:-no summary line (see the output above)} ($(($(date +%s) - start)) s)"

timeout 420 "$PY" benchmarks/gpu.py --tests "${summary:-none}"
echo "benchmarks/gpu.sh: $(($(date +%s) - start)) s in all"
