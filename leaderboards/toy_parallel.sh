#!/usr/bin/env bash
# The cells of toy.sh split into independent runs, JOBS at a time, on one device (a GPU, or a many-core
# CPU with DEVICE=cpu). Each job writes its own run directory under ROOT; `relearnbench table` reads them all.
#   bash leaderboards/toy_parallel.sh DEVICE JOBS ROOT
set -uo pipefail
device=${1:-cuda}; jobs=${2:-8}; root=${3:-runs/toy-parallel}
mkdir -p "$root"
threads=$(( $(nproc) / jobs )); threads=$(( threads > 0 ? threads : 1 ))
{
  for m in esd+meta salun+meta uce+meta esd salun uce esd+retain salun+retain uce+retain none; do
    echo "$m 0 none,ft,ft_clean,ft_adaptive,lora,unlearndiffatk"
  done
  for s in 1 2; do for m in esd+meta salun+meta uce+meta esd salun uce esd+retain salun+retain uce+retain none; do echo "$m $s none,ft,lora"; done; done
} | OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads xargs -P "$jobs" -L 1 bash -c '
  relearnbench run --grid full --methods "$0" --seeds "$1" --attacks "$2" --device '"$device"' --quiet \
    --out '"$root"'/"${0//+/_}-$1" > '"$root"'/"${0//+/_}-$1.log" 2>&1; echo "$0 seed $1: exit $?"'
