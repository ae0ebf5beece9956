#!/bin/bash
# Issue 12, session 14 (2026-12-07): two candidate data versions on the mini-panel, one seed, 3 epochs of 6000
# built-in images (half the reference's length), top-1 on 1000 validation images after each epoch. Run from the
# repository root; prints one JSON line per network into mini_panel.jsonl beside this file. The second variant was
# stopped after four networks (its learning was erratic); the runs shipped are those that finished.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
NETS='[[1,0.35,0.25],[1,1,1],[0.7,0.7,0.6],[0.7,0.25,0.6],[0.45,1,1],[0.25,1,1]]'
for V in '{"period":[2.2,48]}' '{"period":[2.2,48],"contrast":[0.05,0.35]}'; do
  python benchmarks/data_variants.py "$V" 3 6000 "$NETS" >> "$here/mini_panel.jsonl"
done
