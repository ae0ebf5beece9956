"""Would NSGA-III reach a good front sooner with offspring that fill the front's gaps? (issue 15, item 3; session 18)

An exploration, not tinyray's searcher: with FF_VARIANT=fillK, from the second generation on K offspring of each
generation are replaced by networks between two neighbours of the population's front that bound its largest gaps in
hypervolume (the rectangle (FLOPs gap / budget) x (top-1 gap)), their (r, d, w) interpolated in log space and scaled
onto the middle FLOPs level (``FlopsBand.at_level``). FF_VARIANT=default plays tinyray's default unchanged. Played by
`tinyray bench search` (simulated on the recorded landscape) on the tuning seeds 10-19 (the README reports 0-9), the
patch applied in each worker process (spawn re-imports this module), about 45 s for (a) alone on two processes.

    FF_VARIANT=fill2 PYTHONPATH=. python benchmarks/front_fill.py 10 a OUT.json     # FIRST_SEED METHODS OUT

Result (docs/benchmarks.md, session 18): no better than the default; not adopted.
"""
import json, math, os, sys
from dataclasses import replace
import numpy as np
from tinyray.searchers import nsga3 as N

VARIANT = os.environ.get("FF_VARIANT", "default")
_orig = N.NSGA3Core._put_on_the_edge

def _fill(self, offspring):
    _orig(self, offspring)
    k = int(VARIANT[4:]) if VARIANT.startswith("fill") else 0
    if not k:
        return
    pop = self._algorithm.pop
    F = pop.get("F") if pop is not None else None
    if F is None or len(F) == 0 or len(offspring) < 2 + k:
        return
    G = pop.get("G")
    X = np.asarray(pop.get("X"), dtype=float)
    feas = np.all(G <= 0, axis=1) if G is not None else np.ones(len(F), bool)
    pts = [(F[i, 1], -F[i, 0], X[i]) for i in range(len(F)) if feas[i]]
    # the population's non-dominated members (top1 up, flops down)
    pts.sort(key=lambda p: (p[0], -p[1]))
    front = []
    for c, a, x in pts:
        if not front or a > front[-1][1]:
            front.append((c, a, x))
    if len(front) < 2:
        return
    budget_c = self.band.budget / self.base_flops
    gaps = []
    for (c1, a1, x1), (c2, a2, x2) in zip(front, front[1:]):
        gaps.append(((c2 - c1) / budget_c * (a2 - a1), c1, c2, x1, x2))
    gaps.sort(key=lambda g: -g[0])
    rows = np.array(offspring.get("X"), dtype=float)
    taken = set(self._seen) | {self.band.network_key(x) for x in rows}
    slot = len(rows) - 2
    for area, c1, c2, x1, x2 in gaps[:k]:
        t = 0.5
        target_c = math.exp((1 - t) * math.log(c1) + t * math.log(c2))
        x = np.exp((1 - t) * np.log(x1) + t * np.log(x2))
        y = self.band.at_level(x, target_c * self.base_flops)
        if y is None:
            y = self.band.project(x)
        if y is None or self.band.network_key(y) in taken:
            continue
        taken.add(self.band.network_key(y))
        rows[slot] = y
        slot -= 1
    offspring.set("X", rows)

N.NSGA3Core._put_on_the_edge = _fill

if __name__ == "__main__":
    from tinyray.bench import TARGET_FRACTION, BenchConfig, run_bench
    first = int(sys.argv[1]); methods = tuple(sys.argv[2].split(","))
    config = BenchConfig(seeds=10, first_seed=first, methods=methods)
    result = run_bench(config, processes=2)
    table = result.curves
    table = table[table["axis"] == "epochs"]
    mean = table.pivot_table(index="compute", columns="method", values="hypervolume", aggfunc="mean").sort_index()
    out = {m: mean[m].tolist() for m in mean.columns}
    out["compute"] = mean.index.tolist()
    json.dump(out, open(sys.argv[3], "w"))
    for m in mean.columns:
        s = mean[m]
        print(VARIANT, m, " ".join(f"{c}:{s.loc[c]:.3f}" for c in s.index if c in (72, 180, 228, 306, 360, 540, 720)), flush=True)
