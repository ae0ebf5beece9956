"""The recorded landscape behind ``tinyray bench search``: real learning curves of 64 networks, and a GP surrogate.

**The recording** (:func:`record_landscape`, ``tinyray bench landscape --record``). The 64 networks are the proxy
panel (:func:`tinyray.fidelity.panel`: corners, centre, B0, shrinks, TinyNet-A..E and 4 Sobol points) and 40 more
points of the same scrambled Sobol sequence, spread over the whole cube. Each is trained exactly as a default
search trial trains it (:func:`tinyray.fidelity.default_protocol`: the built-in data, the proxy recipe, one CPU
thread) but for :data:`EPOCH_FACTOR` times the default epochs (the learning-rate schedule spans them, as in a
search with ``--max-epochs`` that long), with seeds :data:`SEEDS`, and its top-1, wall seconds and CPU seconds are
recorded after every epoch. The rows are :data:`tinyray.fidelity.COLUMNS` with ``protocol`` = ``landscape``.

**The surrogate** (:class:`Landscape`). A candidate is looked up through Gaussian-process regressions fitted on the
recorded networks (BoTorch's ``SingleTaskGP`` on the cube scaled to [0, 1]^3, its outcome standardised, an
inferred noise level): one GP per epoch on the seeds' mean top-1, and one on the log of the seconds of an epoch.
Trial-to-trial noise comes from the recorded repeats, not from a formula: a simulated trial adds the difference
of the two seeds' curves of one of the three recorded networks nearest to it (a random one, with a random sign,
divided by sqrt 2 so that its variance is one run's), the same vector for all its epochs, as a real trial's
luck persists from epoch to epoch. :meth:`Landscape.held_out` fits the GPs again with each network left out
(BoTorch's ``batch_cross_validation``, hyperparameters refitted in every fold) and reports, per epoch, the
root-mean-square error and the Spearman rho of the left-out predictions against the recorded means: how far a
looked-up network's top-1 can be trusted.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyray.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from tinyray.fidelity import PanelNet, Protocol

#: The shipped recording.
LANDSCAPE_FILE = Path(__file__).parent / "benchdata" / "landscape.csv"
#: Its analysis as the README quotes it (``tinyray bench landscape --json``): summary and held-out error.
SURROGATE_FILE = LANDSCAPE_FILE.with_name("landscape_surrogate.json")
#: Sobol points of the landscape, the panel's 4 included: with the panel's 20 other networks, 64 networks.
SOBOL = 44
#: The landscape's runs last this many times a default trial's epochs.
EPOCH_FACTOR = 3
#: Seeds of every network: two, so that the benchmark's noise is drawn from real repeats.
SEEDS = (0, 1)
#: Nearest recorded networks a simulated trial draws its noise from.
NOISE_NEIGHBOURS = 3


def landscape_protocol(proxy: "Protocol | None" = None) -> "Protocol":
    """A default trial's training (:func:`tinyray.fidelity.default_protocol`), :data:`EPOCH_FACTOR` times longer."""
    from tinyray.fidelity import default_protocol

    proxy = proxy or default_protocol()
    return dataclasses.replace(proxy, name="landscape", epochs=EPOCH_FACTOR * proxy.epochs)


def landscape_nets(space: Any = None) -> "list[PanelNet]":
    """The 64 recorded networks: the proxy panel and 40 more Sobol points of the same sequence."""
    from tinyray.fidelity import panel

    return panel(space, sobol=SOBOL)


def record_landscape(out: Path = LANDSCAPE_FILE, *, processes: int = 2, command: str = "",
                     log: Any = sys.stderr) -> "pd.DataFrame":
    """Train every (network, seed) of the landscape not yet in ``out``; resumable (:func:`tinyray.fidelity.record`)."""
    from tinyray.fidelity import record

    return record(landscape_protocol(), landscape_nets(), SEEDS, Path(out), processes=processes, command=command,
                  log=log)


def _scale(points: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return (np.asarray(points, dtype=float) - low) / (high - low)


def _fit(x: np.ndarray, y: np.ndarray) -> Any:
    """A fitted ``SingleTaskGP``: one independent GP (own hyperparameters) per column of ``y``."""
    import torch

    from tinyray.formula import import_botorch

    import_botorch()  # without linear_operator's import-time FutureWarning
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    model = SingleTaskGP(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64),
                         outcome_transform=Standardize(m=y.shape[1]))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    return model


