"""The search's Ray Tune callbacks, all in the driver: MLflow tracking, the progress line, the stop on a full disk.

* :class:`TrackingCallback` mirrors trials into nested MLflow runs through a :class:`tinyray.tracking.Tracker`.
  Ray's own ``MLflowLoggerCallback`` makes no parent run and starts a fresh run for each trial after a restore;
  this one keeps the trial -> run mapping in its state (``get_state``/``set_state``), which Tune saves with the
  experiment, so a resumed search logs into the same runs and never duplicates one.
* :class:`MonitorCallback` keeps a :class:`tinyray.progress.Progress` current and shows it.
* :class:`StopWhenDiskFull` stops the search at the first trial that ran out of disk.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from typing import Any, Callable, TextIO

from ray.tune import Callback

from tinyray.files import TRACKING_STATE_VERSION
from tinyray.progress import Progress
from tinyray.status import FAILED, trial_status
from tinyray.tracking import EPOCH_METRICS, Tracker, failure_reason, trial_end_tags, trial_run_name

log = logging.getLogger(__name__)


class TrackingCallback(Callback):
    """A Ray Tune callback that mirrors trials into nested MLflow runs.

    Args:
        tracker: the search's :class:`Tracker`.
        parent_run_id: the search's parent run.
        max_epochs: full fidelity; a trial that ends with fewer epochs was early-stopped.
        trial_params: ``callable(config) -> params`` describing a trial for its child run (``r``, ``d``, ``w``
            among them: the run is named by :func:`tinyray.tracking.trial_run_name`).
        tags: tags of every trial's run (``trainer``: ``train`` or ``replay``).
    """

    def __init__(self, tracker: Tracker, parent_run_id: str | None, max_epochs: int,
                 trial_params: Callable[[dict[str, Any]], dict[str, Any]],
                 tags: dict[str, str] | None = None) -> None:
        self.tracker = tracker
        self.tags = dict(tags or {})
        self.parent_run_id = parent_run_id
        self.max_epochs = max_epochs
        self.trial_params = trial_params
        self.runs: dict[str, str] = {}
        self.finished: dict[str, str] = {}
        self.steps: dict[str, int] = {}  # trial -> the last epoch logged
        self._earlier: set[str] = set()  # trials a driver before this one started (their runs may be ahead)
        self._checked: set[str] = set()  # of those, the ones whose last logged epoch was read back from MLflow
        self._final: dict[str, tuple[int, dict[str, Any]]] = {}  # trial -> its last epoch's metrics, not logged yet

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"steps": {}, "_earlier": set(), "_checked": set(), "_final": {}, **state})

    def _run(self, trial: Any) -> str | None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            if trial.trial_id in self.tracker.journal["trials"]:
                self._earlier.add(trial.trial_id)
            params = self.trial_params(trial.config)
            run_name = trial_run_name(trial.trial_id, params["r"], params["d"], params["w"])
            run_id = self.tracker.start_trial(self.parent_run_id, trial.trial_id, run_name, params, self.tags)
            if run_id is not None:  # offline: the journal has the trial, `tinyray publish` makes its run
                self.runs[trial.trial_id] = run_id
        return run_id

    def _new_epoch(self, trial_id: str, run_id: str | None, step: int) -> bool:
        """Whether epoch ``step`` of the trial is not logged yet. A resumed trial reports again the epochs that
        Tune's last snapshot missed (:func:`tinyray.tune.trainable.run_trial`); its run, made by an earlier driver,
        may hold them: its last logged epoch is read back once (one MLflow call a resumed trial)."""
        if trial_id in self._earlier and trial_id not in self._checked and run_id is not None:
            self._checked.add(trial_id)
            self.steps[trial_id] = max(self.steps.get(trial_id, 0), self.tracker.last_step(run_id) or 0)
        return step > self.steps.get(trial_id, 0)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Log a new epoch's metrics; a trial's last epoch (Tune marks it ``done``: the scheduler stopped it, or it
        reached full fidelity) is logged with the end of its run instead, in one MLflow call (:meth:`_close`)."""
        step = int(result.get("training_iteration", 0))
        run_id = self._run(trial)
        if not self._new_epoch(trial.trial_id, run_id, step):
            return
        metrics = {k: result[k] for k in EPOCH_METRICS if k in result}
        if result.get("done"):
            self._final[trial.trial_id] = (step, metrics)
            return
        self.tracker.log_metrics(run_id, metrics, step=step)
        self.steps[trial.trial_id] = step

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epochs = int((trial.last_result or {}).get("training_iteration", 0))
        self._close(trial, trial_status(epochs, self.max_epochs), epochs)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epochs = int((trial.last_result or {}).get("training_iteration", 0))
        self._close(trial, FAILED, epochs, failure_reason(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if is_disk_full(failure_reason(trial)):
            return  # the search stops (StopWhenDiskFull); the retry happens after a resume
        self.tracker.set_tags(self._run(trial), {"retries": int(getattr(trial, "num_failures", 0)),
                                                 "last_failure": failure_reason(trial)[:4000]})

    def _close(self, trial: Any, status: str, epochs: int, reason: str = "") -> None:
        run_id = self._run(trial)
        metrics: dict[str, Any] = {"epochs": epochs}
        final = self._final.pop(trial.trial_id, None)
        if final is not None and final[0] == epochs:
            metrics = {**final[1], **metrics}
        elif final is not None:
            self.tracker.log_metrics(run_id, final[1], step=final[0])
        self.tracker.end_trial(run_id, trial_end_tags(status, epochs, reason), metrics, step=epochs,
                               status="FAILED" if status == FAILED else "FINISHED")
        if final is not None:
            self.steps[trial.trial_id] = max(self.steps.get(trial.trial_id, 0), final[0])
        self.finished[trial.trial_id] = status

    def interrupted(self, expected: int) -> bool:
        """True if Tune stopped before ``expected`` trials had ended (Ctrl-C).

        Tune's ``fit()`` returns the same way after Ctrl-C as after the last trial, and its clean-up marks the
        stopped trials TERMINATED; only completed, early-stopped and failed trials reach :meth:`_close`.
        """
        return len(self.finished) < expected

    def get_state(self) -> dict:
        return {"version": TRACKING_STATE_VERSION, "parent_run_id": self.parent_run_id, "runs": dict(self.runs),
                "finished": dict(self.finished), "steps": dict(self.steps)}

    def set_state(self, state: dict) -> None:
        if state.get("version") != TRACKING_STATE_VERSION:
            log.warning("ignoring tracking state of version %s", state.get("version"))
            return
        self.runs = dict(state.get("runs", {}))
        self.finished = dict(state.get("finished", {}))
        self.steps = {key: int(value) for key, value in state.get("steps", {}).items()}
        self._earlier = set(self.runs)


class MonitorCallback(Callback):
    """A Tune callback that keeps ``progress`` current, prints it in ``mode`` and calls ``on_update``.

    Args:
        progress: the counters to update.
        mode: ``live`` (one redrawn line on a terminal, a line per change otherwise), ``json`` (one JSON object
            per change on stdout) or ``quiet``.
        on_update: called after every finished trial (the search logs hypervolume to MLflow there).
        stream: where ``live`` writes (stderr by default, so stdout stays for results).
    """

    def __init__(self, progress: Progress, mode: str = "live", on_update: Callable[[Progress], None] | None = None,
                 stream: TextIO | None = None) -> None:
        self.progress = progress
        self.mode = mode
        self.on_update = on_update
        self.stream = stream
        self.tty = self.out().isatty()
        self._last_draw = 0.0
        self._seen: set[str] = set()
        self._running = False

    def out(self) -> TextIO:
        # Tune pickles its callbacks with the experiment: stderr is looked up when writing, never held.
        return self.stream or sys.stderr

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stream": None}

    def _show(self, event: str, force: bool = False) -> None:
        if self.mode == "json":
            print(json.dumps({"event": event, **self.progress.as_dict()}), flush=True)
        elif self.mode == "live" and (force or not self.tty or time.monotonic() - self._last_draw > 0.5):
            end = "" if self.tty else "\n"
            prefix = "\r\033[K" if self.tty else ""
            self.out().write(prefix + self.progress.line() + end)
            self.out().flush()
            self._last_draw = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.progress.running = sum(1 for t in trials if t.status == "RUNNING")
        if self.tty:
            self._show("start")
        elif self.mode == "json" and not self._running:
            # once a driver: trials run (a resumed search's restore is over; `tinyray bench scale` times it)
            self._show("running")
        self._running = True

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.tty:
            self._show("result")

    def _finish(self, trials: list, trial: Any, failed: bool) -> None:
        if trial.trial_id in self._seen:
            return
        self._seen.add(trial.trial_id)
        last = trial.last_result or {}
        status = trial_status(int(last.get("training_iteration", 0)), self.progress.max_epochs, error=failed)
        self.progress.count(status, last)
        self.progress.running = sum(1 for t in trials if t.status == "RUNNING" and t is not trial)
        if self.on_update is not None:
            self.on_update(self.progress)
        self._show("failed" if failed else "complete", force=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trials, trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say_failure(trial, "")
        self._finish(trials, trial, failed=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if is_disk_full(failure_reason(trial)):
            return  # the search stops in one line of its own (StopWhenDiskFull, tinyray.search)
        self._say_failure(trial, ", retrying from its last checkpoint")

    def _say_failure(self, trial: Any, then: str) -> None:
        # one line, whatever the mode (Tune's own traceback is off: TUNE_PRINT_ALL_TRIAL_ERRORS=0 in search)
        where = getattr(trial, "error_file", None) or getattr(trial, "path", "")
        if self.mode == "live" and self.tty:
            self.out().write("\r\033[K")
        self.out().write(f"trial {trial.trial_id} failed: {failure_reason(trial)[:300]}{then} (full trace: {where})\n")
        self.out().flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.mode == "live" and self.tty:
            self.out().write("\n")
            self.out().flush()


class DiskFull(Exception):
    """A trial (or the driver) ran out of disk space: the search stops (see :func:`tinyray.search.run_search`)."""


def is_disk_full(text: str) -> bool:
    return "No space left on device" in text or "[Errno 28]" in text


class StopWhenDiskFull(Callback):
    """A Tune callback that stops the search at the first trial that ran out of disk.

    Every later checkpoint would fail the same way (and retrying would burn each trial's retries). It stops Tune as
    Ctrl-C does (SIGUSR1, which Tune's run loop always handles in the main thread): the loop ends after this step
    and Tune writes one last snapshot, if the disk still allows; a ``--resume`` restores it once there is space
    again. Since Tune snapshots only every other checkpoint of a trial (:data:`tinyray.tune.runtime.KEEP_CHECKPOINTS`),
    stopping without that snapshot would leave Tune's record of the trials finished since the last one behind their
    files (written in place, :func:`tinyray.tune.runtime.trial_files_folder`) until the resume. Where Tune handles no
    SIGUSR1 (a search outside the main thread), it raises :class:`DiskFull` at once, as before.
    """

    #: why it stopped the search (Tune wraps the exception in a TuneError of traceback text)
    reason = ""

    def _check(self, trial: Any, retrying: bool) -> None:
        reason = failure_reason(trial)
        if not is_disk_full(reason):
            return
        first, self.reason = not self.reason, reason
        if not retrying or not callable(getattr(signal, "SIGUSR1", None) and signal.getsignal(signal.SIGUSR1)):
            # a trial with no retry left is already ERROR in Tune: a snapshot now would keep it failed for good
            raise DiskFull(reason)
        if first:
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial, retrying=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial, retrying=False)


class QuietWhenFull(logging.Filter):
    """A filter for Tune's logger: once ``guard`` saw a full disk, Tune's error about its last snapshot is dropped."""

    def __init__(self, guard: StopWhenDiskFull) -> None:
        super().__init__()
        self.guard = guard

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.guard.reason and "snapshotting failed" in record.getMessage())

