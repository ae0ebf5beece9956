"""Check: a change leaves the simulated searches of ``tinyray bench search`` unchanged, to the digit.

Run: PYTHONPATH=TREE python benchmarks/same_runs.py METHODS TRIALS   (e.g. ``a,b 12`` or ``e 16``)

Plays 2 seeds of METHODS at TRIALS trials of compute on the shipped landscape and prints the md5 of the
hypervolume curves (rounded to 9 digits) and the seconds it took. Run it on the tree before and after a change: a
refactoring that must not change any search gives the same md5.
"""

from __future__ import annotations

import hashlib
import sys
import time

from tinyray.bench import BenchConfig, run_bench


def main() -> None:
    methods, trials = tuple(sys.argv[1].split(",")), int(sys.argv[2])
    started = time.perf_counter()
    result = run_bench(BenchConfig(seeds=2, trials=trials, methods=methods))
    digest = hashlib.md5(str(result.curves["hypervolume"].round(9).tolist()).encode()).hexdigest()
    print(f"methods {','.join(methods)}, {trials} trials, seeds 0-1: md5 {digest} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
