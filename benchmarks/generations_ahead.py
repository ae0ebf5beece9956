"""Benchmark: NSGA-III's generation barrier against generations bred ahead, on the tabular search benchmark.

Run: python benchmarks/generations_ahead.py [--seeds 5] [--trials 120] [--workers 16,48]

Plays method (a) of ``tinyray bench search`` (tinyray's NSGA-III + multi-objective ASHA) with a generation as large
as the workers (as ``tinyray bench scale`` sets it) and ``generations_ahead`` 0 (wait for a generation's last trial)
or more (the next generations are bred while it finishes), and prints, mean ± sd over seeds: the workers' busy share
(epoch seconds over workers x simulated seconds), the simulated seconds to use the compute, and the hypervolume at
equal compute in epochs and in seconds (when the faster of the seed's runs ended).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np


def main() -> None:
    from tinyray.bench import BenchConfig, Curves, hypervolume_curve, simulate
    from tinyray.space import load_space

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--workers", default="16,48")
    parser.add_argument("--ahead", default="0,1,2")
    args = parser.parse_args()
    curves, space = Curves.load(), load_space()
    print("workers ahead | busy | seconds | hypervolume at equal epochs | at equal seconds")
    for workers in (int(text) for text in args.workers.split(",")):
        base = BenchConfig(trials=args.trials, workers=workers, pop_size=workers)
        runs = {ahead: [simulate("a", seed, replace(base, generations_ahead=ahead), curves, space)
                        for seed in range(args.seeds)] for ahead in (int(text) for text in args.ahead.split(","))}
        ends = [min(run.seconds for run in played) for played in zip(*runs.values())]
        cap_epochs = base.trials * base.max_epochs
        for ahead, played in runs.items():
            busy = [run.slot_seconds / (workers * run.seconds) for run in played]
            seconds = [run.seconds for run in played]
            by_epochs = [hypervolume_curve(run, np.array([cap_epochs]), base.budget, 0)[0] for run in played]
            by_seconds = [hypervolume_curve(run, np.array([end]), base.budget, 1)[0] for run, end in zip(played, ends)]
            print(f"{workers:7d} {ahead:5d} | {np.mean(busy):.1%} ± {np.std(busy):.1%} | {np.mean(seconds):7.0f} ± "
                  f"{np.std(seconds):4.0f} | {np.mean(by_epochs):.3f} ± {np.std(by_epochs):.3f} | "
                  f"{np.mean(by_seconds):.3f} ± {np.std(by_seconds):.3f}")


if __name__ == "__main__":
    main()
