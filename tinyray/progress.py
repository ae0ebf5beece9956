"""What a running search shows: a live status line (or JSON lines, or nothing) and the parent run's progress.

The monitor is a Ray Tune callback in the driver (:class:`tinyray.tune.callbacks.MonitorCallback`). Each time a trial ends it recomputes the front of the
full-fidelity trials and its hypervolume (:mod:`tinyray.front`), logs ``hypervolume``, ``trials_done`` and
``front_size`` to the search's parent MLflow run (step = trials done), and redraws the status line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyray.front import hypervolume, pareto_mask
from tinyray.status import COMPLETED, FAILED

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

    def count(self, status: str, last: dict[str, Any]) -> None:
        """Count a trial that ended with ``status`` (:mod:`tinyray.status`); ``last`` is its last result."""
        if status == FAILED:
            self.failed += 1
        elif status == COMPLETED:
            self.completed += 1
            self.add_completed(float(last["top1"]), float(last["flops"]))
        else:
            self.stopped += 1

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
