#!/usr/bin/env bash
# The trade-off of each base method on the toy concepts (issue 19): pre-attack ASR on the held-out eval prompts
# against the benign related / unrelated prompts, over one setting swept around the preset (marked * in
# tradeoff.md). Shown instead of a retuned preset where a method misses the targets (ASR <= 15 %, benign >= 85 %);
# the presets were not retuned on these figures (they are eval figures). Seed 0, no attack. One run directory per
# setting under ROOT (a setting changes every cell); resumable; two single-thread runs at a time.
#   bash leaderboards/tradeoff.sh [ROOT]     then: python leaderboards/tradeoff.py ROOT > leaderboards/tradeoff.md
set -uo pipefail
root=${1:-runs/tradeoff}
mkdir -p "$root"
{
  for v in 1e-4 2e-4 4e-4; do echo "esd lr $v"; done        # ESD's strength: its learning rate (preset 2e-4)
  for v in 0.25 0.5 1.0; do echo "salun alpha $v"; done     # SalUn's retain weight (preset 0.5)
  for v in 0.1 0.3 1.0 3.0; do echo "uce preserve_scale $v"; done  # UCE's benign preservation (preset 1.0)
  for v in 1.0 10.0; do echo "uce lamb $v"; done            # UCE's pull towards the original weights (preset 0.1)
} | OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 xargs -P 2 -L 1 bash -c '
  relearnbench run --methods "$0" --concepts triangle,striped --attacks none --metrics asr,related --seeds 0 \
    --set "$0.$1=$2" --jobs 1 --quiet --out '"$root"'/"$0.$1=$2" > '"$root"'/"$0.$1=$2.log" 2>&1
  echo "$0.$1=$2: exit $?"'
