#!/bin/bash
# Issue 15 item 4: is the simulated ranking of bench search what real searches give? The winner of the simulation
# (a), the paper's protocol (b) and Optuna NSGA-III + Ray's ASHA (c), each as 3 real searches (seeds 0-2) of 30
# trials through Ray on the real trainer and the built-in data, at a small budget (100M), every other option at a
# default search's (2 epochs of 1800 images, ASHA rungs at 1 and 2). About 45 minutes on two idle cores.
# Writes bench_curves.csv, bench_summary.csv, bench_hypervolume.png and bench_real.txt beside this file; the
# searches' folders go to a scratch folder (given as $1, default ./tinyray-bench-real).
# Run on 2026-12-07 04:53-05:38 UTC (session 13) on commit 00a6c05's code, idle machine: 45 minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
storage=${1:-tinyray-bench-real}
tinyray bench search --real --budget 100M --trials 30 --seeds 3 --methods a,b,c --storage "$storage" --out "$here" \
    | tee "$here/bench_real.txt"
# The simulator at the same settings (budget 100M, 2 epochs, 60 epochs of compute = 30 fully trained trials), 10 seeds,
# for the comparison (about a minute; outputs in simulated/):
tinyray bench search --budget 100M --max-epochs 2 --trials 30 --seeds 10 --methods a,b,c --processes 2 \
    --out "$here/simulated" | tee "$here/simulated/bench_search.txt"
