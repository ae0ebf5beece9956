#!/bin/bash
# Session 16 (2026-12-07 14:40-14:45 UTC, idle 2-core machine, commit 48356f9): bench scale with trials of their
# recorded length (--replay-speed 1: 5-40 s an epoch) on 12 slots (3 raylets x 1 declared GPU x 4 trials), sqlite,
# interrupted at 50 and resumed. driver.out: the drivers' progress events (running trials after each completion).
# Run from the repository: bash benchmarks/data/scale_busy_s16/run.sh
set -u
OUT=${OUT:-/tmp/scale_busy_s16}
rm -rf "$OUT"
(cd /tmp && python -m tinyray bench scale --trials 100 --nodes 3 --gpus-per-node 1 --replay-speed 1 --tracking sqlite --out "$OUT")
# ahead4/ (14:49-14:53 UTC, the same commit): the same with NSGA-III's --generations-ahead 4 instead of 2
(cd /tmp && python -m tinyray bench scale --trials 100 --nodes 3 --gpus-per-node 1 --replay-speed 1 --tracking sqlite --generations-ahead 4 --out "$OUT-ahead4")
