#!/bin/bash
# Session 15 (2026-12-07 11:48-12:04 UTC, idle 2-core machine, commit 8aac4a5, the fresh clone's environment):
# the default search at seeds 1, 2 and 0 as tinyray bench overhead (README: The default search, Search overhead).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
for seed in 1 2 0; do
  tinyray bench overhead --seed $seed --out "${WORK:-/tmp}/overhead_s$seed" | tee "$here/overhead_s$seed.txt"
  cp "${WORK:-/tmp}/overhead_s$seed/overhead.json" "$here/overhead_s$seed.json"
done
