"""Which synthetic task? Train one network at several r on a variant of the generator (how data v5 was chosen).

    python benchmarks/data_variants.py '{"radius": [0.16, 0.45], "period": [2.2, 24]}' 8      # data v5 itself
    python benchmarks/data_variants.py '{"radius": [0.13, 0.45], "cycles": [2, 3.5]}' 8       # variant J

A variant patches the generator's draw function (never the shipped data): ``radius`` is the object radius range
(fraction of the side, log-uniform); the stripe period is either log-uniform over ``period`` (px at 64 px) or the
radius divided by a log-uniform ``cycles`` (at least ``min_period`` px); ``cue`` is the chance of the colour cue,
``contrast`` the stripe amplitude range, ``noise`` the pixel noise sd range. The network (default r in 0.25, 0.5,
0.75, 1 at d = 0.75, w = 0.625, the cube's centre in d and w) trains with the proxy recipe on 1800 images for EPOCHS
epochs (one CPU thread each, two at once), and the top-1 after every epoch on 400 validation images is printed as
one JSON line per network. The results of 2026-12-06 are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing

import numpy as np

DEFAULT = dict(radius=(0.16, 0.45), period=(2.2, 24.0), cycles=None, min_period=2.2, contrast=(0.2, 0.35), cue=0.75,
               noise=(0.02, 0.06))


def draw(params, rng, label, x, y, side, scale):
    from tinyray import data as D

    shape_index, orientation = label // len(D.ORIENTATIONS), label % len(D.ORIENTATIONS)
    background = rng.uniform(0.6, 0.85) + rng.uniform(-0.12, 0.12, size=3)
    gradient = rng.normal(0.0, 0.1, size=2) / side
    image = background[:, None, None] + (gradient[0] * (x - side / 2) + gradient[1] * (y - side / 2))[None]
    radius = D._log_uniform(rng, *params["radius"]) * side
    cx, cy = rng.uniform(radius * 0.9, side - radius * 0.9, size=2)
    angle = rng.uniform(-np.pi / 9, np.pi / 9)
    u = ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) / radius
    v = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / radius
    mask = D._shape_mask(D.SHAPES[shape_index], u, v)
    direction = D._WAVE_DIRECTIONS[orientation] + rng.uniform(-np.pi / 24, np.pi / 24)
    if params.get("cycles"):
        period = max(params["min_period"] * scale, radius / D._log_uniform(rng, *params["cycles"]))
    else:
        period = D._log_uniform(rng, *params["period"]) * scale
    phase = rng.uniform(0.0, 2.0 * np.pi)
    wave = np.sin(2.0 * np.pi * (x * np.cos(direction) + y * np.sin(direction)) / period + phase)
    hue = (D.SHAPE_COLOURS[shape_index] + rng.uniform(-0.1, 0.1, size=3) if rng.uniform() < params["cue"]
           else rng.uniform(0.05, 0.95, size=3))
    contrast = rng.uniform(*params["contrast"]) * (1.0 + rng.uniform(-0.2, 0.2, size=3))
    texture = (0.05 + 0.45 * hue)[:, None, None] + contrast[:, None, None] * wave[None]
    image = np.where(mask[None], texture, image)
    dx, dy = rng.uniform(0, side, size=2)
    a, b = rng.uniform(0.05, 0.12, size=2) * side
    blob = ((x - dx) / a) ** 2 + ((y - dy) / b) ** 2 <= 1.0
    image = np.where(blob[None], rng.uniform(0.0, 1.0, size=3)[:, None, None], image)
    image = image + rng.normal(0.0, rng.uniform(*params["noise"]), size=image.shape)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def run(job):
    params, (r, d, w), epochs, cache = job
    import functools

    from tinyray import data as D
    from tinyray.space import load_space
    from tinyray.train import train_candidate

    D._draw = functools.partial(draw, params)
    data = D.load_data(D.DataSpec(train_size=1800, val_size=400, cache_dir=cache))
    start = time.time()
    result = train_candidate(load_space(), r, d, w, data, epochs=epochs, recipe="proxy", seed=0, threads=1)
    return {"r": r, "d": d, "w": w, "top1": [round(e.top1, 3) for e in result.history],
            "seconds": round(time.time() - start)}


def main() -> None:
    import hashlib
    import tempfile

    params = {**DEFAULT, **json.loads(sys.argv[1])}
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    nets = json.loads(sys.argv[3]) if len(sys.argv) > 3 else [[r, 0.75, 0.625] for r in (0.25, 0.5, 0.75, 1.0)]
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    cache = f"{tempfile.gettempdir()}/tinyray-variant-{digest}"  # the variant's images, apart from the real cache
    jobs = [(params, tuple(net), epochs, cache) for net in nets]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for out in pool.map(run, jobs):
            print(json.dumps({"variant": params, **out}), flush=True)


if __name__ == "__main__":
    main()
