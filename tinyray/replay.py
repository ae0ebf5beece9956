"""The replay trainer: a trial that reports a recorded learning curve instead of training (``--trainer replay``).

It exists to rehearse the machinery at scale (hundreds of trials on a simulated cluster, ``tinyray bench scale``)
without the compute: everything around the trainer is the real one (the Tune trainable, its checkpoints, the
searcher, the scheduler, the callbacks, MLflow tracking, the front and the formula). It is never chosen by
accident: only ``--trainer replay`` selects it, and every record of such a search says so (the trial runs' and
the search run's ``trainer`` tags, the ``trainer`` column of ``trials.csv``, ``summary.json``).

What a replayed candidate (r, d, w) reports, epoch by epoch:

* **top-1**: the landscape of ``tinyray bench search`` (:mod:`tinyray.landscape`: 64 networks of the cube, each
  trained as a default search trial trains it on today's built-in data but for 6 epochs, two seeds each). Its GP
  surrogate's mean curves are shipped on a regular 9 x 9 x 9 grid over the cube (``benchdata/replay_grid.csv``,
  written by ``python benchmarks/replay_grid.py``) and interpolated linearly between grid points
  (:class:`tinyray.bench.Curves`), plus one run's recorded luck: the seed-to-seed difference of one of the three
  recorded networks nearest to the candidate (:class:`tinyray.landscape.Repeats`, from ``benchdata/landscape.csv``),
  the same vector for all its epochs. The draw is seeded by the search's seed and the candidate, so equal
  searches replay equal curves. As in ``tinyray bench search``, epoch k is the k-th epoch of a 6-epoch schedule.
* **time**: the trial sleeps ``speed`` times the recorded seconds of the epoch (``--replay-speed``; the landscape's
  epochs took 5-40 s of one CPU thread, so 0.1 turns them into 0.5-4 s).

Curves and noise come from one recording, of the task a search runs on by default. Before 2026-12-07 the replay
played the 8 corners of an older task's grid (``benchdata/curves.csv``, data version 2) with the noise of another
recording; ``ReplayCurves(curves=CURVES_FILE)`` still plays that grid.

Its checkpoint is the same Tune checkpoint as a real trial's, holding ``state.json`` (the epochs done) instead of
``state.pt``; a retried or resumed replay continues after its last finished epoch.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tinyray.errors import UserError

#: the trainers a search can use (``--trainer``): ``train`` trains the network, ``replay`` replays recorded curves
TRAIN = "train"
REPLAY = "replay"
TRAINERS = (TRAIN, REPLAY)
#: format of a replay's checkpoint (``state.json``)
REPLAY_STATE_VERSION = 1
REPLAY_STATE_FILE = "state.json"
#: the landscape's GP mean curves on a grid over the cube (``python benchmarks/replay_grid.py`` writes it)
REPLAY_GRID = Path(__file__).parent / "benchdata" / "replay_grid.csv"
#: bounds of ``--replay-speed``
MIN_SPEED, MAX_SPEED = 0.0, 100.0


@dataclass(frozen=True)
class ReplayEpoch:
    """One replayed epoch, with the fields of :class:`tinyray.train.EpochResult` a trial reports.

    Losses and throughput were not recorded: they are NaN (MLflow skips them) and 0.
    """

    epoch: int
    top1: float
    seconds: float
    val_loss: float = float("nan")
    train_loss: float = float("nan")
    images_per_second: float = 0.0
    skipped_images: int = 0


class ReplayCurves:
    """Mean curves on a grid of the cube (:class:`tinyray.bench.Curves`) and a recording's repeats for the noise.

    Args:
        curves: the grid of mean curves (default the shipped ``benchdata/replay_grid.csv``).
        repeats: a landscape recording with two seeds per network, whose seed-to-seed differences are the noise
            (default the shipped ``benchdata/landscape.csv``).
    """

    def __init__(self, curves: str | Path | None = None, repeats: str | Path | None = None) -> None:
        import pandas as pd

        from tinyray.bench import Curves
        from tinyray.landscape import LANDSCAPE_FILE, Repeats

        self.curves = Curves.load(curves or REPLAY_GRID)
        self._low = np.array([axis[0] for axis in self.curves.axes])
        self._high = np.array([axis[-1] for axis in self.curves.axes])
        self.repeats = Repeats.from_table(pd.read_csv(repeats or LANDSCAPE_FILE), self._low, self._high)

    @property
    def epochs(self) -> int:
        """Epochs recorded: the most a replayed trial can report."""
        return min(self.curves.epochs, self.repeats.epochs)

    def replay(self, r: float, d: float, w: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(top1, seconds)`` of every recorded epoch at (r, d, w): two ``(epochs,)`` arrays, noise included.

        The noise is drawn from a generator seeded by ``seed`` and the candidate's multipliers (to 6 decimals).
        """
        from tinyray.landscape import _scale

        top1, seconds = self.curves.curve(r, d, w)
        top1, seconds = top1[:self.epochs], seconds[:self.epochs]
        key = zlib.crc32(f"{r:.6f},{d:.6f},{w:.6f}".encode())
        rng = np.random.default_rng([int(seed), key])
        point = _scale([r, d, w], self._low, self._high)
        noise = self.repeats.draw(point, rng)[:self.epochs]
        return np.clip(top1 + noise, 0.0, 1.0), seconds


