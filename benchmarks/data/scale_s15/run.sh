#!/bin/bash
# Session 15 (2026-12-07, idle 2-core machine): tinyray bench scale on d38c878 (the README's previous numbers, the
# corner-grid replay; 11:29-11:32 UTC, scale_old.*) and on 8aac4a5 (11:45-11:48 UTC, scale_head.*), each from a
# git archive of the commit. Run from the repository: bash benchmarks/data/scale_s15/run.sh
set -u
REPO=$(git rev-parse --show-toplevel)
WORK=${WORK:-/tmp/scale_s15}
PYTHON=${PYTHON:-python}
for which in old head; do
  commit=d38c878; [ $which = head ] && commit=8aac4a5
  rm -rf "$WORK/$which" && mkdir -p "$WORK/$which" && (cd "$REPO" && git archive $commit | tar -x -C "$WORK/$which")
  rm -rf /tmp/sc_$which
  (cd /tmp && PYTHONPATH="$WORK/$which" $PYTHON -m tinyray bench scale --trials 100 --nodes 3 --tracking sqlite --out /tmp/sc_$which > "$WORK/scale_$which.txt" 2>&1)
  cp /tmp/sc_$which/scale.json "$WORK/scale_$which.json"
done
