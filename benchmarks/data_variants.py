"""Which synthetic task? Train a few networks on a variant of the generator (how data versions 5 and 6 were chosen).

    python benchmarks/data_variants.py '{}' 3 6000                                  # data v6 itself, 3 epochs of 6000
    python benchmarks/data_variants.py '{"jitter": 7.5, "period": [2.2, 32], "radius": [0.18, 0.45]}' 3 6000
                                                                   # the v7 draft of 2026-12-06 (measured, not adopted)
    python benchmarks/data_variants.py '{"task": "counts"}' 3 6000                  # the counting task of session 19
    python benchmarks/data_variants.py '{"orientations": 4, "jitter": 7.5, "stripes_on": "object",
        "radius": [0.16, 0.45]}' 8 1800                                            # data v5 (20 classes), as chosen

A variant patches the generator's module constants in the worker processes (never the shipped data or its cache):
``radius`` the object radius range (fraction of the side, log-uniform), ``period`` the stripe period range (px at
64 px, log-uniform), ``contrast`` the stripe amplitude range, ``cue`` the chance of the colour cue, ``noise`` the pixel
noise sd range, ``stripes_on`` ``"background"`` or ``"object"``, ``orientations`` 4 (45 degrees apart) or 8 (22.5),
``second_order`` the share of images whose stripes modulate the contrast of a binary texture (second-order, seen
only through two nonlinear stages) and ``grain`` that texture's grain range (px at 64 px), ``jitter`` the largest
deviation of a stripe direction from its class's direction in degrees (default the same
share of the spacing as the generator's, a sixth: 3.75 for 8 directions, 7.5 for 4; half the spacing, 11.25 for 8,
fills the circle so that classes touch), ``task`` ``"stripes"`` (version 6) or ``"counts"`` (session 19: five shape
families x a count of 3-10 parts of the outline, no stripes; ``tinyray.data._draw_counts``) and ``rotation`` that
task's largest turn of the object in degrees, ``counts`` its lowest and highest count (default ``[3, 10]``).
Each network trains with the proxy recipe on TRAIN images (default 1800) for EPOCHS epochs, one CPU thread each,
two at once, and the top-1 after every epoch on the validation images (400, or 1000 for more than 2000 training
images) is printed as one JSON line per network and seed. NETS is a JSON list of [r, d, w] (default: the cube's
centre in d and w at r = 0.25, 0.5, 0.75, 1), SEEDS a JSON list of seeds (default [0]). The results of 2026-12-06
are in docs/benchmarks.md.

    python benchmarks/data_variants.py VARIANT EPOCHS [TRAIN] [NETS] [SEEDS]
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

#: Variant key -> the generator constant it sets in tinyray.data.
CONSTANTS = {"radius": "OBJECT_RADIUS", "period": "STRIPE_PERIOD", "contrast": "STRIPE_CONTRAST", "cue": "COLOUR_CUE",
             "noise": "PIXEL_NOISE", "stripes_on": "STRIPES_ON", "second_order": "SECOND_ORDER",
             "grain": "CARRIER_GRAIN", "task": "TASK", "rotation": "COUNT_ROTATION"}


def patch(variant: dict) -> None:
    """Set the generator's constants to ``variant`` in this process."""
    from tinyray import data as D

    unknown = set(variant) - set(CONSTANTS) - {"orientations", "jitter", "counts"}
    if unknown:
        raise SystemExit(f"unknown variant keys {sorted(unknown)}: use {sorted(CONSTANTS) + ['counts', 'jitter', 'orientations']}")
    for key, value in variant.items():
        if key in CONSTANTS:
            setattr(D, CONSTANTS[key], tuple(value) if isinstance(value, list) else value)
    share = D._DIRECTION_JITTER / (np.pi / len(D.ORIENTATIONS))  # the jitter's share of the directions' spacing
    n = int(variant.get("orientations", len(D.ORIENTATIONS)))
    D.ORIENTATIONS = tuple(f"{180 * k / n:g}" for k in range(n))
    D._WAVE_DIRECTIONS = tuple(-(np.pi / 2 + k * np.pi / n) for k in range(n))
    D._DIRECTION_JITTER = np.radians(variant["jitter"]) if "jitter" in variant else share * np.pi / n
    D.MAX_SYNTHETIC_CLASSES = len(D.SHAPES) * n
    if "counts" in variant:  # the counting task's counts, [lowest, highest]
        low, high = variant["counts"]
        D.COUNTS = tuple(range(int(low), int(high) + 1))
    if D.TASK == "counts":
        D.MAX_SYNTHETIC_CLASSES = len(D.COUNT_FAMILIES) * len(D.COUNTS)


def run(job: tuple) -> dict:
    variant, (r, d, w), epochs, train, seed, cache = job
    patch(variant)
    from tinyray import data as D
    from tinyray.space import load_space
    from tinyray.train import train_candidate

    spec = D.DataSpec(num_classes=D.MAX_SYNTHETIC_CLASSES, train_size=train, val_size=1000 if train > 2000 else 400,
                      cache_dir=cache)
    data = D.load_data(spec)
    start = time.time()
    result = train_candidate(load_space(), r, d, w, data, epochs=epochs, recipe="proxy", seed=seed, threads=1)
    return {"r": r, "d": d, "w": w, "train": train, "epochs": epochs, "seed": seed,
            "top1": [round(e.top1, 3) for e in result.history], "seconds": round(time.time() - start)}


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__.split("\n\n")[-1].strip())
    variant = json.loads(sys.argv[1])
    epochs = int(sys.argv[2])
    train = int(sys.argv[3]) if len(sys.argv) > 3 else 1800
    nets = json.loads(sys.argv[4]) if len(sys.argv) > 4 else [[r, 0.75, 0.625] for r in (0.25, 0.5, 0.75, 1.0)]
    seeds = json.loads(sys.argv[5]) if len(sys.argv) > 5 else [0]
    digest = hashlib.sha1(json.dumps(variant, sort_keys=True).encode()).hexdigest()[:8]
    cache = f"{tempfile.gettempdir()}/tinyray-variant-{digest}"  # the variant's images, apart from the real cache
    jobs = [(variant, tuple(net), epochs, train, seed, cache) for net in nets for seed in seeds]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for out in pool.map(run, jobs):
            print(json.dumps({"variant": variant, **out}), flush=True)


if __name__ == "__main__":
    main()
