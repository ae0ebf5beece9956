"""Benchmark: how much training throughput this machine gives to one trial, two trials at once, or two threads.

Run: python benchmarks/contention.py [--steps 8]

Trains the same candidate (r=0.26, d=1.06, w=0.93 at 17 px, batch 64) with AdamW in three set-ups, in one run:
one process with 1 thread, two 1-thread processes at the same time (what two Ray trials with one CPU each do),
and one process with 2 threads. Prints images/s of each (median step time over ``--steps`` steps).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def worker(threads: int, steps: int) -> float:
    import torch

    from tinyray.cube import build_model
    from tinyray.space import load_space

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(load_space(), 0.26, 1.06, 0.93, num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    images, labels = torch.randn(64, 3, 17, 17), torch.randint(0, 10, (64,))
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:  # warm-up steps are not timed
            times.append(time.perf_counter() - start)
    return 64 / statistics.median(times)


def spawn(threads: int, steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", str(threads), "--steps", str(steps)],
                            stdout=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(f"{worker(args.worker, args.steps):.1f}")
        return
    solo = float(spawn(1, args.steps).communicate()[0])
    pair = [spawn(1, args.steps) for _ in range(2)]
    together = [float(p.communicate()[0]) for p in pair]
    two_threads = float(spawn(2, args.steps).communicate()[0])
    print(f"1 process, 1 thread:        {solo:6.1f} img/s")
    print(f"2 processes, 1 thread each: {together[0]:6.1f} + {together[1]:6.1f} = {sum(together):6.1f} img/s "
          f"({sum(together) / solo:.2f}x of one)")
    print(f"1 process, 2 threads:       {two_threads:6.1f} img/s ({two_threads / solo:.2f}x of one)")


if __name__ == "__main__":
    main()
