#!/bin/bash
# Session 17 (2026-12-07, idle 2-core machine; each run from a `git archive` of its commit, run from /tmp):
# bench scale before and after Tune's snapshot fix (num_to_keep 1 -> 2, a restarted trial catches up from its folder).
set -u
OUT=${OUT:-/tmp/scale_s17}
# 500/ (16:54-17:12 UTC, commit f90f5f1): the trial count, both backends, a resume at 250
tinyray bench scale --trials 500 --nodes 3 --resume-at 250 --out "$OUT/500" > "$OUT/500.txt"
# 300_before/ (16:10, 1089912), 300_after/ (16:34, 02b8406), 300_keep3/ (17:27, f90f5f1 with KEEP_CHECKPOINTS = 3):
tinyray bench scale --trials 300 --nodes 3 --tracking server --resume-at 0 --out "$OUT/300" > "$OUT/300.txt"
# 100_before/ (16:47, 1089912), 100_after/ (16:50, f90f5f1), each with snapshots.txt (Tune's snapshots of the driver):
SNAPCOUNT_OUT="$OUT/snapshots.txt" PYTHONPATH=benchmarks/snapshot_count:. tinyray bench scale --trials 100 --nodes 3 --tracking server --resume-at 0 --out "$OUT/100" > "$OUT/100.txt"
