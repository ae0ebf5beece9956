#!/bin/bash
# Issue 17: the default search on each shipped base other than EfficientNet-B0, at a budget of about half its FLOPs
# at (1, 1, 1), seed 0, 30 trials, the built-in data; then the formula inside each fitted range. 2026-12-06 (session
# 10), commit 5a1c2e1's search code (the formula's model name aside). Kept here: each search's trials.csv, front.csv,
# formula.json, search.json and printed summary (*.out).
set -e
out=${1:-bases-results}
for spec in "ghostnet 70M" "mobilenetv3_large 110M" "resnet50 2G"; do
  set -- $spec
  python -m tinyray search --space $1 --budget $2 --storage "$out" --seed 0 --quiet | tee $1.out
done
python -m tinyray formula --from "$out/b70M" --budget 6M 10M 15M
python -m tinyray formula --from "$out/b110M" --budget 20M 40M 75M
python -m tinyray formula --from "$out/b2G" --budget 200M 300M 450M 600M