@lru_cache(maxsize=1)
def replay_curves() -> ReplayCurves:
    """The shipped curves and noise, read once per process."""
    return ReplayCurves()


def check_replay(max_epochs: int, speed: float) -> None:
    """Refuse a replay the recordings cannot give (one line, for the CLI)."""
    recorded = replay_curves().epochs
    if max_epochs > recorded:
        raise UserError(f"--max-epochs {max_epochs} exceeds the {recorded} epochs recorded for --trainer replay: "
                        f"lower it to {recorded} or less")
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise UserError(f"--replay-speed must be between {MIN_SPEED:g} and {MAX_SPEED:g} (a fraction of the recorded "
                        f"time), got {speed:g}")


def replay_candidate(
    r: float,
    d: float,
    w: float,
    *,
    epochs: int,
    seed: int = 0,
    speed: float = 0.1,
    callback: Callable[[ReplayEpoch, Callable[[], dict[str, Any]]], "bool | None"] | None = None,
    state: dict[str, Any] | None = None,
    curves: ReplayCurves | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ReplayEpoch]:
    """Replay the candidate's recorded curve for ``epochs`` epochs, with :func:`tinyray.train.train_candidate`'s
    callback contract.

    Args:
        r, d, w: the candidate's multipliers.
        epochs: length of the run, at most the epochs recorded.
        seed: the search's seed (with the candidate, it seeds the noise).
        speed: seconds slept per recorded second.
        callback: ``callback(epoch, checkpoint)`` after every epoch; ``checkpoint()`` returns the replay's state
            (a JSON-able dict); a True return stops the run.
        state: a dict from ``checkpoint()`` to continue after.
        curves: the recordings (default :func:`replay_curves`).
        sleep: the clock (tests pass a fake one).

    Returns:
        The epochs replayed by this call.
    """
    curves = curves or replay_curves()
    check_replay(epochs, speed)
    run = {"r": float(r), "d": float(d), "w": float(w), "seed": int(seed), "epochs": int(epochs)}
    done = 0
    if state is not None:
        if state.get("version") != REPLAY_STATE_VERSION or state.get("run") != run:
            raise ValueError(f"replay state {state.get('run')} belongs to another run than {run}")
        done = int(state["epoch"])
    top1, seconds = curves.replay(r, d, w, seed)
    history: list[ReplayEpoch] = []
    for epoch in range(done, epochs):
        started = time.perf_counter()
        sleep(float(seconds[epoch]) * speed)
        result = ReplayEpoch(epoch=epoch + 1, top1=float(top1[epoch]), seconds=time.perf_counter() - started)
        history.append(result)

        def checkpoint(at: int = epoch + 1) -> dict[str, Any]:
            return {"version": REPLAY_STATE_VERSION, "run": dict(run), "epoch": at}

        if callback is not None and callback(result, checkpoint) and epoch + 1 < epochs:
            break
    return history
