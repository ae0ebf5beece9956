"""Write the replay trainer's grid (``tinyray/benchdata/replay_grid.csv``): the recorded landscape's GP mean curves
(:class:`tinyray.landscape.Landscape`, fitted on the shipped ``benchdata/landscape.csv``) on a regular 9 x 9 x 9
grid over the cube, and how far linear interpolation on that grid is from the GPs themselves at 500 random points
of the cube (what a replay trial's numbers lose by not carrying torch).

    PYTHONPATH=. python benchmarks/replay_grid.py [POINTS_PER_AXIS]

About 10 s. The grid depends only on the landscape recording: rerun it when that is re-recorded.
"""

from __future__ import annotations

import sys

import numpy as np

from tinyray.bench import Curves
from tinyray.landscape import Landscape, replay_grid
from tinyray.replay import REPLAY_GRID


def main() -> None:
    points = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    landscape = Landscape.load()
    table = replay_grid(landscape, points)
    table.to_csv(REPLAY_GRID, index=False)
    grid = Curves(table)
    rng = np.random.default_rng(0)
    low, high = landscape._low, landscape._high
    error = []
    for r, d, w in low + rng.random((500, 3)) * (high - low):
        exact, seconds = landscape.curve(r, d, w)
        approx, approx_seconds = grid.curve(r, d, w)
        error.append(np.concatenate([approx - exact, [np.log(approx_seconds[0] / seconds[0])]]))
    error = np.abs(np.array(error))
    print(f"wrote {REPLAY_GRID} ({points}^3 points x {landscape.epochs} epochs); interpolation against the GPs at 500 "
          f"random points: top-1 max |error| {error[:, :-1].max():.4f}, RMS {np.sqrt((error[:, :-1] ** 2).mean()):.4f}; "
          f"seconds max {100 * (np.exp(error[:, -1].max()) - 1):.1f}%")


if __name__ == "__main__":
    main()
