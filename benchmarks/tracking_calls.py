"""The driver's CPU for one trial's MLflow calls, as the tracking callback makes them, against a real
``mlflow server`` and the embedded sqlite store: with MLflow's per-request context probes searched for (MLflow's
own behaviour) and skipped when absent (tinyray's, :func:`tinyray.tracking.skip_absent_context_probes`).

Run: PYTHONPATH=TREE python benchmarks/tracking_calls.py [ROUNDS] [TRIALS]   (default 3 rounds of 100 trials)

A trial is what :class:`tinyray.tune.callbacks.TrackingCallback` does for a 2-epoch trial: its run (created with
its parameters, its network as a logged model), two epochs' metrics, its end (tags, metrics, status): 9 calls.
Each (backend, variant) runs in its own process, the variants alternating round by round on one server, so that
they see the same machine; the medians of a trial's process CPU are printed per round, then their ratio.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(uri: str, trials: int, skip: bool) -> float:
    """Median process CPU (ms) of one trial's calls, in this process."""
    import tinyray.tracking as tracking

    if not skip:
        tracking.skip_absent_context_probes = lambda: None  # MLflow's own behaviour
    from tinyray.tracking import Tracker, trial_end_tags, trial_start_tags

    folder = Path(tempfile.mkdtemp(prefix="tracking-calls-"))
    tracker = Tracker(uri, f"calls-{time.time_ns()}", journal=folder / "tracking.json")
    parent = tracker.start_search("calls", {"budget": 200_000_000})
    cpu = []
    for number in range(trials):
        started = time.process_time()
        run = tracker.start_trial(parent, f"t{number:05d}", f"t{number}", {
            "r": 0.5, "d": 0.5, "w": 0.5, "resolution": 112, "flops": 1e8, "params": 1e6}, trial_start_tags("replay"))
        for epoch in (1, 2):
            tracker.log_metrics(run, {"top1": 0.5, "val_loss": 1.0, "train_loss": 1.0, "images_per_second": 100.0,
                                      "epoch_seconds": 1.0}, step=epoch)
        tracker.end_trial(run, trial_end_tags("completed", 2), {"epochs": 2}, step=2)
        cpu.append(time.process_time() - started)
    return statistics.median(cpu) * 1e3


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(one(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "skip"))
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    from tinyray.ui import Store, start_server

    folder = Path(tempfile.mkdtemp(prefix="tracking-calls-"))
    server = start_server(Store(f"sqlite:///{folder / 'server.db'}", (folder / "artifacts").as_uri()), port=0)
    try:
        backends = {"server": server.url, "sqlite": f"sqlite:///{folder / 'embedded.db'}"}
        results: dict[tuple[str, str], list[float]] = {}
        for number in range(rounds):
            for backend, uri in backends.items():
                for variant in ("searched", "skip"):
                    out = subprocess.run([sys.executable, __file__, "--one", uri, str(trials), variant],
                                         capture_output=True, text=True, check=True)
                    ms = float(out.stdout.strip().splitlines()[-1])
                    results.setdefault((backend, variant), []).append(ms)
                    print(f"round {number + 1} {backend:6} probes {variant:8} {ms:6.1f} ms a trial", flush=True)
        for backend in backends:
            searched, skipped = results[(backend, "searched")], results[(backend, "skip")]
            ratios = [a / b for a, b in zip(searched, skipped)]
            print(f"{backend}: probes searched {statistics.median(searched):.1f} ms a trial, skipped "
                  f"{statistics.median(skipped):.1f} ms (median of {rounds} rounds of {trials} trials; ratio per "
                  f"round {', '.join(f'{r:.2f}' for r in ratios)})")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
