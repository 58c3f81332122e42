#!/usr/bin/env bash
# Regenerates leaderboards/toy.md and toy.csv under the held-out protocol, most important cells first. Resumable:
# rerun the same command after an interruption and finished cells are skipped. One thread per process: on a
# shared 2-core machine torch's default threads spend their time waiting on each other.
#   bash leaderboards/toy.sh [RUN_DIR]
set -euo pipefail
run=${1:-runs/toy-leaderboard}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# the headline: ESD, ESD+meta and its retain-only control under ft, 3 seeds
relearnbench run --grid full --methods none,esd,esd+meta,esd+retain --attacks none,ft --seeds 0,1,2 --out "$run"
# every method and control under none, ft and lora, 3 seeds (the paired tables' +meta against +retain)
relearnbench run --grid full --attacks none,ft,lora --seeds 0,1,2 --out "$run"
# every method and control x every other attack x both erasable toy concepts, seed 0 (the rest of the `full` grid)
relearnbench run --grid full --seeds 0 --out "$run"
bash "$(dirname "$0")/tables.sh" "$run"