def _parse(table: "pd.DataFrame") -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """A landscape recording's networks (sorted by name): names, ``(n, 3)`` points (r, d, w), ``(n, seeds, epochs)``
    top-1 of every seed (NaN where a seed is missing) and ``(n,)`` seconds of one epoch (mean over seeds and epochs:
    CPU seconds when recorded, else wall seconds).

    Raises:
        UserError: a run that lacks an epoch ``1..epochs``.
    """
    epochs = int(table["epoch"].max())
    seeds = sorted(int(s) for s in table["seed"].unique())
    names, points, runs, seconds = [], [], [], []
    for name, rows in table.groupby("net", sort=True):
        curves = np.full((len(seeds), epochs), np.nan)
        per_epoch = []
        for seed, run in rows.groupby("seed"):
            run = run.sort_values("epoch")
            if run["epoch"].tolist() != list(range(1, epochs + 1)):
                raise UserError(f"the landscape's run of {name} seed {seed} does not have every epoch "
                                f"1..{epochs}: re-record it with tinyray bench landscape --record")
            curves[seeds.index(int(seed))] = run["top1"].to_numpy(dtype=float)
            column = "cpu_seconds" if "cpu_seconds" in run and run["cpu_seconds"].notna().all() else "seconds"
            per_epoch.append(float(run[column].iloc[-1]) / epochs)
        first = rows.iloc[0]
        names.append(str(name))
        points.append((float(first["r"]), float(first["d"]), float(first["w"])))
        runs.append(curves)
        seconds.append(float(np.mean(per_epoch)))
    return names, np.array(points), np.array(runs), np.array(seconds)


