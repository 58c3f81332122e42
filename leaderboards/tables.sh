#!/usr/bin/env bash
# Writes leaderboards/toy.md and toy.csv from the run directories given (one from toy.sh, or the many of
# toy_parallel.sh).
set -euo pipefail
here=$(dirname "$0")
relearnbench table "$@" --format csv > "$here/toy.csv"
relearnbench table "$@" --format md > "$here/toy.body.md"
relearnbench table "$@" --format md --stages all --long > /dev/null  # fails loudly on a broken store
