"""The replay trainer: a trial that reports a recorded learning curve instead of training (``--trainer replay``).

It exists to rehearse the machinery at scale (hundreds of trials on a simulated cluster, ``tinyray bench scale``)
without the compute: everything around the trainer is the real one (the Tune trainable, its checkpoints, the
searcher, the scheduler, the callbacks, MLflow tracking, the front and the formula). It is never chosen by
accident: only ``--trainer replay`` selects it, and every record of such a search says so (the trial runs' and
the search run's ``trainer`` tags, the ``trainer`` column of ``trials.csv``, ``summary.json``).

What a replayed candidate (r, d, w) reports, epoch by epoch:

* **top-1**: the recorded learning curves of ``benchdata/curves.csv`` (8 corners of the cube, 9 epochs of the
  proxy recipe), interpolated linearly between grid points exactly as ``tinyray bench search`` does
  (:class:`tinyray.bench.Curves`), plus the recorded noise: a normal draw whose standard deviation is the
  seed-to-seed spread of the shipped proxy recordings at that epoch (``benchdata/proxy_runs.csv``, two seeds of
  24 networks: 0.024 after epoch 1, 0.048 after epoch 2 on data version 6, the last one for later epochs; the
  curves were recorded on an older version of the task, so the two come from different tasks). The draw is seeded by the
  search's seed and the candidate, so equal searches replay equal curves.
* **time**: the trial sleeps ``speed`` times the recorded seconds of the epoch (``--replay-speed``; 0.1 turns the
  recorded 16-40 s CPU epochs into 1.6-4 s).

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
NOISE_FILE = Path(__file__).parent / "benchdata" / "proxy_runs.csv"
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
    """The recorded curves (:class:`tinyray.bench.Curves`) and the recorded noise of every epoch.

    Args:
        curves: the learning-curve table (default the shipped ``benchdata/curves.csv``).
        noise: a proxy recording with two or more seeds per network (default ``benchdata/proxy_runs.csv``).
    """

    def __init__(self, curves: str | Path | None = None, noise: str | Path | None = None) -> None:
        import pandas as pd

        from tinyray.bench import Curves

        self.curves = Curves.load(curves)
        runs = pd.read_csv(noise or NOISE_FILE)
        spread = runs.groupby(["net", "epoch"])["top1"].std(ddof=1)  # two seeds: |a - b| / sqrt(2)
        #: standard deviation of top-1 between seeds, after epoch 1, 2, ... (root mean square over networks)
        self.noise_sd = np.sqrt((spread**2).groupby(level="epoch").mean()).to_numpy(dtype=float)

    @property
    def epochs(self) -> int:
        """Epochs recorded: the most a replayed trial can report."""
        return self.curves.epochs

    def replay(self, r: float, d: float, w: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(top1, seconds)`` of every recorded epoch at (r, d, w): two ``(epochs,)`` arrays, noise included.

        The noise is drawn from a generator seeded by ``seed`` and the candidate's multipliers (to 6 decimals).
        """
        top1, seconds = self.curves.curve(r, d, w)
        key = zlib.crc32(f"{r:.6f},{d:.6f},{w:.6f}".encode())
        rng = np.random.default_rng([int(seed), key])
        sd = self.noise_sd[np.minimum(np.arange(len(top1)), len(self.noise_sd) - 1)]
        return np.clip(top1 + rng.normal(0.0, sd), 0.0, 1.0), seconds


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
