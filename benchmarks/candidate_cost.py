"""Benchmark: a searcher's cost per candidate, FlopsBand.network_key + FlopsBand.flops at new random points.

Run: PYTHONPATH=TREE python benchmarks/candidate_cost.py (run two trees one after the other, twice, for a before/after ratio); prints
the median over 5 rounds of 640 points (a qnehvi pool).
"""
import statistics, time
import numpy as np
from tinyray.searchers.band import FlopsBand
from tinyray.space import load_space
space = load_space(); band = FlopsBand(space, 200_000_000)
rng = np.random.default_rng(0); times = []
for _ in range(5):
    pts = rng.uniform(band.low, band.high, size=(640, 3))
    t = time.perf_counter()
    for x in pts:
        band.network_key(x); band.flops(x)
    times.append((time.perf_counter() - t) / len(pts))
print(f"{statistics.median(times) * 1e6:.0f} us a candidate")
