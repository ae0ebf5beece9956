#!/bin/bash
# Session 18 (2026-12-07, idle 2-core machine; each run from a `git archive` of its commit, run from /tmp):
# where the driver's CPU goes as trials finish, and the trial files written in place (issue 20).
set -u
OUT=${OUT:-/tmp/scale_s18}
# acct_<commit>_300.jsonl + scale_<commit>_300.txt: 300 trials, server, no resume, with the CPU accounting of
# benchmarks/driver_accounting (a1c8a13 19:56-20:03 UTC before; 547c6cc 20:04-20:11 after, the loggers in place;
# 839df11 20:29-20:34, MO-ASHA's journal, first fronts and choice, and the last epoch with the run's end; the same
# with KEEP_CHECKPOINTS = 3 in tinyray/tune/runtime.py, 839df11_keep3, 20:34-20:39, not adopted):
ACCT_OUT="$OUT/acct_300.jsonl" PYTHONPATH=benchmarks/driver_accounting:. tinyray bench scale --trials 300 --nodes 3 \
    --tracking server --resume-at 0 --out "$OUT/300" > "$OUT/scale_300.txt"
python benchmarks/driver_accounting/show.py "$OUT/acct_300.jsonl" 50
# 500_ab87e60/ (20:08-20:27) and 500/ (fa3e9a6, 20:43-): the trial count, both backends, a resume at 250
tinyray bench scale --trials 500 --nodes 3 --resume-at 250 --out "$OUT/500" > "$OUT/500.txt"
