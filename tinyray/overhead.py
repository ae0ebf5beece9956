"""``tinyray bench overhead``: where the wall clock of a real search goes, beside the training it exists for.

A search is worth its cost when its slots spend their time training. This benchmark runs ``tinyray search --json``
(the real trainer, every default unless given) as a child process, watches it, and splits its wall clock
(issue 15, item 5):

* **start-up**: from the launch to the start of the first trial (Python imports, Ray's start, the data, Tune);
* **trial phase**, in slot-seconds (``slots`` x its wall clock), from the first trial's start to the last epoch's
  end:

  - *epochs*: the trials' epochs, training and evaluation (each epoch's ``epoch_seconds``, timed in the trial);
  - *in trials*: the rest of each trial's own time (Tune's ``time_total_s`` less its epochs: building the network,
    reading the data, writing checkpoints and reporting);
  - *idle while trials remain*: slots with no trial before the last trial started (Tune placing a trial, starting
    or resetting its actor, the searcher's ``suggest``);
  - *tail*: idle slots after the last trial started, when nothing is left to start;
* **finish**: from the last epoch's end to the driver's exit (the front, the formula's GPs, MLflow, Ray's stop).

A trial's start is its first epoch's end less Tune's ``time_this_iter_s`` of that epoch, its end that start plus
its ``time_total_s`` (both from the trial's ``result.json``). Per trial, the report gives the issue's measure, the
wall clock beyond the trials' own time (``wall - sum(time_total_s) / slots``) over the trials, and its split into
the fixed part (start-up and finish, the same for 30 trials or 300) and the part that grows with the trials.
Utilisation is the trials' time over ``slots x wall`` (the issue's measure), and the epochs' alone.

CPU seconds are sampled (psutil, every ``interval`` seconds) for every process of the machine, by kind: the driver,
trial workers (``ray::`` actors), Ray's own processes (raylet, GCS, its agents), this benchmark, and the rest;
they show what competes with the trials for the cores.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyray.errors import UserError
from tinyray.files import TRIAL_FOLDER_PREFIX

#: The targets of issue 15, item 5: wall seconds per trial beyond the trials' own time, and utilisation.
TARGETS = {"per_trial_seconds": 0.3, "utilisation": 0.9}


@dataclass(frozen=True)
class OverheadConfig:
    """Options of the overhead benchmark: the search it runs (``tinyray search`` defaults otherwise).

    Attributes:
        budget: the search's FLOPs budget.
        trials: trials of the search.
        seed: the search's seed.
        out: folder of the search's results, its MLflow store and ``overhead.json``.
        args: further ``tinyray search`` options, passed as they are (e.g. ``["--max-epochs", "3"]``).
        interval: seconds between CPU samples (a process's last sample counts: one that ends between two loses
            at most this much).
    """

    budget: int = 200_000_000
    trials: int = 30
    seed: int = 0
    out: Path = Path("overhead-bench")
    args: tuple[str, ...] = ()
    interval: float = 1.0


# -- CPU by kind of process ---------------------------------------------------------------------------------------

RAY_SYSTEM = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "ray_client_server",
              "default_worker.py", "agent")


def process_kind(pid: int, driver: int, cmdline: list[str], name: str) -> str:
    """``driver``, ``trials``, ``ray``, ``bench`` or ``other`` for one process."""
    text = " ".join(cmdline) or name
    if pid == driver:
        return "driver"
    if pid == os.getpid():
        return "bench"
    if name.startswith("ray::") or text.startswith("ray::"):
        return "ray" if "IDLE" in text else "trials"
    if any(part in text for part in RAY_SYSTEM) or "/ray/" in text:
        return "ray"
    return "other"


class CpuSampler:
    """Cumulative CPU seconds of every process, kept by PID (its last sample), summed by :func:`process_kind`."""

    def __init__(self, driver: int, interval: float) -> None:
        self.driver, self.interval = driver, interval
        self.seen: dict[tuple[int, float], tuple[str, float]] = {}  # (pid, create time) -> (kind, cpu seconds)
        self.before: dict[tuple[int, float], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._machine_start = self._machine()
        self.machine: tuple[float, float] = (0.0, 0.0)
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _machine() -> tuple[float, float]:
        import psutil

        times = psutil.cpu_times()
        return times.idle + getattr(times, "iowait", 0.0), sum(times)

    def _sample(self) -> None:
        import psutil

        now = time.time()
        for process in psutil.process_iter(["pid", "create_time", "cpu_times"]):
            info = process.info
            if info["cpu_times"] is None:
                continue
            key = (info["pid"], info["create_time"] or 0.0)
            kind = self.seen.get(key, ("", 0.0))[0]
            # a process is told apart on first sight, and again while it is young and not yet a trial or the
            # driver: a worker that Ray forks shows its parent's name, then ``ray::IDLE``, then its trial's
            if kind not in ("trials", "driver", "bench") and (not kind or now - key[1] < 120):
                try:
                    kind = process_kind(info["pid"], self.driver, process.cmdline(), process.name())
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    kind = kind or "other"
            self.seen[key] = (kind, info["cpu_times"].user + info["cpu_times"].system)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> "CpuSampler":
        self._machine_start = self._machine()
        self._sample()
        self.before = dict(self.seen)  # what the processes already running had spent: not the search's
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        idle0, total0 = self._machine_start
        idle1, total1 = self._machine()
        self.machine = (total1 - total0 - (idle1 - idle0), total1 - total0)

    def by_kind(self) -> dict[str, float]:
        """CPU seconds spent while sampling, by kind of process."""
        totals = {kind: 0.0 for kind in ("trials", "driver", "ray", "bench", "other")}
        for key, (kind, seconds) in self.seen.items():
            totals[kind] += max(0.0, seconds - self.before.get(key, (kind, 0.0))[1])
        return totals


# -- the trials' own timing ---------------------------------------------------------------------------------------

def trial_times(results: Path) -> "Any":
    """One row a trial from its ``result.json``: start, end (unix seconds), own seconds (Tune's ``time_total_s``),
    epochs' seconds and number of epochs."""
    import pandas as pd

    from tinyray.scale import reported_epochs

    rows = []
    for path in sorted(results.glob(f"{TRIAL_FOLDER_PREFIX}*/result.json")):
        epochs = reported_epochs(path)
        if not epochs:
            continue
        epochs = list({int(e["training_iteration"]): e for e in epochs}.values())  # a restored trial repeats none
        first = min(epochs, key=lambda e: e["training_iteration"])
        last = max(epochs, key=lambda e: e["training_iteration"])
        start = float(first["epoch_end"]) - float(first["time_this_iter_s"])
        rows.append({"trial_id": first["trial_id"], "start": start, "end": start + float(last["time_total_s"]),
                     "own_seconds": float(last["time_total_s"]), "epochs": len(epochs),
                     "epoch_seconds": sum(float(e["epoch_seconds"]) for e in epochs)})
    return pd.DataFrame(rows, columns=["trial_id", "start", "end", "own_seconds", "epochs", "epoch_seconds"])


def _busy(starts: Any, ends: Any, low: float, high: float) -> float:
    import numpy as np

    return float(np.clip(np.minimum(ends, high) - np.maximum(starts, low), 0.0, None).sum())


def breakdown(trials: "Any", launched: float, exited: float, slots: int) -> dict[str, Any]:
    """Split a search's wall clock (``launched`` to ``exited``) over its trials' timing (:func:`trial_times`)."""
    if trials.empty:
        raise UserError("the search ran no trial that reported an epoch: nothing to break down")
    first_start = float(trials["start"].min())
    last_end = float(trials["end"].max())
    last_start = float(trials["start"].max())
    wall = exited - launched
    phase = last_end - first_start
    own = float(trials["own_seconds"].sum())
    epochs = float(trials["epoch_seconds"].sum())
    busy_before = _busy(trials["start"], trials["end"], first_start, last_start)
    busy_after = _busy(trials["start"], trials["end"], last_start, last_end)
    n = len(trials)
    startup = first_start - launched
    finish = exited - last_end
    beyond = wall - own / slots  # the issue's measure: wall clock beyond the trials' own time
    return {
        "trials": n, "slots": slots, "wall_seconds": wall,
        "startup_seconds": startup, "trial_phase_seconds": phase, "finish_seconds": finish,
        "slot_seconds": {
            "epochs": epochs, "in_trials": own - epochs,
            "idle_while_trials_remain": slots * (last_start - first_start) - busy_before,
            "tail": slots * (last_end - last_start) - busy_after,
        },
        "trials_own_seconds": own, "epoch_seconds": epochs,
        "per_trial_seconds": beyond / n,
        "per_trial_fixed_seconds": (startup + finish) / n,
        "per_trial_growing_seconds": (phase - own / slots) / n,
        "utilisation": own / (slots * wall), "utilisation_epochs": epochs / (slots * wall),
        "utilisation_trial_phase": own / (slots * phase) if phase > 0 else float("nan"),
    }


# -- the run ------------------------------------------------------------------------------------------------------

def _slots(results: Path) -> int:
    info = json.loads((results / "search.json").read_text())
    cpus = os.cpu_count() or 1
    per_trial = float(info.get("cpus_per_trial") or info.get("config", {}).get("cpus_per_trial") or 1)
    return max(1, int(cpus // per_trial))


def run_overhead(config: OverheadConfig) -> dict[str, Any]:
    """Run the search, watch it, and return the breakdown (also written to ``out/overhead.json``)."""
    from tinyray.cost import format_flops
    from tinyray.scale import Driver

    out = config.out.resolve()
    name = f"overhead-seed{config.seed}"
    if (out / name).exists():
        raise UserError(f"{out / name} exists: give another --out, or delete it to measure again")
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tinyray", "search", "--budget", format_flops(config.budget), "--trials",
               str(config.trials), "--seed", str(config.seed), "--name", name, "--storage", str(out),
               "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", "--json", *config.args]
    launched = time.time()
    driver = Driver.launch(command, dict(os.environ), out / f"{name}.stderr")
    sampler = CpuSampler(driver.process.pid, config.interval).start()
    status = driver.wait()
    exited = time.time()
    sampler.stop()
    if status != 0:
        tail = (out / f"{name}.stderr").read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"the search failed (exit {status}): {tail[0]}; its output is in {out / name}.stderr")
    results = out / name
    trials = trial_times(results)
    slots = _slots(results)
    result = breakdown(trials, launched, exited, slots)
    busy, total = sampler.machine
    cpu = sampler.by_kind()
    cpu["driver"] = max(cpu["driver"], driver.cpu_seconds)  # wait4's count includes the last moments
    result.update({
        "command": " ".join(["tinyray", *command[3:]]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(launched)),
        "cpu_seconds": cpu, "machine_busy": busy / total if total else float("nan"),
        "cpus": os.cpu_count(), "driver_peak_rss_bytes": driver.max_rss_bytes,
        "summary": {key: driver.summary().get(key) for key in ("front", "wall_seconds", "formula_note")},
        "targets": TARGETS,
    })
    (out / "overhead.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    trials.to_csv(out / "overhead_trials.csv", index=False)
    return result


def report(result: dict[str, Any]) -> str:
    """The breakdown as text."""
    slot = result["slot_seconds"]
    slots = result["slots"]
    phase_slots = slots * result["trial_phase_seconds"]

    def share(value: float) -> str:
        return f"{value:7.1f} slot-s  {100 * value / phase_slots:5.1f}%" if phase_slots else f"{value:7.1f}"

    cpu = result.get("cpu_seconds") or {}
    met = lambda ok: "met" if ok else "missed"  # noqa: E731
    lines = [
        f"real search overhead: {result['trials']} trials on {slots} slots"
        + (f" ({result['command']}, {result['date']})" if result.get("command") else ""),
        f"  wall clock                         {result['wall_seconds']:7.1f} s",
        f"    start-up (launch -> first trial) {result['startup_seconds']:7.1f} s",
        f"    trial phase                      {result['trial_phase_seconds']:7.1f} s = {phase_slots:.1f} slot-s:",
        f"      epochs (train + evaluate)      {share(slot['epochs'])}",
        f"      in trials, outside epochs      {share(slot['in_trials'])}  (network, data, checkpoints, reports)",
        f"      idle while trials remain       {share(slot['idle_while_trials_remain'])}  (placing trials, actors, suggest)",
        f"      idle in the tail               {share(slot['tail'])}  (nothing left to start)",
        f"    finish (last epoch -> exit)      {result['finish_seconds']:7.1f} s  (front, formula, MLflow, Ray's stop)",
        f"  per trial, wall beyond the trials' own time: {result['per_trial_seconds']:.2f} s "
        f"(fixed start-up + finish {result['per_trial_fixed_seconds']:.2f} s, growing with trials "
        f"{result['per_trial_growing_seconds']:.2f} s); target <= {TARGETS['per_trial_seconds']} s: "
        f"{met(result['per_trial_seconds'] <= TARGETS['per_trial_seconds'])}",
        f"  utilisation, trials' own time / (slots x wall): {result['utilisation']:.3f} (epochs alone "
        f"{result['utilisation_epochs']:.3f}; within the trial phase {result['utilisation_trial_phase']:.3f}); "
        f"target >= {TARGETS['utilisation']}: {met(result['utilisation'] >= TARGETS['utilisation'])}",
    ]
    if cpu:
        lines.append("  CPU seconds by process: " + ", ".join(f"{kind} {seconds:.1f}" for kind, seconds in cpu.items())
                     + f"; machine busy {result['machine_busy']:.2f} of {result['cpus']} cores")
    return "\n".join(lines)
