#!/bin/bash
# Session 16 (2026-12-07 14:54-14:57 UTC, commit 48356f9): what breeding NSGA-III generations further ahead costs
# the search, on the recorded landscape with 12 simulated workers and generations of 12 (the busy run's shape,
# benchmarks/data/scale_busy_s16): method (a) at --generations-ahead 2 and 4, seeds 0-9.
set -u
OUT=${OUT:-/tmp/ahead_s16}
for a in 2 4; do
  python -m tinyray bench search --methods a --seeds 10 --workers 12 --pop-size 12 --generations-ahead $a --processes 2 --out "$OUT/ahead$a"
done
