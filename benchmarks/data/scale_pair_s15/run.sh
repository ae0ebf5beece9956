#!/bin/bash
# Session 15 (2026-12-07 10:25-10:36 UTC, idle 2-core machine): tinyray bench scale before (5cb635d: the landscape
# replay, MLflow's rollback journal) and after (9237734: the sqlite write-ahead log), interleaved, two rounds.
# Run from the repository: bash benchmarks/data/scale_pair_s15/run.sh (results into $WORK/scale_pair).
set -u
REPO=$(git rev-parse --show-toplevel)
WORK=${WORK:-/tmp/scale_pair_s15}
PYTHON=${PYTHON:-python}
rm -rf "$WORK"/tb "$WORK"/ta; mkdir -p "$WORK"/tb "$WORK"/ta
(cd "$REPO" && git archive 5cb635d | tar -x -C "$WORK"/tb && git archive 9237734 | tar -x -C "$WORK"/ta)
out="$WORK"/scale_pair; mkdir -p "$out"
cd /tmp
for round in 1 2; do
  for which in tb ta; do
    rm -rf /tmp/sc_$which
    PYTHONPATH="$WORK"/$which $PYTHON -m tinyray bench scale --trials 100 --nodes 3 --tracking sqlite --out /tmp/sc_$which > "$out"/${which}_$round.txt 2>&1
    echo "rc=$?" >> "$out"/${which}_$round.txt
    cp /tmp/sc_$which/scale.json "$out"/${which}_$round.json 2>/dev/null
  done
done
