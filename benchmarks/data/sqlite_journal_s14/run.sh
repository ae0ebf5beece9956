#!/bin/bash
# Session 14 (2026-12-07, 08:44-08:46 UTC, commit 62a6bd0's tinyray; beside the test suite and a niced benchmark, so
# read the ratios, interleaved per round, not the absolute times): a trial's MLflow calls on the embedded sqlite store,
# MLflow's rollback journal against the write-ahead log tinyray now sets. Writes result.txt beside this file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
(date -u +%T; PYTHONPATH=. python benchmarks/sqlite_journal.py 3 60 2>&1 | tail -3; date -u +%T) | tee "$here/result.txt"
