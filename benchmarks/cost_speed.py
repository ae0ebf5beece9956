"""Benchmark: the analytic FLOPs count against building the network and counting it with torch.

Run: python benchmarks/cost_speed.py [--points 20] [--repeats 5]

Both counts run side by side on the same random points of the cube, in one process; medians are quoted. The
analytic count is timed cold (every cache cleared), at a new point (the searcher's case: every candidate is a new
float point, while timm's block decoding is cached on each stage's block count, which few points share), and
warm (the same point again). A searcher's per-candidate cost is the count plus the network's key
(``FlopsBand.network_key``, timed the same way).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from tinyray import cost
from tinyray.cost import analytic_cost, measured_cost
from tinyray.cube import TINYNETS
from tinyray.families.efficientnet import _decode_scaled
from tinyray.searchers.band import FlopsBand
from tinyray.space import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    space = load_space()
    rng = random.Random(0)
    points = [tuple(rng.uniform(b.low, b.high) for b in (space.r, space.d, space.w)) for _ in range(args.points)]
    band = FlopsBand(space, 200_000_000)
    analytic_cold, analytic_new, analytic_warm, key_new, measured = [], [], [], [], []
    for r, d, w in points:
        for _ in range(args.repeats):
            cost._count.cache_clear()
            _decode_scaled.cache_clear()
            start = time.perf_counter()
            analytic_cost(space, r, d, w)
            analytic_cold.append(time.perf_counter() - start)
            cost._count.cache_clear()  # the decoding stays cached: a new point of an already-seen block layout
            start = time.perf_counter()
            analytic_cost(space, r, d, w)
            analytic_new.append(time.perf_counter() - start)
            start = time.perf_counter()
            analytic_cost(space, r, d, w)
            analytic_warm.append(time.perf_counter() - start)
            start = time.perf_counter()
            band.network_key((r, d, w))
            key_new.append(time.perf_counter() - start)
        start = time.perf_counter()
        measured_cost(space, r, d, w)
        measured.append(time.perf_counter() - start)
    cold, new, warm, key, built = (statistics.median(x) for x in (analytic_cold, analytic_new, analytic_warm, key_new,
                                                                   measured))
    print(f"points {len(points)}; medians: analytic cold {cold * 1e6:.0f} us, at a new point {new * 1e6:.0f} us, "
          f"cached {warm * 1e6:.1f} us; network key {key * 1e6:.0f} us; build + torch count {built * 1e3:.0f} ms; "
          f"ratio build/analytic-cold {built / cold:.0f}x")
    print(f"{'network':<16} {'px':>4} {'FLOPs (M)':>10} {'paper (M)':>10} {'params (M)':>11}")
    for name, spec in {"efficientnet_b0": {"r": 1.0, "d": 1.0, "w": 1.0, "paper_mflops": 390}, **TINYNETS}.items():
        c = analytic_cost(space, spec["r"], spec["d"], spec["w"])
        print(f"{name:<16} {c.resolution:>4} {c.flops / 1e6:>10.1f} {spec['paper_mflops']:>10} {c.params / 1e6:>11.3f}")


if __name__ == "__main__":
    main()
