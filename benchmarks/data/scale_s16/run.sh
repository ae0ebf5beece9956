#!/bin/bash
# Session 16 (2026-12-07, idle 2-core machine): tinyray bench scale, both MLflow backends, 100 replayed trials on 3
# raylets (48 slots), interrupted at 50 and resumed; from a git archive of the commit.
#   scale.*            529c499 (the server without MLflow's job runner, the server's CPU counted), 14:01-14:05 UTC
#   scale_77a536b.*    77a536b (before the job runner was turned off; the server's CPU not counted), 13:49-13:54 UTC
# Run from the repository: bash benchmarks/data/scale_s16/run.sh [COMMIT]
set -u
REPO=$(git rev-parse --show-toplevel)
COMMIT=${1:-529c499}
WORK=${WORK:-/tmp/scale_s16}
PYTHON=${PYTHON:-python}
rm -rf "$WORK" && mkdir -p "$WORK/tree" && (cd "$REPO" && git archive $COMMIT | tar -x -C "$WORK/tree")
(cd /tmp && PYTHONPATH="$WORK/tree" $PYTHON -m tinyray bench scale --trials 100 --nodes 3 --tracking sqlite,server --out "$WORK/out" > "$WORK/scale.txt" 2>&1)
cp "$WORK/out/scale.json" "$WORK/out/scale.png" "$WORK/"