class Landscape:
    """The recorded landscape and its GP surrogate (module docstring).

    Args:
        table: a recording of :func:`record_landscape` (columns of :data:`tinyray.fidelity.COLUMNS`): every run has
            every epoch ``1..epochs``.
        space: the search space whose bounds scale the GP's inputs (default ``efficientnet_b0``).

    Attributes:
        epochs: epochs of every recorded run.
        names: the recorded networks, in the order of ``points``.
        points: ``(n, 3)`` array of their (r, d, w).
        top1: ``(n, epochs)`` seeds' mean top-1.
        runs: ``(n, seeds, epochs)`` every seed's top-1 (NaN where a seed is missing).
        epoch_seconds: ``(n,)`` seconds of one epoch (mean over seeds and epochs): CPU seconds when recorded, else
            wall seconds.
        num_classes: classes of the built-in task (the FLOPs count's classifier).
    """

    def __init__(self, table: "pd.DataFrame", space: Any = None) -> None:
        from tinyray.space import load_space

        missing = {"net", "r", "d", "w", "seed", "epoch", "top1", "seconds"} - set(table.columns)
        if missing:
            raise UserError(f"the landscape lacks the columns {sorted(missing)}: record it with tinyray bench "
                            "landscape --record")
        if not len(table):
            raise UserError("the landscape has no runs: record it with tinyray bench landscape --record")
        self.space = space or load_space()
        names, points, runs, seconds = _parse(table)
        self.epochs = runs.shape[2]
        self.names = names
        self.points = points
        self.runs = runs
        self.top1 = np.nanmean(self.runs, axis=1)
        self.epoch_seconds = seconds
        self.num_classes = _built_in_classes()
        bounds = self.space.bounds()
        self._low = np.array([bounds[f].low for f in "rdw"])
        self._high = np.array([bounds[f].high for f in "rdw"])
        self._x = _scale(self.points, self._low, self._high)
        self._y = np.column_stack([self.top1, np.log(self.epoch_seconds)])
        self._model = _fit(self._x, self._y)
        self.repeats = Repeats(self._x, self.runs)
        self._cache: dict[tuple[float, float, float], tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def load(cls, path: str | Path | None = None, space: Any = None) -> "Landscape":
        """Read a recording (default: the shipped ``benchdata/landscape.csv``)."""
        from tinyray.fidelity import read_runs

        path = Path(path) if path is not None else LANDSCAPE_FILE
        if not path.exists():
            raise UserError(f"the landscape {path} does not exist: record it with tinyray bench landscape --record")
        return cls(read_runs(path), space)

    def curve(self, r: float, d: float, w: float) -> tuple[np.ndarray, np.ndarray]:
        """``(top1, seconds)`` per epoch at (r, d, w), the GPs' posterior means: two ``(epochs,)`` arrays."""
        key = (float(r), float(d), float(w))
        if key not in self._cache:
            import torch

            x = torch.tensor(_scale([key], self._low, self._high), dtype=torch.float64)
            with torch.no_grad():
                mean = self._model.posterior(x).mean.numpy()[0]
            top1 = np.clip(mean[:-1], 0.0, 1.0)
            self._cache[key] = (top1, np.full(self.epochs, math.exp(mean[-1])))
        top1, seconds = self._cache[key]
        return top1.copy(), seconds.copy()

    def noise(self, r: float, d: float, w: float, rng: np.random.Generator) -> np.ndarray:
        """One run's deviation from the mean curve, per epoch: a repeat difference of a nearby recorded network
        (:class:`Repeats`)."""
        return self.repeats.draw(_scale([(r, d, w)], self._low, self._high)[0], rng)

    def sample(self, r: float, d: float, w: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One simulated run at (r, d, w): the mean curve plus :meth:`noise`, and the seconds of each epoch."""
        top1, seconds = self.curve(r, d, w)
        return np.clip(top1 + self.noise(r, d, w, rng), 0.0, 1.0), seconds

    def max_budget(self, space: Any, num_classes: int | None = None) -> float:
        """The largest budget the landscape covers: the FLOPs of its largest recorded network (beyond it every
        looked-up network would be an extrapolation)."""
        from tinyray.cost import analytic_cost

        classes = num_classes or self.num_classes
        return max(analytic_cost(space, r, d, w, classes).flops for r, d, w in self.points)

    def summary(self) -> dict[str, Any]:
        """What the recording holds: networks, seeds, epochs, the final top-1's range and one run's spread."""
        final = self.top1[:, -1]
        spread = np.abs(self.repeats.differences[:, -1])
        return {"networks": len(self.names), "seeds": int(self.runs.shape[1]), "epochs": self.epochs,
                "paired": len(self.repeats), "final_top1_min": float(final.min()),
                "final_top1_median": float(np.median(final)), "final_top1_max": float(final.max()),
                "final_seed_sd_median": float(np.median(spread)) if len(spread) else math.nan,
                "epoch_seconds_min": float(self.epoch_seconds.min()),
                "epoch_seconds_max": float(self.epoch_seconds.max())}

    def held_out(self) -> "pd.DataFrame":
        """Leave-one-network-out error of the surrogate, per epoch: ``epoch, rmse, rho, networks``.

        Every network is predicted by GPs fitted (hyperparameters included) on the others, with BoTorch's
        ``batch_cross_validation``; ``rmse`` is in top-1, ``rho`` the Spearman rank correlation of the predictions
        with the recorded seeds' means. The last row, ``epoch`` 0, is the seconds GP (``rmse`` of log seconds).
        ``nearest_rmse`` and ``nearest_rho`` are the same for the simplest surrogate, the nearest other recorded
        network (in the cube scaled to [0, 1]^3).
        """
        import pandas as pd
        import torch

        from tinyray.formula import import_botorch

        import_botorch()
        from botorch.cross_validation import batch_cross_validation, gen_loo_cv_folds
        from botorch.models import SingleTaskGP
        from botorch.models.transforms import Standardize
        from gpytorch.mlls import ExactMarginalLogLikelihood
        from scipy.stats import spearmanr

        x = torch.tensor(self._x, dtype=torch.float64)
        y = torch.tensor(self._y, dtype=torch.float64)
        folds = gen_loo_cv_folds(x, y)
        results = batch_cross_validation(SingleTaskGP, ExactMarginalLogLikelihood, folds,
                                         model_init_kwargs={"outcome_transform": Standardize(
                                             m=y.shape[1], batch_shape=torch.Size([len(x)]))})
        predicted = results.posterior.mean.detach().numpy()[:, 0, :]
        # the simplest surrogate, for comparison: the nearest other recorded network's value
        distance = np.linalg.norm(self._x[:, None, :] - self._x[None, :, :], axis=2)
        np.fill_diagonal(distance, np.inf)
        nearest = self._y[np.argmin(distance, axis=1)]
        rows = []
        for column in range(y.shape[1]):
            truth = self._y[:, column]
            guess = np.clip(predicted[:, column], 0.0, 1.0) if column < self.epochs else predicted[:, column]
            rows.append({"epoch": column + 1 if column < self.epochs else 0,
                         "rmse": float(np.sqrt(np.mean((guess - truth) ** 2))),
                         "rho": float(spearmanr(guess, truth).statistic), "networks": len(truth),
                         "nearest_rmse": float(np.sqrt(np.mean((nearest[:, column] - truth) ** 2))),
                         "nearest_rho": float(spearmanr(nearest[:, column], truth).statistic)})
        return pd.DataFrame(rows)


class Repeats:
    """One run's luck, from the recorded repeats: numpy only (a replay trial's process imports no torch).

    A draw is the difference of the two seeds' curves of one of the :data:`NOISE_NEIGHBOURS` recorded networks
    nearest to the point (a random one, with a random sign, divided by sqrt 2 so that its variance is one run's):
    one vector for all epochs, as a real trial's luck persists from epoch to epoch.

    Args:
        points: ``(n, 3)`` recorded networks in the cube scaled to [0, 1]^3.
        runs: ``(n, seeds, epochs)`` their top-1 per seed (NaN where a seed is missing); networks without two
            seeds are left out.
    """

    def __init__(self, points: np.ndarray, runs: np.ndarray) -> None:
        runs = np.asarray(runs, dtype=float)
        paired = ~np.isnan(runs[:, :2]).any(axis=(1, 2)) if runs.shape[1] >= 2 else np.zeros(len(runs), bool)
        self.epochs = int(runs.shape[2])
        self.points = np.asarray(points, dtype=float)[paired]
        #: ``(paired, epochs)``: (seed 0 - seed 1) / sqrt 2 of every network with both
        self.differences = (runs[paired, 0] - runs[paired, 1]) / math.sqrt(2.0)

    def __len__(self) -> int:
        return len(self.points)

    def draw(self, point: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One run's deviation from the mean curve at ``point`` (scaled to [0, 1]^3), per epoch."""
        if not len(self.points):
            return np.zeros(self.epochs)
        distance = np.linalg.norm(self.points - np.asarray(point, dtype=float), axis=1)
        nearest = np.argsort(distance)[:NOISE_NEIGHBOURS]
        return float(rng.choice((-1.0, 1.0))) * self.differences[int(rng.choice(nearest))]

    @classmethod
    def from_table(cls, table: "pd.DataFrame", low: np.ndarray, high: np.ndarray) -> "Repeats":
        """The repeats of a landscape recording (its ``net, r, d, w, seed, epoch, top1`` columns), the cube scaled
        by ``low`` and ``high``: what :class:`Landscape` draws, without fitting its GPs."""
        _, points, runs, _ = _parse(table)
        return cls(_scale(points, np.asarray(low, dtype=float), np.asarray(high, dtype=float)), runs)


def replay_grid(landscape: Landscape, points: int = 9) -> "pd.DataFrame":
    """The surrogate's mean curves on a regular ``points``^3 grid over the cube, as the replay trainer reads them
    (:class:`tinyray.bench.Curves`: rows ``r, d, w, epoch, top1, seconds``, seconds cumulative): interpolating the
    grid linearly is numpy only, so a replay trial's process needs neither torch nor the GPs."""
    import itertools

    import pandas as pd

    axes = [np.linspace(low, high, points) for low, high in zip(landscape._low, landscape._high)]
    rows = []
    for r, d, w in itertools.product(*axes):
        top1, seconds = landscape.curve(float(r), float(d), float(w))
        for epoch in range(landscape.epochs):
            rows.append({"r": round(float(r), 6), "d": round(float(d), 6), "w": round(float(w), 6), "epoch": epoch + 1,
                         "top1": round(float(top1[epoch]), 6), "seconds": round(float(seconds[:epoch + 1].sum()), 4)})
    return pd.DataFrame(rows)


def _built_in_classes() -> int:
    """Classes of today's built-in task, which a landscape is recorded on (they only change the FLOPs count's
    classifier: 1280 multiply-accumulates a class)."""
    from tinyray.data import DataSpec

    return DataSpec().num_classes


def summary_text(summary: dict[str, Any]) -> str:
    """:meth:`Landscape.summary` in two lines."""
    return (f"landscape: {summary['networks']} networks, {summary['seeds']} seeds ({summary['paired']} networks with "
            f"two), {summary['epochs']} epochs; final top-1 {summary['final_top1_min']:.3f}-"
            f"{summary['final_top1_max']:.3f} (median {summary['final_top1_median']:.3f}), one run's sd "
            f"{summary['final_seed_sd_median']:.3f} (median over networks)\n"
            f"seconds of an epoch on one CPU thread: {summary['epoch_seconds_min']:.1f}-{summary['epoch_seconds_max']:.1f}")
