#!/usr/bin/env bash
# The GPU checks of issue 17 as one short script (about 10 min on one H200): where stage 1's
# time goes per model-prompt at Gemma-2-2b shapes, the design's workload at 2b shapes in
# every precision mode (with a profile of stage 2), 9b and 27b in bfloat16 (first
# experiment, 2 prompts, extrapolated).
# Usage: bash benchmarks/gpu_checks.sh [output dir]   (needs torch, transformers, scipy, h5py)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_checks_out}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

step() {  # step NAME SECONDS COMMAND...: runs one check, keeps going when it fails or times out
    local name=$1 limit=$2
    shift 2
    echo "== $name" | tee -a "$out/summary.txt"
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    echo "   exit $? after ${SECONDS}s in all" | tee -a "$out/summary.txt"
    grep -E '^(machine|\| [a-z0-9]|\|---|fastest)' "$out/$name.txt" | tee -a "$out/summary.txt"
}

step stage1_profile_2b 150 python benchmarks/cache_storage_benchmark.py --profile --layers 26 --vocab 256000 --prompts 4 --repeats 2
step workload_2b 300 python benchmarks/gpu_workload.py --size 2b --quick --profile
step workload_9b 150 python benchmarks/gpu_workload.py --size 9b --quick --modes bfloat16 --no-reference --experiments 1
step workload_27b 240 python benchmarks/gpu_workload.py --size 27b --quick --modes bfloat16 --no-reference --experiments 1
