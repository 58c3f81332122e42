#!/usr/bin/env bash
# Regenerates leaderboards/toy.md and toy.csv on one machine. On 2 CPU cores this took 71 min with the ESD-x
# presets. With the ESD-u presets the ESD family's 60 cells took 2494 s, about 9 min more than we estimate
# they took before (benchmarks/README.md), so expect about 80 min. Resumable: rerun the same command after an
# interruption and finished cells are skipped.
#   bash leaderboards/toy.sh [RUN_DIR]
set -euo pipefail
run=${1:-runs/toy-leaderboard}
# every method and control x every attack x both erasable toy concepts, seed 0 (the `full` grid)
relearnbench run --grid full --seeds 0 --out "$run"
# seeds 1 and 2 for the plain-vs-meta comparison (ESD, its retain-only control, ESD+meta) under the finetune attack
relearnbench run --grid full --methods esd,esd+retain,esd+meta --attacks none,ft --seeds 1,2 --out "$run"
bash "$(dirname "$0")/tables.sh" "$run"
