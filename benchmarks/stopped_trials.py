"""Benchmark: how NSGA-III should be told early-stopped trials, on the tabular search benchmark.

Run: python benchmarks/stopped_trials.py [--seeds 5] [--trials 40]

Plays methods (a) NSGA-III + multi-objective ASHA and (d) NSGA-III + Ray's ASHA of ``tinyray bench search`` with
the searcher's ``STOPPED_PENALTY`` at 1.0 (tinyray's choice: a stopped trial is dominated at full fidelity) and at
0.0 (its partial accuracy told as if final, what Ray's ``OptunaSearch`` does), and prints the mean hypervolume
over seeds at ten compute levels (training epochs).
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import tinyray.searchers.base
    from tinyray.bench import BenchConfig, Curves, hypervolume_curve, simulate
    from tinyray.space import load_space

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    curves, space = Curves.load(), load_space()
    config = BenchConfig(trials=args.trials)
    cap = config.trials * config.max_epochs
    levels = np.linspace(cap / 10, cap, 10)
    print("epochs:", " ".join(f"{level:5.0f}" for level in levels))
    for penalty in (1.0, 0.0):
        tinyray.searchers.base.STOPPED_PENALTY = penalty  # read by TrialRecord.effective_top1 at every tell
        for method in "ad":
            volumes = np.array([hypervolume_curve(simulate(method, seed, config, curves, space), levels, config.budget, 0)
                                for seed in range(args.seeds)])
            print(f"penalty {penalty} method {method}: " + " ".join(f"{v:.3f}" for v in volumes.mean(0)), flush=True)


if __name__ == "__main__":
    main()
