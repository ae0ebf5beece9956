"""What a running search shows: a live status line (or JSON lines, or nothing) and the parent run's progress.

The monitor is a Ray Tune callback in the driver. Each time a trial ends it recomputes the front of the
full-fidelity trials and its hypervolume (:mod:`tinyray.front`), logs ``hypervolume``, ``trials_done`` and
``front_size`` to the search's parent MLflow run (step = trials done), and redraws the status line.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import numpy as np

from tinyray.front import hypervolume, pareto_mask

MODES = ("live", "quiet", "json")


@dataclass
class Progress:
    """Counts of a search's trials, and its front so far (completed trials only)."""

    budget: float
    max_epochs: int
    started: float = field(default_factory=time.monotonic)
    running: int = 0
    completed: int = 0
    stopped: int = 0
    failed: int = 0
    epochs: int = 0
    points: list[tuple[float, float]] = field(default_factory=list)  # (top1, flops) of completed trials
    hypervolume: float = 0.0
    front_size: int = 0

    @property
    def done(self) -> int:
        return self.completed + self.stopped + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def add_completed(self, top1: float, flops: float) -> None:
        self.points.append((top1, flops))
        top1s, flops_ = np.array(self.points).T
        self.front_size = int(pareto_mask(top1s, flops_).sum())
        self.hypervolume = hypervolume(top1s, flops_, self.budget)

    def line(self) -> str:
        minutes, seconds = divmod(int(self.elapsed), 60)
        return (
            f"[{minutes:02d}:{seconds:02d}] trials done {self.done} (completed {self.completed}, "
            f"early-stopped {self.stopped}, failed {self.failed}), running {self.running} | "
            f"front {self.front_size}, hypervolume {self.hypervolume:.4f}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "elapsed": round(self.elapsed, 1), "done": self.done, "running": self.running,
            "completed": self.completed, "early_stopped": self.stopped, "failed": self.failed,
            "front_size": self.front_size, "hypervolume": round(self.hypervolume, 6),
        }


def make_monitor_callback(
    progress: Progress,
    mode: str = "live",
    on_update: Callable[[Progress], None] | None = None,
    stream: TextIO | None = None,
) -> Any:
    """A Tune callback that keeps ``progress`` current, prints it in ``mode`` and calls ``on_update``.

    Args:
        progress: the counters to update.
        mode: ``live`` (one redrawn line on a terminal, a line per change otherwise), ``json`` (one JSON object
            per change on stdout) or ``quiet``.
        on_update: called after every finished trial (the search logs hypervolume to MLflow there).
        stream: where ``live`` writes (stderr by default, so stdout stays for results).
    """
    from ray.tune import Callback

    # Tune pickles its callbacks with the experiment: look the stream up when writing, never hold a file object.
    def out() -> TextIO:
        return stream or sys.stderr

    tty = out().isatty()

    class MonitorCallback(Callback):
        def __init__(self) -> None:
            self._last_draw = 0.0
            self._seen: set[str] = set()

        def _show(self, event: str, force: bool = False) -> None:
            if mode == "json":
                print(json.dumps({"event": event, **progress.as_dict()}), flush=True)
            elif mode == "live" and (force or not tty or time.monotonic() - self._last_draw > 0.5):
                end = "" if tty else "\n"
                prefix = "\r\033[K" if tty else ""
                out().write(prefix + progress.line() + end)
                out().flush()
                self._last_draw = time.monotonic()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            progress.running = sum(1 for t in trials if t.status == "RUNNING")
            if tty:
                self._show("start")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            progress.epochs += 1
            if tty:
                self._show("result")

        def _finish(self, trials: list, trial: Any, status: str) -> None:
            if trial.trial_id in self._seen:
                return
            self._seen.add(trial.trial_id)
            last = trial.last_result or {}
            if status == "failed":
                progress.failed += 1
            elif int(last.get("training_iteration", 0)) >= progress.max_epochs:
                progress.completed += 1
                progress.add_completed(float(last["top1"]), float(last["flops"]))
            else:
                progress.stopped += 1
            progress.running = sum(1 for t in trials if t.status == "RUNNING" and t is not trial)
            if on_update is not None:
                on_update(progress)
            self._show(status, force=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._finish(trials, trial, "complete")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._say_failure(trial, "")
            self._finish(trials, trial, "failed")

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._say_failure(trial, ", retrying from its last checkpoint")

        def _say_failure(self, trial: Any, then: str) -> None:
            # one line, whatever the mode (Tune's own traceback is off: TUNE_PRINT_ALL_TRIAL_ERRORS=0 in search)
            from tinyray.tracking import failure_reason

            where = getattr(trial, "error_file", None) or getattr(trial, "path", "")
            if mode == "live" and tty:
                out().write("\r\033[K")
            out().write(f"trial {trial.trial_id} failed: {failure_reason(trial)[:300]}{then} (full trace: {where})\n")
            out().flush()

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            if mode == "live" and tty:
                out().write("\n")
                out().flush()

    return MonitorCallback()
