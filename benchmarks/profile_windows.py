"""Where a search driver's trial phase goes, and what grows: a py-spy speedscope profile split into thirds of its samples.

Run: python benchmarks/profile_windows.py DRIVER.speedscope.json[.gz]

Takes the main thread's samples inside Tune's controller step (the trial phase), in the order they were taken,
classifies each by what it was doing (MLflow calls of the tracking callback, Tune's experiment snapshot and its
parts, Tune's actor manager, the scheduler, the searcher) and prints the count of each kind in each third of those
samples. With py-spy's ``--idle`` every sample counts, so the thirds are (roughly) thirds of time and a kind whose
count rises grows; without it the thirds hold equal CPU and the counts are shares only. Other threads (Tune's copies
to the results folder, Arrow's) are not counted: ``benchmarks/driver_accounting`` times the whole process beside the
main thread, per window of finished trials, and is the one to read for growth (session 18).
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import Counter


def kind(stack: list[str]) -> str:
    if any(name.startswith("Tracker._call@") for name in stack):
        return "MLflow (tracking callback)"
    if any(name.startswith("TuneController.checkpoint@") for name in stack):
        if any(name.startswith("SearchGenerator.save_to_dir@") for name in stack):
            return "snapshot: searcher state"
        if any(name.startswith("TuneController._get_trial_checkpoints@") for name in stack):
            return "snapshot: trial states"
        if any(name.startswith("dump@") for name in stack):
            return "snapshot: JSON of the trials"
        return "snapshot: the rest"
    if any("MOASHA" in name for name in stack):
        return "scheduler (MO-ASHA)"
    if any(name.startswith(("TinySearcher", "SearchGenerator")) for name in stack):
        return "searcher"
    step = next(i for i, name in enumerate(stack) if name.startswith("TuneController.step@"))
    return "Tune: " + (stack[step + 1].split("@")[0] if step + 1 < len(stack) else "step")


def main() -> None:
    path = sys.argv[1]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as file:
        profile = json.load(file)
    names = [f"{frame['name']}@{(frame.get('file') or '').split('/')[-1]}" for frame in profile["shared"]["frames"]]
    main_thread = max(profile["profiles"], key=lambda p: len(p["samples"]))
    kinds = []
    for sample in main_thread["samples"]:
        stack = [names[i] for i in sample]
        if any(name.startswith("TuneController.step@") for name in stack):
            kinds.append(kind(stack))
    n = len(kinds)
    thirds = [Counter(kinds[:n // 3]), Counter(kinds[n // 3:2 * n // 3]), Counter(kinds[2 * n // 3:])]
    print(f"{n} samples of the trial phase (main thread, inside Tune's step), by third of time:")
    for key in sorted(set(kinds), key=lambda k: -sum(t[k] for t in thirds)):
        counts = [t[key] for t in thirds]
        print(f"  {key:45s} {counts[0]:5d} {counts[1]:5d} {counts[2]:5d}")


if __name__ == "__main__":
    main()
