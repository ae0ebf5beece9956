#!/bin/bash
# Issue 15 item 3: the six methods of tinyray bench search on the recorded landscape (tinyray/benchdata/landscape.csv),
# 10 seeds, every other option at its default. The result does not depend on the machine's speed or load (compute
# is simulated). Writes bench_curves.csv, bench_summary.csv and bench_hypervolume.png beside this file, and the
# printed report (the surrogate's held-out error, the summary, the wins) into bench_search.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tinyray bench search --seeds 10 --methods a,b,c,d,e,f --processes 2 --out "$here" | tee "$here/bench_search.txt"
