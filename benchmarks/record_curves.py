"""Record the learning curves behind ``tinyray bench search``: real training on a grid of the cube.

Run (about 6 minutes on two idle CPU threads; the shipped table took 40 on a machine shared with other jobs):

    nice -n 10 python benchmarks/record_curves.py --processes 2 --out tinyray/benchdata/curves.csv

The default grid is the 8 corners of the cube of ``tinyray/search_spaces/efficientnet_b0.yaml`` (r and w at 0.25 and 1, d
at 0.25 and 1.25), so the benchmark's accuracy is trilinear in (r, d, w) between measured networks. That is what
the shipped table holds: a finer grid (e.g. ``--r 0.25 0.625 1 --d 0.25 0.75 1.25 --w 0.25 0.625 1``, about 45
minutes on two idle threads) did not fit the machine time available when it was recorded.

Trains every grid point (r, d, w) of the space with :func:`tinyray.train.train_candidate` on the built-in synthetic
data and the ``proxy`` recipe, one thread a process, for ``--epochs`` epochs (the learning-rate schedule spans
them, as in a search with ``--max-epochs`` equal to it, so the accuracy at an early epoch is what an early-stopping
scheduler sees), and writes one row per (grid point, epoch): ``r, d, w, epoch, top1, seconds`` (``seconds`` is the
cumulative training wall time up to the end of that epoch, evaluation included) plus ``flops``, ``resolution``
and the data/recipe settings. Points are written as they finish (``--out`` is rewritten atomically after each), so
an interrupted run keeps what it measured; a rerun skips points already in ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

DEFAULT_GRID = {
    "r": (0.25, 1.0),
    "d": (0.25, 1.25),
    "w": (0.25, 1.0),
}
COLUMNS = ["r", "d", "w", "epoch", "top1", "seconds", "flops", "resolution", "train_resolution", "epochs",
           "train_size", "val_size", "recipe", "seed"]


def train_point(point: tuple[float, float, float], epochs: int, train_size: int, val_size: int, seed: int,
                recipe: str) -> list[dict]:
    """Train one grid point; one row per epoch."""
    from tinyray.cost import analytic_cost
    from tinyray.data import load_data, resolve_data
    from tinyray.space import load_space
    from tinyray.train import train_candidate

    space = load_space()
    data = load_data(resolve_data(None, train_size=train_size, val_size=val_size))
    r, d, w = point
    cost = analytic_cost(space, r, d, w, data.num_classes)
    result = train_candidate(space, r, d, w, data, epochs=epochs, recipe=recipe, seed=seed, threads=1)
    rows, total = [], 0.0
    for epoch in result.history:
        total += epoch.seconds
        rows.append({
            "r": r, "d": d, "w": w, "epoch": epoch.epoch, "top1": epoch.top1, "seconds": round(total, 3),
            "flops": cost.flops, "resolution": cost.resolution, "train_resolution": result.resolution,
            "epochs": epochs, "train_size": train_size, "val_size": val_size, "recipe": recipe, "seed": seed,
        })
    return rows


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tinyray/benchdata/curves.csv"))
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--train-size", type=int, default=1200)
    parser.add_argument("--val-size", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="proxy")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="train only this many points (for timing)")
    for name, values in DEFAULT_GRID.items():
        parser.add_argument(f"--{name}", type=float, nargs="+", default=list(values), help=f"grid values of {name}")
    args = parser.parse_args()

    from tinyray.data import load_data, resolve_data

    load_data(resolve_data(None, train_size=args.train_size, val_size=args.val_size))  # generate the cache once
    done = pd.read_csv(args.out) if args.out.exists() else pd.DataFrame(columns=COLUMNS)
    seen = {(round(r, 6), round(d, 6), round(w, 6)) for r, d, w in done[["r", "d", "w"]].itertuples(index=False)}
    grid = itertools.product(args.r, args.d, args.w)
    points = [p for p in grid if tuple(round(x, 6) for x in p) not in seen]
    # cheapest first: an interrupted recording still covers the low-FLOPs corner of the cube completely, which
    # the benchmark can use with a lower --budget
    points.sort(key=lambda p: (p[0] ** 2) * p[1] * p[2] ** 2)
    if args.limit:
        points = points[: args.limit]
    rows = done.to_dict(orient="records")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.processes) as pool:
        futures = {pool.submit(train_point, p, args.epochs, args.train_size, args.val_size, args.seed, args.recipe): p
                   for p in points}
        for future in as_completed(futures):
            new = future.result()
            rows += new
            frame = pd.DataFrame(rows, columns=COLUMNS).sort_values(["r", "d", "w", "epoch"])
            tmp = args.out.with_suffix(".tmp")
            frame.to_csv(tmp, index=False)
            os.replace(tmp, args.out)
            last = new[-1]
            print(f"r={last['r']} d={last['d']} w={last['w']}: top1 by epoch "
                  f"{[round(row['top1'], 3) for row in new]} in {last['seconds']:.0f}s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
