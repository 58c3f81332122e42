#!/usr/bin/env bash
# The newcomer's first command, timed from a fresh run directory, and where its time went (issue 18):
#   benchmarks/headline.sh [EXTRA RUN FLAGS ...]     e.g. benchmarks/headline.sh --jobs 1
# prints the wall time, the per-stage breakdown from the run's records (benchmarks/stages.py) and the
# machine's load, which inflates every figure when other work shares the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
RB=${RELEARNBENCH:-relearnbench}
PY=${PYTHON:-python}
out=$(mktemp -d "${TMPDIR:-/tmp}/rb-headline-XXXXXX")
echo "$(date -u +%FT%TZ) $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s.%N)
$RB run --methods esd,esd+meta --attacks ft --quiet --out "$out/run" "$@" 2> "$out/stderr" > "$out/stdout"
wall=$(echo "$(date +%s.%N) - $start" | bc)
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$out/stderr"
jobs=$(sed -n 's/^\([0-9]*\) worker processes.*/\1/p' "$out/stderr")
$PY benchmarks/stages.py "$out/run" --wall "$wall" --jobs "${jobs:-1}"
echo "run directory: $out/run"
