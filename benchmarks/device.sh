#!/usr/bin/env bash
# Everything this project measures on a lent GPU machine, in one prepared run (device time is scarce):
# the toy leaderboard's cells in parallel processes (leaderboards/toy_parallel.sh), then the sd14-random
# figures (benchmarks/gpu.sh). Expects relearnbench and the packages the machine lacks installed from .whl/.
#   OUT=/some/dir bash benchmarks/device.sh [TOY_SECONDS] [SD_SECONDS]
set -uo pipefail
export PYTHONUNBUFFERED=1
toy_s=${1:-400}; sd_s=${2:-150}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
nproc >> "$OUT/device.txt"; date -u >> "$OUT/device.txt"
start=$(date +%s)
timeout "$toy_s" bash leaderboards/toy_parallel.sh cuda 15 /tmp/runs 2>&1 | tee "$OUT/toy.log"
pkill -TERM -f "relearnbench run" ; sleep 3; pkill -KILL -f "relearnbench run"  # cut at the budget; runs resume
echo "toy grid: $(( $(date +%s) - start )) s" | tee -a "$OUT/toy.log"
tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.pt' -C /tmp runs
ls -la "$OUT"
timeout "$sd_s" bash benchmarks/gpu.sh 2>&1 | tee "$OUT/sd14.log"
