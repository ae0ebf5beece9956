#!/bin/bash
# Issue 15, item 3, session 14 (2026-12-07): can another setting of (a) reach 95% of the best final hypervolume
# sooner? Tuning seeds 10-19 only (the README reports seeds 0-9). Simulated compute: the result does not depend on the
# machine. Writes tune_default.json (mean curves over the seeds) and tune_default.txt (the printed table) here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
PYTHONPATH=. python benchmarks/tune_default.py "$here/tune_default.json" 2>/dev/null | tee "$here/tune_default.txt"
