#!/bin/bash
# Issue 15 item 3, rerun on 2026-12-07 after the default became one NSGA-III generation bred ahead
# (tinyray search --generations-ahead 1; methods (a) and (d) follow it): tinyray bench search on the recorded
# landscape (tinyray/benchdata/landscape.csv), 10 seeds, every other option at its default. The result does not
# depend on the machine's speed or load (compute is simulated). Writes bench_curves.csv, bench_summary.csv and
# bench_hypervolume.png beside this file, and the printed report into bench_search.txt.
#
# Method (e), qNEHVI + MOASHA, is not in it: on this landscape one seed of it takes about 10 minutes of one core
# (about 300 asks, each a GP fit and an acquisition), so 10 seeds need about 100 core-minutes. Its run, for a
# machine with the time:
#   tinyray bench search --seeds 10 --methods a,b,c,d,e,f --processes 2 --out DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tinyray bench search --seeds 10 --methods a,b,c,d,f --processes 2 --out "$here" | tee "$here/bench_search.txt"
