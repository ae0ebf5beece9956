"""What a trial's MLflow calls cost the driver on the embedded sqlite store, in MLflow's journal mode and with a
write-ahead log (what tinyray sets: ``tinyray.tracking.write_ahead_log``).

Each round makes a new store per mode and logs N trials the way a search does (a run made with its tags; its params
and sorting metrics in one batch; two epochs' metrics; its end tags and metric; its status), in a fresh process per
(mode, round), the modes interleaved, and prints the median CPU and wall milliseconds a trial over the rounds.

    python benchmarks/sqlite_journal.py [ROUNDS] [TRIALS]          # default 3 rounds of 60 trials, about a minute

Results of 2026-12-07 are in docs/benchmarks.md (session 14).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
from pathlib import Path
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from tinyray.tracking import quiet_mlflow, write_ahead_log

mode, folder, trials = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
quiet_mlflow()
database = folder / "mlflow.db"
if mode == "wal":
    assert write_ahead_log(database)
client = MlflowClient(tracking_uri=f"sqlite:///{database}")
experiment = client.create_experiment("journal", artifact_location=(folder / "art").as_uri())
client.set_terminated(client.create_run(experiment).info.run_id)  # warm: the first call builds the store's state
cpu, wall = time.process_time(), time.perf_counter()
for trial in range(trials):
    run = client.create_run(experiment, run_name=f"t{trial}", tags={f"tag{k}": "v" for k in range(8)}).info.run_id
    client.log_batch(run, params=[Param(f"p{k}", str(k)) for k in range(7)],
                     metrics=[Metric(f"n{k}", 0.5, 0, 0) for k in range(6)])
    for epoch in (1, 2):
        client.log_batch(run, metrics=[Metric(f"m{k}", 0.5, 0, epoch) for k in range(6)])
    client.log_batch(run, tags=[RunTag("status", "completed")], metrics=[Metric("epochs", 2, 0, 0)])
    client.set_terminated(run)
print(json.dumps({"cpu_ms": 1000 * (time.process_time() - cpu) / trials,
                  "wall_ms": 1000 * (time.perf_counter() - wall) / trials}))
"""


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    found: dict[str, list[dict]] = {"journal": [], "wal": []}
    for _ in range(rounds):
        for mode in found:
            with tempfile.TemporaryDirectory() as folder:
                done = subprocess.run([sys.executable, "-c", CHILD, mode, folder, str(trials)], capture_output=True,
                                      text=True, check=True)
                found[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for mode, runs in found.items():
        cpus = [r["cpu_ms"] for r in runs]
        walls = [r["wall_ms"] for r in runs]
        print(f"{mode:8s} median over {rounds} rounds of {trials} trials: CPU {statistics.median(cpus):.1f} ms a trial,"
              f" wall {statistics.median(walls):.1f} ms (rounds: CPU {', '.join(f'{x:.1f}' for x in cpus)}; wall "
              f"{', '.join(f'{x:.1f}' for x in walls)})")
    walls = [j["wall_ms"] / w["wall_ms"] for j, w in zip(found["journal"], found["wal"])]
    cpus = [j["cpu_ms"] / w["cpu_ms"] for j, w in zip(found["journal"], found["wal"])]
    print(f"journal / wal, per round: wall {', '.join(f'{x:.2f}' for x in walls)}; CPU "
          f"{', '.join(f'{x:.2f}' for x in cpus)}")

if __name__ == "__main__":
    main()
