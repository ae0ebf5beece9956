"""Benchmark: the ``qnehvi`` searcher's cost per ask, and its front against random search and NSGA-III.

Run: python benchmarks/qnehvi_search.py [--seeds 5] [--evaluations 24] [--pop-size 8] [--batch 2]

Each searcher gets the same number of evaluations of a cheap known landscape (the smooth stand-in for training of
``tests/test_searcher.py``: accuracy grows with size and is best at balanced r : d : w), asked ``--batch`` at a time
(the later ones while the earlier are pending, as with that many workers), under a 100M budget of EfficientNet-B0's
cube. Prints, per seed and as a mean, the hypervolume of each searcher's completed trials as ``tinyray bench
search`` measures it (:func:`tinyray.front.hypervolume`), and the qnehvi searcher's seconds per Bayesian-optimisation
ask (GP fit, acquisition), with the number of trials the GP was fitted on. On a busy machine set
``OMP_NUM_THREADS=1``: torch's threads otherwise spin waiting for each other.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

BUDGET = 100_000_000
SEARCHERS = ("qnehvi", "random", "nsga3")


def synthetic_top1(r: float, d: float, w: float) -> float:
    """The landscape of ``tests/test_searcher.py``: accuracy grows with size, best at balanced r : d : w."""
    size = 0.85 - 0.5 * math.exp(-3.0 * r * math.sqrt(d) * w)
    shape = 0.4 * math.log(r / (0.8 * d)) ** 2 + 0.2 * math.log(w / r) ** 2
    return min(1.0, max(0.0, size - shape))


def play(core, evaluations: int, batch: int) -> None:
    """Ask up to ``batch`` trials (fewer if the searcher waits), tell them, until ``evaluations`` are told."""
    told = 0
    while told < evaluations:
        asked = []
        while len(asked) < min(batch, evaluations - told):
            trial_id = f"t{told + len(asked)}"
            candidate = core.ask(trial_id)
            if candidate is None:
                break
            asked.append((trial_id, candidate))
        for trial_id, candidate in asked:
            core.tell(trial_id, synthetic_top1(candidate.r, candidate.d, candidate.w), "completed")
        told += len(asked)


def main() -> None:
    from tinyray.front import hypervolume
    from tinyray.searchers import make_searcher
    from tinyray.space import load_space

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=24)
    parser.add_argument("--pop-size", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    space = load_space("efficientnet_b0")
    volumes = {name: [] for name in SEARCHERS}
    timings = []
    print("seed " + " ".join(f"{name:>8}" for name in SEARCHERS))
    for seed in range(args.seeds):
        for name in SEARCHERS:
            core = make_searcher(name, space, BUDGET, seed=seed, pop_size=args.pop_size)
            play(core, args.evaluations, args.batch)
            done = [rec for rec in core.records if rec.is_final]
            volumes[name].append(hypervolume(np.array([rec.top1 for rec in done]),
                                             np.array([rec.flops for rec in done]), BUDGET))
            timings += getattr(core, "timings", [])
        print(f"{seed:4d} " + " ".join(f"{volumes[name][-1]:8.4f}" for name in SEARCHERS), flush=True)
    print("mean " + " ".join(f"{np.mean(volumes[name]):8.4f}" for name in SEARCHERS))
    wins = sum(q > r for q, r in zip(volumes["qnehvi"], volumes["random"]))
    print(f"qnehvi above random on {wins} of {args.seeds} seeds")
    fits = np.array([t.fit_seconds for t in timings if t.refitted])
    acquisitions = np.array([t.acquisition_seconds for t in timings])
    print(f"qnehvi: {len(timings)} Bayesian-optimisation asks, GP fitted on {min(t.observations for t in timings)}"
          f"..{max(t.observations for t in timings)} trials, {np.mean([t.candidates for t in timings]):.0f}"
          f" candidates each; fit {fits.mean():.2f} s mean, {fits.max():.2f} s max ({len(fits)} fits);"
          f" acquisition {acquisitions.mean():.2f} s mean, {acquisitions.max():.2f} s max")


if __name__ == "__main__":
    main()
