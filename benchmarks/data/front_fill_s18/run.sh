#!/bin/bash
# Session 18 (2026-12-07 ~19:50 UTC): front-fill offspring for NSGA-III, simulated on tuning seeds 10-19 (issue 15).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
FF_VARIANT=default PYTHONPATH=. python benchmarks/front_fill.py 10 a,b "$here/default_a_b.json"
for v in fill1 fill2; do FF_VARIANT=$v PYTHONPATH=. python benchmarks/front_fill.py 10 a "$here/${v}_a.json"; done
FF_VARIANT=default PYTHONPATH=. python benchmarks/front_fill.py 20 a,b "$here/seeds20_default.json"   # 21:50 UTC
FF_VARIANT=fill2 PYTHONPATH=. python benchmarks/front_fill.py 20 a "$here/seeds20_fill2.json"
