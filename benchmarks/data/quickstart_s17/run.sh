#!/bin/bash
# Session 17 (2026-12-07 18:27 UTC, idle 2-core machine): the README's quickstart on a fresh clone of 7a08a3a,
# timed (install 152 s, search 229 s). Run from the repository: bash benchmarks/data/quickstart_s17/run.sh
set -u
REPO=$(git rev-parse --show-toplevel)
WORK=${WORK:-/tmp/quickstart_s17}
rm -rf "$WORK" && git clone -q "$REPO" "$WORK" && cd "$WORK"
s=$(date +%s); python3 -m venv .venv && .venv/bin/pip install -q -e .; m=$(date +%s)
(time .venv/bin/tinyray search --budget 200M) > search.txt 2>&1; e=$(date +%s)
echo "install $((m-s)) s, search $((e-m)) s" >> search.txt
