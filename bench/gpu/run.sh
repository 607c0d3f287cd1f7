#!/bin/sh
# The GPU benchmark from the repository root: bench/gpu/run.sh [--smoke] [bench_gpu.py options]
cd "$(dirname "$0")/../.." && PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" bench/gpu/bench_gpu.py "$@"
