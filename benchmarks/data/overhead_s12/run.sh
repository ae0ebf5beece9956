#!/bin/bash
# Issue 15 item 5: tinyray bench overhead on the default search (200M, 30 trials), seeds 0-2, one after the other on
# an idle 2-core machine (about 6 minutes each). Each run's overhead.json is copied here as overhead_seedS.json; the
# searches' folders stay in the scratch folder given as $1 (default ./overhead-bench).
# before_66a747c_seed0.json is the same command on the code before session 12's changes (generations ahead 0, the
# built-in images resized as floats, Ray stopped after the finish); its CPU split counted the lifetime CPU of
# processes older than the search as "other" (fixed since), its timing is unaffected.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
scratch=${1:-overhead-bench}
for s in 0 1 2; do
    tinyray bench overhead --seed "$s" --out "$scratch/seed$s" | tee "$here/overhead_seed$s.txt"
    cp "$scratch/seed$s/overhead.json" "$here/overhead_seed$s.json"
done
