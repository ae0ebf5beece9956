"""Benchmark: the peak memory of one replay trial's process (``--trainer replay``), next to an idle one's.

Run: python benchmarks/replay_memory.py [--epochs 2]

Runs two fresh child processes, one after the other, and prints each one's peak resident memory (``VmHWM`` of
``/proc/self/status``) and which heavy libraries it imported:

* *idle*: imports what every Ray Tune trial process has (``ray.tune``) and tinyray's trainable module, and stops;
* *replay trial*: the same, then runs :func:`tinyray.tune.trainable.run_trial` on one candidate with a replay
  search's settings (``--replay-speed 0``), its config described by the parent as a search's driver describes
  its trials (:func:`tinyray.tracking.describe_trial`).

No Ray cluster is started: in the child, Tune's session calls (``tune.report``, ``tune.get_checkpoint``) and the
node id are replaced by local stand-ins, so the child holds exactly what a replay trial's own code loads, on top
of the Ray and Tune modules a real trial process imports anyway (a real Ray worker adds its core worker's
memory to both numbers alike). The number that matters is the replay trial's: ``tinyray bench scale`` runs one
such process per slot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

HEAVY = ("torch", "timm", "scipy", "pandas", "mlflow", "pymoo")
POINT = {"r": 0.6, "d": 0.8, "w": 0.6}

CHILD = """
import json, sys
from pathlib import Path
from types import SimpleNamespace

import ray
from ray import tune

from tinyray.tune import trainable

job = json.loads(sys.argv[1])
reports = []
if job["settings"] is not None:
    from tinyray.data import DataSpec

    # Tune's session and Ray's node id, without a cluster
    tune.report = lambda metrics, checkpoint=None: reports.append(metrics)
    tune.get_checkpoint = lambda: None
    ray.get_runtime_context = lambda: SimpleNamespace(get_node_id=lambda: "local")
    settings = trainable.TrialSettings(**{**job["settings"], "data": DataSpec()})
    trainable.run_trial(job["config"], settings)
peak = next(int(line.split()[1]) / 1024 for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmHWM:"))
print(json.dumps({"peak_mb": peak, "epochs": len(reports), "imported": [m for m in job["heavy"] if m in sys.modules],
                  "data_loaded": trainable._data.cache_info().currsize}))
"""


def run_child(config: dict, settings: dict | None) -> dict:
    """Run the child process on one job; return what it measured."""
    job = json.dumps({"config": config, "settings": settings, "heavy": HEAVY})
    done = subprocess.run([sys.executable, "-c", CHILD, job], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the child process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs replayed")
    args = parser.parse_args()

    from tinyray.data import DataSpec, load_data
    from tinyray.space import load_space
    from tinyray.tracking import describe_trial

    space = load_space()
    config = describe_trial(space, load_data(DataSpec()), **POINT)  # the driver describes the trial
    settings = {"space": str(space.source), "max_epochs": args.epochs, "recipe": "proxy", "seed": 0, "threads": 1,
                "trainer": "replay", "replay_speed": 0.0}
    for name, job in (("idle", None), ("replay trial", settings)):
        found = run_child(config, job)
        print(f"{name}: peak {found['peak_mb']:.0f} MB (VmHWM); imported {found['imported'] or 'none'} of "
              f"{list(HEAVY)}; epochs reported {found['epochs']}; data loaded {bool(found['data_loaded'])}")


if __name__ == "__main__":
    main()
