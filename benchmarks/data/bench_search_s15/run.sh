#!/bin/bash
# Issue 15 item 3 with method (e), qNEHVI + MOASHA: tinyray bench search on the recorded landscape
# (tinyray/benchdata/landscape.csv), 10 seeds, all six methods, every other option at its default. Compute is
# simulated, so the result does not depend on the machine's speed or load. Each (method, seed) run is recorded in
# runs/ as it ends (tinyray bench search --out); a rerun reuses them, so this script resumes where it stopped.
# Recorded 2026-12-07 10:45-13:00 UTC over one session, stopped and restarted once (at 42 of 60 runs, onto the
# cheaper candidate count of 7e74400, which gives the same runs), at nice 19 beside the test suite.
# Writes bench_curves.csv, bench_summary.csv and bench_hypervolume.png beside this file, and the report into
# bench_search.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OMP_NUM_THREADS=1 tinyray bench search --seeds 10 --methods a,b,c,d,e,f --processes 2 --out "$here" | tee "$here/bench_search.txt"
