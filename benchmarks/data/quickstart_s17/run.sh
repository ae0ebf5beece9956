#!/bin/bash
# Session 17 (2026-12-07 18:27-18:33 UTC, idle 2-core machine): the README's quickstart on a fresh clone of 7a08a3a,
# timed (install 152 s, search 229 s), by session 16's script. Run from the repository:
#   bash benchmarks/data/quickstart_s17/run.sh
WORK=${WORK:-/tmp/quickstart_s17} exec bash "$(dirname "$0")/../quickstart_s16/run.sh"
