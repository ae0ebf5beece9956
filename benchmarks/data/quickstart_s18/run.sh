#!/bin/bash
# Session 18 (2026-12-07 21:42-21:48 UTC, idle 2-core machine): the README's quickstart on a fresh clone of 0085c37,
# timed (install 134 s, search 197 s); the same
# script as session 16's. Run from the repository:
#   bash benchmarks/data/quickstart_s18/run.sh
WORK=${WORK:-/tmp/quickstart_s18} exec bash "$(dirname "$0")/../quickstart_s16/run.sh"
