#!/bin/bash
# Session 16 (2026-12-07 14:05 UTC, idle 2-core machine, commit 529c499): a py-spy profile (speedscope, 50 Hz) of the
# driver of `tinyray bench scale --trials 100 --nodes 3 --tracking server --resume-at 0`, attached as soon as the
# driver started. Analysed by benchmarks/profile_windows.py (the trial phase's samples in thirds of time, by kind).
set -u
OUT=${OUT:-/tmp/scale_profile_s16}
rm -rf "$OUT"; mkdir -p "$OUT"
(cd /tmp && python -m tinyray bench scale --trials 100 --nodes 3 --tracking server --resume-at 0 --out "$OUT" > "$OUT/bench.txt" 2>&1) &
bench=$!
until pid=$(pgrep -f "tinyray search --name scale100" | head -1) && [ -n "$pid" ]; do sleep 0.05; done
py-spy record -p "$pid" -r 50 -f speedscope -o "$OUT/driver.speedscope.json" --nonblocking
wait $bench
python benchmarks/profile_windows.py "$OUT/driver.speedscope.json"
