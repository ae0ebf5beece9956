#!/bin/bash
# Session 19 (2026-12-07): the counting task's variants, screened on six networks (docs/benchmarks.md).
# Output: one JSON line per network and seed; the recordings of that day are screen.jsonl (and mini_panel.jsonl:
# the task itself, the same commands with '{"task":"counts"}', its mini-panel with [0.25,1,1] in place of the
# smallest corner).
cd "$(dirname "$0")/../../.."
NETS='[[1,0.35,0.25],[1,1,1],[0.7,0.7,0.6],[0.7,0.25,0.6],[0.45,1,1],[0.25,0.25,0.25]]'
for V in '{"task":"counts"}' '{"task":"counts","cue":0}' '{"task":"counts","counts":[3,6]}'; do
  python benchmarks/data_variants.py "$V" 2 1800 "$NETS" '[0,1]'   # the default trial's length, two seeds
  python benchmarks/data_variants.py "$V" 3 6000 "$NETS"           # the mini-panel: half the reference's length
done
