#!/bin/bash
# Session 16 (2026-12-07 14:33-14:40 UTC, idle 2-core machine): the README's quickstart on a fresh clone of 9cd3b69,
# timed (install 139 s, search 210 s). Run from the repository: bash benchmarks/data/quickstart_s16/run.sh
set -u
REPO=$(git rev-parse --show-toplevel)
WORK=${WORK:-/tmp/quickstart_s16}
rm -rf "$WORK" && git clone -q "$REPO" "$WORK" && cd "$WORK"
s=$(date +%s); python3 -m venv .venv && .venv/bin/pip install -q -e .; m=$(date +%s)
(time .venv/bin/tinyray search --budget 200M) > search.txt 2>&1; e=$(date +%s)
echo "install $((m-s)) s, search $((e-m)) s" >> search.txt
