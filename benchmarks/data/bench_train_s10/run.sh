#!/bin/bash
# tinyray bench train on the 2-vCPU, no-GPU build machine (issue 18, item 4). Run from a tinyray checkout's
# benchmarks/data/bench_train_s10/ with tinyray installed (or PYTHONPATH at the checkout); writes *.json here.
set -e
here=$(cd "$(dirname "$0")" && pwd)
cd /tmp
python -m tinyray bench train --r 0.5 --d 0.5 --w 0.5 --threads 1 --batch-size 16 --recipe proxy --repeats 9 --json > "$here/cpu_small_proxy.json"
python -m tinyray bench train --r 1 --d 1 --w 1 --threads 2 --batch-size 32 --steps 10 --repeats 5 --json > "$here/cpu_b0_paper.json"
for side in 256 400; do  # ImageNet's JPEG files average about 400 x 350 px
  rm -rf /tmp/jpeg$side /tmp/jpeg$side-cache
  python "$here/../../jpeg_folder.py" /tmp/jpeg$side --classes 10 --train 100 --val 20 --side $side
  TINYRAY_CACHE=/tmp/jpeg$side-cache python -m tinyray bench train --r 1 --d 1 --w 1 --threads 1 --batch-size 16 \
    --steps 5 --repeats 5 --recipe proxy --data /tmp/jpeg$side --workers 1 --batches 20 --json > "$here/loader_jpeg$side.json"
done
