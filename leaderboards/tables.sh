#!/usr/bin/env bash
# Regenerates the tables of leaderboards/toy.md (everything below its '<!-- tables -->' line) and toy.csv
# (one row per record, every curve point) from the run directories given: the one of toy.sh, or the many
# of toy_parallel.sh.
#   bash leaderboards/tables.sh RUN_DIR...
# While a run goes on, `python leaderboards/complete_rows.py RUN_DIR COPY [--attacks A,B] [--seeds 0,1,2]` makes a
# copy of its database with only the methods whose cells of those attacks and seeds (default none,ft,lora x 0,1,2)
# are all finished; this script on the copies (one per block of attacks and seeds, their cells disjoint) shows whole
# rows: toy.md's status names the copies its tables were made from.
set -euo pipefail
here=$(dirname "$0")
relearnbench table "$@" --long --format csv > "$here/toy.csv"
{
  sed '/^<!-- tables -->$/q' "$here/toy.md"
  echo; echo "### Leaderboard (pre: the unlearned model; post: after the attack's last step)"
  relearnbench table "$@" --format md | sed 's/  (.*)\*\*$/**/'
  echo; echo "### Relearning curves (ASR % at each attack step)"
  relearnbench table "$@" --format md --stages all --metrics asr | sed 's/  (.*)\*\*$/**/'
  echo; echo "### Does each +meta beat its +retain control? (ASR % after 100 ft steps, +meta − +retain paired by seed)"
  echo; python "$here/paired.py" "$@" --attack ft --verdicts 100
  for attack in ft lora; do
    echo; echo "### Each +meta and its +retain control against the base method, paired by seed (ASR % under $attack)"
    echo; python "$here/paired.py" "$@" --attack $attack
  done
  echo; echo "### Before and under the held-out protocol (ASR % under ft; toy-shared-prompts.csv against this run)"
  echo; python "$here/protocols.py" "$@"
} > "$here/toy.md.new"
mv "$here/toy.md.new" "$here/toy.md"
