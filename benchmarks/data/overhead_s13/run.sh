#!/bin/bash
# Issue 15 item 5, session 13: tinyray bench overhead on the default search (200M, 30 trials), seeds 0-2, one after
# the other on an idle 2-core machine (about 6 minutes each), after the inputs were made to load beside Ray's start
# and the formula to fit beside the front's files. start_ba06fc3_seedS.* are the same runs on ba06fc3 (the start-up
# change alone).
# Each run's overhead.json is copied here as overhead_seedS.json; the searches' folders stay in the scratch folder
# given as $1 (default ./overhead-bench). Session 12's runs of the code before are in ../overhead_s12/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
scratch=${1:-overhead-bench}
for s in 0 1 2; do
    tinyray bench overhead --seed "$s" --out "$scratch/seed$s" | tee "$here/overhead_seed$s.txt"
    cp "$scratch/seed$s/overhead.json" "$here/overhead_seed$s.json"
done
