"""``tinyray bench scale``: what the driver costs when a search runs hundreds of trials on a cluster.

A full search (``tinyray search --trainer replay``, as a child process: the *driver*) runs on a simulated cluster
(:mod:`tinyray.simcluster`: ``nodes`` raylets declaring ``gpus_per_node`` GPUs each) with the replay trainer
(:mod:`tinyray.replay`), once per MLflow backend (the embedded sqlite store, and a real ``mlflow server`` started
and stopped by this benchmark). Halfway (``resume_at`` trials done) the driver gets Ctrl-C (SIGINT), and the search
is continued with ``tinyray search --resume``. Measured:

* **driver CPU per trial**: user + system seconds of the driver processes (``os.wait4``), over the trials; split
  (from samples taken with psutil, interpolated at the drivers' events) into each driver's start-up (launch to its
  first running trial), its trial phase (to its last trial's end) and its finish (the front, the formula, the
  report; or the stop after Ctrl-C); and per window of trials done, counting trial phases only, to show whether
  the cost per trial grows;
* **peak driver memory** (the larger ``ru_maxrss`` of the two drivers), and RSS as trials go;
* **wall-clock overhead per trial against the ideal schedule**: the trial phase's wall clock (first epoch start
  to last epoch end, less the interruption) minus the ideal makespan (the epochs' seconds packed on every slot,
  ``sum / slots``), over the trials;
* **slots busy**: the fraction of slot-seconds spent in epochs from the first epoch to the start of the last trial
  (while trials remain to be started), the interruption left out;
* **resume**: seconds from launching ``tinyray search --resume`` to its first running trial;
* **the MLflow server's CPU** (the ``server`` backend): user + system seconds of ``mlflow server`` and its workers
  over the search, per trial: with a server, the store's work leaves the driver, and is counted here instead;
* **sizes** of the results folder and of the MLflow store, as trials go;
* **completeness**: every trial one row of ``trials.csv`` and one MLflow run, the front, the registered formula.

Each epoch's position in time comes from the trial itself (``epoch_end`` and ``epoch_seconds`` in its Tune
results, ``trial_*/result.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinyray.errors import UserError
from tinyray.files import TRIAL_FOLDER_PREFIX, read_results_csv

BACKENDS = ("sqlite", "server")
#: the targets of issue 20
TARGETS = {"driver_ms_per_trial": 50.0, "growth": 1.5, "busy": 0.95, "resume_seconds": 30.0}


@dataclass(frozen=True)
class ScaleConfig:
    """Options of the scale benchmark.

    Attributes:
        trials: trials of the search.
        nodes: raylets of the simulated cluster (the head included).
        gpus_per_node: GPUs each raylet declares.
        gpus_per_trial, cpus_per_trial: resources of one trial (each node declares the CPUs its GPU slots need).
        max_epochs, grace_period, reduction_factor: the search's fidelity and ASHA settings.
        replay_speed: seconds a replayed trial sleeps per recorded second.
        budget: FLOPs budget of the search.
        searcher, scheduler: the search's.
        pop_size: NSGA-III generation; default the cluster's slots (a smaller generation idles slots by design).
        generations_ahead: NSGA-III generations bred ahead (``tinyray search --generations-ahead``; 2 by default
            here, so that freed slots do not wait for a generation's last trial: docs/benchmarks.md, session 8).
        tracking: MLflow backends, each a search of its own: ``sqlite`` and/or ``server``.
        resume_at: trials done when the driver is interrupted and resumed; default half; 0 for no interruption.
        seed: the search's seed.
        out: folder of the runs and of ``scale.json``, ``scale_samples.csv``, ``scale.png``.
        interval: seconds between samples of the driver.
    """

    trials: int = 500
    nodes: int = 8
    gpus_per_node: float = 4
    gpus_per_trial: float = 0.25
    cpus_per_trial: float = 1.0
    max_epochs: int = 2
    grace_period: int = 1
    reduction_factor: int = 3
    replay_speed: float = 0.1
    budget: int = 200_000_000
    searcher: str = "nsga3"
    scheduler: str = "moasha"
    pop_size: int | None = None
    generations_ahead: int = 2
    tracking: tuple[str, ...] = BACKENDS
    resume_at: int | None = None
    seed: int = 0
    out: Path = Path("scale-bench")
    interval: float = 1.0

    @property
    def slots_per_node(self) -> int:
        """Trials one node holds at once (its GPUs divided by a trial's share)."""
        return int(round(self.gpus_per_node / self.gpus_per_trial)) if self.gpus_per_trial > 0 else 1

    @property
    def slots(self) -> int:
        return self.nodes * self.slots_per_node

    @property
    def interrupt_at(self) -> int:
        return self.trials // 2 if self.resume_at is None else self.resume_at


def validate(config: ScaleConfig) -> None:
    """Raise :class:`UserError` for options the benchmark cannot run (before anything starts)."""
    if config.gpus_per_trial <= 0 or config.gpus_per_node <= 0:
        raise UserError("bench scale simulates GPUs: give --gpus-per-node and --gpus-per-trial above 0")
    if config.gpus_per_trial > config.gpus_per_node:
        raise UserError(f"--gpus-per-trial {config.gpus_per_trial:g} is more than a node's {config.gpus_per_node:g} "
                        f"GPUs: lower it or raise --gpus-per-node")
    unknown = [name for name in config.tracking if name not in BACKENDS]
    if unknown or not config.tracking:
        raise UserError(f"--tracking {','.join(config.tracking)!r} must be a comma-separated subset of "
                        f"{','.join(BACKENDS)}")
    if not 0 <= config.interrupt_at < config.trials:
        raise UserError(f"--resume-at {config.interrupt_at} must be below --trials {config.trials} (0: no resume)")
    if (config.out / "scale.json").exists():
        raise UserError(f"{config.out} already holds a scale benchmark (scale.json): choose another --out")
    from tinyray.replay import check_replay

    check_replay(config.max_epochs, config.replay_speed)


# ---------------------------------------------------------------------------------------------------------------
# One search, watched
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Driver:
    """One ``tinyray search --json`` child process, with what it printed and its resources once it ended."""

    process: subprocess.Popen
    launched: float
    reader: threading.Thread | None = None
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0
    max_rss_bytes: int = 0
    returncode: int | None = None
    out: Path | None = None  # where its stdout is copied (beside its stderr: driver.out)

    @classmethod
    def launch(cls, command: list[str], env: dict[str, str], stderr: Path) -> "Driver":
        with open(stderr, "a") as err:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        driver = cls(process, time.time())
        driver.out = stderr.with_suffix(".out")
        driver.reader = threading.Thread(target=driver._read, daemon=True)
        driver.reader.start()
        return driver

    def _read(self) -> None:
        # its stdout is also copied to ``out`` for a post-mortem: the events and the summary
        with open(self.out, "a", buffering=1) if self.out is not None else contextlib.nullcontext() as copy:
            for line in self.process.stdout:
                self.lines.append(line)
                if copy is not None:
                    copy.write(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and "event" in event:
                    self.events.append((time.time(), event))

    @property
    def done(self) -> int:
        return int(self.events[-1][1].get("done", 0)) if self.events else 0

    def first(self, name: str) -> float | None:
        return next((at for at, event in self.events if event.get("event") == name), None)

    def running(self) -> bool:
        """Whether the driver still runs (reaps it, with :meth:`wait`'s bookkeeping, once it ended)."""
        return self.returncode is None and not self._reap(os.WNOHANG)

    def wait(self) -> int:
        """Reap the driver with ``os.wait4``: its exit status, CPU seconds and peak RSS (Linux: kilobytes)."""
        if self.returncode is None:
            self._reap(0)
        if self.reader is not None:
            self.reader.join(timeout=30)  # the rest of its output (the summary line)
        return self.returncode

    def _reap(self, options: int) -> bool:
        # os.wait4 rather than Popen.poll/wait, which reap the process and drop its resource usage
        pid, status, usage = os.wait4(self.process.pid, options)
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.returncode
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        self.max_rss_bytes = usage.ru_maxrss * 1024
        return True

    def summary(self) -> dict[str, Any]:
        for line in reversed(self.lines):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and "event" not in value:
                return value
        return {}


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def mlflow_bytes(backend: str, root: Path) -> int:
    """Bytes of a backend's MLflow store: the search's sqlite file and artifact folder, or the server's folder."""
    if backend == "server":
        return folder_bytes(root / "server")
    return sum(_size(path) for path in root.glob("mlflow.db*")) + folder_bytes(root / "mlartifacts")


def _size(path: Path) -> int:
    """Bytes of a file, 0 if it went away (sqlite's ``mlflow.db-journal`` comes and goes with each transaction)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _sample(driver: Driver, cpu_offset: float) -> tuple[float, int] | None:
    import psutil

    try:
        process = psutil.Process(driver.process.pid)
        times = process.cpu_times()
        return cpu_offset + times.user + times.system, process.memory_info().rss
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def _watch(driver: Driver, config: ScaleConfig, cpu_offset: float, sizes: dict[str, Any], samples: list[dict],
           stop_at: int | None, number: int = 0, done_offset: int = 0) -> float | None:
    """Sample ``driver`` until it exits (or SIGINT it once ``stop_at`` trials are done); when the SIGINT went.

    A resumed driver counts only the trials it ended itself: ``done_offset`` (the earlier drivers' trials) and
    ``cpu_offset`` (their CPU seconds) make the samples' ``done`` and ``driver_cpu_seconds`` the search's.
    """
    interrupted = None
    tick = 0
    while driver.running():
        measured = _sample(driver, cpu_offset)
        if measured is not None:
            row = {"time": time.time(), "driver": number, "done": done_offset + driver.done,
                   "driver_cpu_seconds": measured[0], "driver_rss_bytes": measured[1]}
            if tick % 5 == 0:
                row.update({f"{key}_bytes": size() for key, size in sizes.items()})
            samples.append(row)
        tick += 1
        if stop_at and interrupted is None and driver.done >= stop_at:
            driver.process.send_signal(signal.SIGINT)
            interrupted = time.time()
        time.sleep(config.interval)
    return interrupted


def _search_command(config: ScaleConfig, address: str, storage: Path, name: str, tracking_uri: str | None,
                    resume: bool) -> list[str]:
    from tinyray.cost import format_flops

    command = [sys.executable, "-m", "tinyray", "search", "--name", name, "--storage", str(storage),
               "--address", address, "--json"]
    if tracking_uri:
        command += ["--tracking-uri", tracking_uri]
    if resume:
        return command + ["--resume"]
    return command + [
        "--budget", format_flops(config.budget), "--trainer", "replay", "--replay-speed", str(config.replay_speed),
        "--trials", str(config.trials), "--max-epochs", str(config.max_epochs),
        "--grace-period", str(config.grace_period), "--reduction-factor", str(config.reduction_factor),
        "--searcher", config.searcher, "--scheduler", config.scheduler, "--seed", str(config.seed),
        "--pop-size", str(config.pop_size or max(4, config.slots)),
        *(["--generations-ahead", str(config.generations_ahead)] if config.searcher == "nsga3" else []),
        "--gpus-per-trial", str(config.gpus_per_trial), "--cpus-per-trial", str(config.cpus_per_trial),
    ]


def run_backend(config: ScaleConfig, address: str, env: dict[str, str], backend: str) -> dict[str, Any]:
    """Run the search once with MLflow ``backend``, interrupted and resumed at ``config.interrupt_at``; measure it."""
    from tinyray.tracking import local_tracking_uri

    root = (config.out / backend).resolve()
    root.mkdir(parents=True, exist_ok=True)
    name = f"scale{config.trials}"
    server = None
    if backend == "server":
        from tinyray.ui import Store, start_server

        (root / "server").mkdir(exist_ok=True)
        server = start_server(Store(f"sqlite:///{root / 'server' / 'mlflow.db'}",
                                    (root / "server" / "artifacts").as_uri()), port=0)
        tracking_uri = server.url
        server_cpu_start = tree_cpu_seconds(server.process.pid)
    else:
        tracking_uri = None
    sizes = {"results": lambda: folder_bytes(root / name), "mlflow": lambda: mlflow_bytes(backend, root)}
    stderr = root / "driver.log"
    samples: list[dict[str, Any]] = []
    try:
        first = Driver.launch(_search_command(config, address, root, name, tracking_uri, False), env, stderr)
        interrupted = _watch(first, config, 0.0, sizes, samples, config.interrupt_at)
        first.wait()
        drivers = [first]
        resume_seconds = None
        if interrupted is not None:
            if first.returncode not in (130, 0):
                raise UserError(f"the interrupted search exited with {first.returncode}: see {stderr}")
            second = Driver.launch(_search_command(config, address, root, name, tracking_uri, True), env, stderr)
            _watch(second, config, first.cpu_seconds, sizes, samples, None, number=1, done_offset=first.done)
            second.wait()
            drivers.append(second)
            running = second.first("running")
            resume_seconds = running - second.launched if running is not None else None
        last = drivers[-1]
        if last.returncode != 0:
            tail = stderr.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"the {backend} search failed (exit {last.returncode}); the last line of its log: "
                            f"{tail[0][:300]} (log: {stderr}, output: {stderr.with_suffix('.out')})")
        summary = last.summary()
        measured = _measure(config, root / name, drivers, interrupted, summary, tracking_uri or local_tracking_uri(root))
        measured.update(_driver_phases(drivers, samples))
        if server is not None:  # the store's work moves to the server: its CPU over the search, beside the driver's
            server_cpu = tree_cpu_seconds(server.process.pid) - server_cpu_start
            measured.update(server_cpu_seconds=server_cpu, server_ms_per_trial=1000 * server_cpu / config.trials)
    finally:
        if server is not None:
            server.stop()
    measured.update(backend=backend, resume_seconds=resume_seconds, results_bytes=folder_bytes(root / name),
                    mlflow_bytes=mlflow_bytes(backend, root),
                    interrupted_at_done=config.interrupt_at if interrupted is not None else None)
    for row in samples:
        row["backend"] = backend
    measured["samples"] = samples
    return measured


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its living descendants (``mlflow server`` and its workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


#: the progress events (``tinyray search --json``) that end a trial
TRIAL_END_EVENTS = ("complete", "failed")


def _driver_phases(drivers: list[Driver], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each driver's CPU seconds in its start-up, trial phase and finish, and the CPU per trial of the trial phases.

    The start-up runs from launch to the driver's first running trial (its ``running`` event), the trial phase to
    its last trial's end (its last ``complete`` or ``failed`` event) and the finish to its exit. The CPU at those
    instants is interpolated between the driver's samples, its launch (no CPU yet) and its exit (``os.wait4``).
    Labels every sample with its ``phase`` (``start-up``, ``trials``, ``finish``).
    """
    import numpy as np

    offset = 0.0
    startup, trial_phase, finish, trial_done = [], [], [], 0
    for number, driver in enumerate(drivers):
        rows = [row for row in samples if row.get("driver", 0) == number]
        # the exit: after the last event and the last sample
        exited = max([driver.launched, *(at for at, _ in driver.events[-1:]), *(row["time"] for row in rows)]) + 1e-3
        times = np.array([driver.launched, *(row["time"] for row in rows), exited])
        cpus = np.array([offset, *(row["driver_cpu_seconds"] for row in rows), offset + driver.cpu_seconds])
        running = driver.first("running")
        last_end = max((at for at, event in driver.events if event.get("event") in TRIAL_END_EVENTS), default=None)
        if running is None or last_end is None:
            startup.append(driver.cpu_seconds)
            trial_phase.append(0.0)
            finish.append(0.0)
        else:
            at_running, at_end = np.interp([running, last_end], times, cpus)
            startup.append(float(at_running - offset))
            trial_phase.append(float(at_end - at_running))
            finish.append(float(offset + driver.cpu_seconds - at_end))
            trial_done += driver.done
        for row in rows:
            row["phase"] = ("start-up" if running is None or row["time"] < running
                            else "trials" if last_end is not None and row["time"] <= last_end else "finish")
        offset += driver.cpu_seconds
    return {
        "driver_startup_cpu_seconds": startup, "driver_trial_phase_cpu_seconds": trial_phase,
        "driver_finish_cpu_seconds": finish,
        "driver_ms_per_trial_running": 1000 * sum(trial_phase) / trial_done if trial_done else None,
    }


def reported_epochs(path: Path) -> list[dict[str, Any]]:
    """The results of a trial's ``result.json`` (one JSON line a report) that report an epoch (``epoch_end``);
    a line that is not JSON (cut short by a kill) is skipped."""
    results = []
    for line in path.read_text().splitlines():
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if "epoch_end" in result:
            results.append(result)
    return results


def _epochs(results: Path) -> "Any":
    """Every reported epoch of every trial, from the trials' ``result.json``: trial, epoch, start, end (unix s)."""
    import pandas as pd

    rows = []
    for path in results.glob(f"{TRIAL_FOLDER_PREFIX}*/result.json"):
        for result in reported_epochs(path):
            rows.append({"trial_id": result.get("trial_id"), "epoch": result.get("training_iteration"),
                         "end": float(result["epoch_end"]), "seconds": float(result["epoch_seconds"])})
    frame = pd.DataFrame(rows, columns=["trial_id", "epoch", "end", "seconds"])
    frame["start"] = frame["end"] - frame["seconds"]
    return frame.drop_duplicates(["trial_id", "epoch"], keep="last")


def _overlap(starts: Any, ends: Any, low: float, high: float) -> float:
    import numpy as np

    return float(np.clip(np.minimum(ends, high) - np.maximum(starts, low), 0.0, None).sum())


def _measure(config: ScaleConfig, results: Path, drivers: list[Driver], interrupted: float | None,
             summary: dict[str, Any], tracking_uri: str) -> dict[str, Any]:

    epochs = _epochs(results)
    first_start = float(epochs["start"].min())
    last_end = float(epochs["end"].max())
    last_trial_start = float(epochs.groupby("trial_id")["start"].min().max())
    gap = (0.0, 0.0)
    if interrupted is not None and len(drivers) > 1:
        resumed = epochs[epochs["start"] >= interrupted]["start"]
        gap = (interrupted, float(resumed.min()) if len(resumed) else interrupted)
    gap_seconds = gap[1] - gap[0]
    slot_seconds = float(epochs["seconds"].sum())
    # busy: epochs' slot-seconds while trials remained to be started, the interruption left out
    window = last_trial_start - first_start - gap_seconds
    busy_seconds = _overlap(epochs["start"], epochs["end"], first_start, last_trial_start) - _overlap(
        epochs["start"], epochs["end"], *gap)
    busy = busy_seconds / (config.slots * window) if window > 0 else float("nan")
    ideal = slot_seconds / config.slots
    trial_wall = last_end - first_start - gap_seconds
    trials = read_results_csv(results / "trials.csv")
    cpu = sum(driver.cpu_seconds for driver in drivers)
    complete = _completeness(trials, summary, tracking_uri, config)
    return {
        "trials": len(trials), "slots": config.slots,
        "driver_cpu_seconds": cpu, "driver_ms_per_trial": 1000 * cpu / max(1, len(trials)),
        "driver_cpu_seconds_by_driver": [driver.cpu_seconds for driver in drivers],
        "driver_wall_seconds": sum((driver.events[-1][0] if driver.events else driver.launched) - driver.launched
                                   for driver in drivers),
        "peak_driver_rss_bytes": max(driver.max_rss_bytes for driver in drivers),
        "epochs": len(epochs), "epoch_slot_seconds": slot_seconds, "ideal_seconds": ideal,
        "trial_phase_seconds": trial_wall, "interruption_seconds": gap_seconds,
        "overhead_ms_per_trial": 1000 * (trial_wall - ideal) / max(1, len(trials)),
        "busy": busy, **complete,
    }


def _completeness(trials: Any, summary: dict[str, Any], tracking_uri: str, config: ScaleConfig) -> dict[str, Any]:
    """Every trial once in ``trials.csv`` and once in MLflow, the front, the registered formula."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([summary["experiment_id"]], filter_string="tags.`tinyray.kind` = 'trial'",
                              max_results=50000)
    run_trials = [run.data.tags.get("trial_id") for run in runs]
    formula = summary.get("formula") or {}
    return {
        "trials_unique": int(trials["trial_id"].nunique()),
        "all_replay": bool((trials["trainer"] == "replay").all()) and summary.get("trainer") == "replay",
        "mlflow_trial_runs": len(runs), "mlflow_trials_unique": len(set(run_trials)),
        "mlflow_matches_trials": set(run_trials) == set(trials["trial_id"]),
        "replay_tagged_runs": sum(run.data.tags.get("trainer") == "replay" for run in runs),
        "front_size": len(summary.get("front") or []), "formula_model_uri": formula.get("model_uri"),
        "formula_note": summary.get("formula_note"),
        "complete": (len(trials) == config.trials and trials["trial_id"].nunique() == config.trials
                     and len(runs) == config.trials and set(run_trials) == set(trials["trial_id"])),
    }


# ---------------------------------------------------------------------------------------------------------------
# The whole benchmark
# ---------------------------------------------------------------------------------------------------------------


def growth(samples: "Any", trials: int, windows: int = 5) -> "Any":
    """Driver CPU per trial in ``windows`` equal windows of trials done (ms per trial), with RSS and sizes at
    each window's end: one row a window.

    Only the trial phases count (samples whose ``phase`` is ``trials``, if the samples say): the CPU between two
    consecutive samples of one driver goes to the window of the later sample's trials done, so neither a driver's
    start-up, nor its finish, nor an interruption enters a window.
    """
    import numpy as np
    import pandas as pd

    samples = samples.reset_index(drop=True)
    driver = samples["driver"] if "driver" in samples else pd.Series(0, index=samples.index)
    phase = samples["phase"] if "phase" in samples else pd.Series("trials", index=samples.index)
    steps = pd.DataFrame({
        "done": samples["done"], "d_done": samples["done"].diff(), "d_cpu": samples["driver_cpu_seconds"].diff(),
        "counts": (driver == driver.shift()) & (phase == "trials") & (phase.shift() == "trials"),
    })
    steps = steps[steps["counts"]]
    rows = []
    edges = np.linspace(0, trials, windows + 1).round().astype(int)
    for low, high in zip(edges[:-1], edges[1:]):
        inside = steps[(steps["done"] > low) & (steps["done"] <= high)]
        done = float(inside["d_done"].sum())
        cpu = float(inside["d_cpu"].sum())
        sized = samples[samples["done"] <= high].dropna(subset=["results_bytes"]).tail(1)
        rows.append({"from": int(low), "to": int(high), "ms_per_trial": 1000 * cpu / done if done > 0 else np.nan,
                     "rss_mb": float(samples[samples["done"] <= high]["driver_rss_bytes"].max()) / 2**20,
                     "results_mb": float(sized["results_bytes"].iloc[0]) / 2**20 if len(sized) else np.nan,
                     "mlflow_mb": float(sized["mlflow_bytes"].iloc[0]) / 2**20 if len(sized) else np.nan})
    return pd.DataFrame(rows)


def run_scale(config: ScaleConfig) -> dict[str, Any]:
    """Start the simulated cluster, run the search once per backend, stop the cluster; write and return the
    results (``scale.json``, ``scale_samples.csv``, ``scale.png`` in ``config.out``)."""
    import pandas as pd

    from tinyray.simcluster import SimulatedCluster

    validate(config)
    config.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    cpus_per_node = config.slots_per_node * config.cpus_per_trial
    runs = []
    with SimulatedCluster(config.nodes, config.gpus_per_node, cpus_per_node) as cluster:
        for backend in config.tracking:
            runs.append(run_backend(config, cluster.address, cluster.env, backend))
    samples = pd.DataFrame([row for run in runs for row in run.pop("samples")])
    for run in runs:
        rows = samples[samples["backend"] == run["backend"]]
        run["growth"] = growth(rows, config.trials).to_dict(orient="records") if len(rows) else []
        table = pd.DataFrame(run["growth"])
        valid = table["ms_per_trial"].dropna() if len(table) else table
        run["growth_ratio"] = float(valid.iloc[-1] / valid.iloc[0]) if len(valid) > 1 and valid.iloc[0] > 0 else None
        run["targets"] = {
            "driver_ms_per_trial": run["driver_ms_per_trial"] <= TARGETS["driver_ms_per_trial"],
            "driver_ms_per_trial_running": (run.get("driver_ms_per_trial_running") is not None
                                            and run["driver_ms_per_trial_running"] <= TARGETS["driver_ms_per_trial"]),
            "flat": run["growth_ratio"] is not None and run["growth_ratio"] <= TARGETS["growth"],
            "busy": run["busy"] >= TARGETS["busy"],
            "resume": run["resume_seconds"] is not None and run["resume_seconds"] <= TARGETS["resume_seconds"],
            "complete": run["complete"],
        }
    config_json = {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(config).items()}
    result = {"config": config_json, "slots": config.slots, "wall_seconds": time.time() - started, "runs": runs,
              "targets": TARGETS}
    samples.to_csv(config.out / "scale_samples.csv", index=False)
    plot_growth(samples, config.out / "scale.png", config)
    (config.out / "scale.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def plot_growth(samples: "Any", path: Path, config: ScaleConfig) -> Path:
    """Driver CPU, driver RSS, results folder and MLflow store against trials done, one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=100)
    panels = [("driver_cpu_seconds", 1, "driver CPU, s"), ("driver_rss_bytes", 2**20, "driver RSS, MB"),
              ("results_bytes", 2**20, "results folder, MB"), ("mlflow_bytes", 2**20, "MLflow store, MB")]
    for ax, (column, scale, label) in zip(axes.flat, panels):
        for backend, rows in samples.groupby("backend"):
            rows = rows.dropna(subset=[column]) if column in rows else rows.iloc[0:0]
            ax.plot(rows["done"], rows[column] / scale, ".-", markersize=2, label=backend)
        ax.set_xlabel("trials done")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle(f"tinyray bench scale: {config.trials} replayed trials, {config.nodes} nodes x "
                 f"{config.gpus_per_node:g} GPUs, {config.gpus_per_trial:g} GPU a trial ({config.slots} slots)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _ms(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1f} ms"


def report(result: dict[str, Any]) -> str:
    """The benchmark's numbers as text, one block per backend, each target marked met or MISSED."""
    lines = [f"tinyray bench scale: {result['config']['trials']} trials on {result['config']['nodes']} simulated "
             f"nodes, {result['slots']} slots; {result['wall_seconds'] / 60:.1f} min"]
    for run in result["runs"]:
        mark = {key: "met" if ok else "MISSED" for key, ok in run["targets"].items()}
        resume = f"{run['resume_seconds']:.1f} s" if run["resume_seconds"] is not None else "not measured"
        lines += [
            f"[{run['backend']}] driver CPU {run['driver_ms_per_trial']:.1f} ms a trial ({mark['driver_ms_per_trial']}, "
            f"target <= {TARGETS['driver_ms_per_trial']:g}); growth last/first window "
            f"{run['growth_ratio'] if run['growth_ratio'] is None else round(run['growth_ratio'], 2)} ({mark['flat']})",
            f"  while trials run {_ms(run.get('driver_ms_per_trial_running'))} a trial "
            f"({mark.get('driver_ms_per_trial_running', '?')}); start-up "
            f"{' + '.join(f'{s:.1f}' for s in run.get('driver_startup_cpu_seconds', []))} s, finish "
            f"{' + '.join(f'{s:.1f}' for s in run.get('driver_finish_cpu_seconds', []))} s of CPU (by driver)"
            + (f"; the MLflow server's own CPU {run['server_ms_per_trial']:.1f} ms a trial, not in the driver's"
               if run.get("server_ms_per_trial") is not None else ""),
            f"  slots busy {run['busy']:.1%} ({mark['busy']}, target >= {TARGETS['busy']:.0%}); overhead "
            f"{run['overhead_ms_per_trial']:.0f} ms a trial over the ideal schedule ({run['ideal_seconds']:.1f} s ideal, "
            f"{run['trial_phase_seconds']:.1f} s measured)",
            f"  resume after {run['interrupted_at_done']} trials: {resume} ({mark['resume']}, target <= "
            f"{TARGETS['resume_seconds']:g} s); peak driver RSS {run['peak_driver_rss_bytes'] / 2**20:.0f} MB",
            f"  results folder {run['results_bytes'] / 2**20:.1f} MB, MLflow store {run['mlflow_bytes'] / 2**20:.1f} MB; "
            f"complete: {run['complete']} ({run['trials']} trials, {run['mlflow_trial_runs']} MLflow runs, front "
            f"{run['front_size']}, formula {run['formula_model_uri'] or run['formula_note']})",
        ]
        for row in run["growth"]:
            lines.append(f"    trials {row['from']:>4}-{row['to']:<4} {row['ms_per_trial']:7.1f} ms/trial  RSS "
                         f"{row['rss_mb']:6.0f} MB  results {row['results_mb']:7.1f} MB  MLflow {row['mlflow_mb']:7.1f} MB")
    return "\n".join(lines)
