#!/bin/bash
# Issue 15 item 4: is the simulated ranking of bench search what real searches give? The winner of the simulation
# (a), the paper's protocol (b) and Optuna NSGA-III + Ray's ASHA (c), each as 3 real searches (seeds 0-2) of 30
# trials through Ray on the real trainer and the built-in data, at a small budget (100M), every other option at a
# default search's (2 epochs of 1800 images, ASHA rungs at 1 and 2). About 30 minutes on two idle cores.
# Writes bench_curves.csv, bench_summary.csv, bench_hypervolume.png and bench_real.txt beside this file; the
# searches' folders go to a scratch folder (given as $1, default ./tinyray-bench-real).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
storage=${1:-tinyray-bench-real}
tinyray bench search --real --budget 100M --trials 30 --seeds 3 --methods a,b,c --storage "$storage" --out "$here" \
    | tee "$here/bench_real.txt"
