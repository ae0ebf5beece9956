"""``tinyray bench search``: how much compute each search strategy needs for a good accuracy/FLOPs front.

Five methods, each a searcher and a scheduler (the default runs the first four):

====  ======================================================  ==========================================
name  searcher                                                scheduler
====  ======================================================  ==========================================
a     ``nsga3``: pymoo's NSGA-III                             multi-objective ASHA (:mod:`tinyray.scheduler`)
b     ``random`` under the FLOPs band (the paper's protocol)  FIFO: every trial trained to the end
c     ``optuna-nsga3``: Optuna's ``NSGAIIISampler``           Ray's ASHA (``ASHAScheduler``, by top1)
d     ``nsga3``                                               Ray's ASHA
e     ``qnehvi``: BoTorch's qLogNEHVI                         multi-objective ASHA
f     ``optuna-tpe``: Optuna's multi-objective ``TPESampler``   Ray's ASHA
====  ======================================================  ==========================================

The searchers are the registered ones (:data:`tinyray.searchers.SEARCHERS`), the objects a real search uses.
(c) stands in for what a Ray Tune user would assemble, ``OptunaSearch(sampler=NSGAIIISampler())`` with
``ASHAScheduler`` (see :mod:`tinyray.searchers.optuna_nsga3`). Ray's ASHA is Ray's own code:
``ASHAScheduler.on_trial_result`` on stand-in trials.

**The simulator** (default) plays on recorded learning curves, from one of two tables:

* the **landscape** (default when shipped; :mod:`tinyray.landscape`, ``tinyray bench landscape``): 64 networks
  over the cube, each trained as a default search trial trains it but 3x longer, two seeds each. A candidate is
  looked up through BoTorch GPs fitted on the recorded networks (the benchmark prints their leave-one-network-out
  error), and every simulated trial adds the seed-to-seed difference of a nearby recorded network (real trial
  noise, drawn per trial with the run's seed, so methods with equal seeds share the draws);
* the older **grid** (``benchdata/curves.csv``, by ``benchmarks/record_curves.py``, the 8 corners of the cube on
  data version 2, one seed): a candidate's curve is interpolated linearly between grid points (:func:`trilinear`
  over (r, d, w), per epoch), without noise.

Both record top-1 and seconds after every epoch of runs whose learning-rate schedule spans all the recorded
epochs, so ``--max-epochs`` should be the recorded epochs (the default). A candidate's FLOPs are the analytic
count. A simulated
clock with ``workers`` workers and an event queue plays the search: a free worker asks the searcher for a
candidate (or idles until the next event while NSGA-III waits for its generation), every epoch end is an event
that the scheduler decides on, and a finished or stopped trial is told to the searcher. No Ray actors run; the
searcher cores and the scheduler logic are the ones a real search uses.

Compute is counted two ways: **epochs** (all training epochs of all trials) and **seconds** (the simulated wall
clock, so idle workers cost time). Each run stops when it has used ``trials * max_t`` epochs, the compute of
``trials`` fully trained trials. The hypervolume (:func:`tinyray.front.hypervolume`) of the front of completed
(full-fidelity) trials is measured at evenly spaced compute levels; for each method the report gives mean and
sd over seeds, and the compute at which the mean curve first reaches 95% of the best final mean hypervolume of
any method, also as a ratio to method (b).

**Records and resume.** With ``--out``, every (method, seed) run is written to ``OUT/runs/<method>-<seed>.json`` the
moment it ends, with the settings that decide a run (the options other than ``--seeds``, ``--first-seed``,
``--methods`` and ``--levels``), a hash of the curves file and the versions of the libraries the searchers come
from. A rerun with the same ``--out`` reads the runs recorded there and simulates only the missing ones, so a
long comparison (a qNEHVI seed costs minutes of CPU) survives a stopped session, and more seeds or
methods can be added later. A recorded run of other settings is refused, never mixed in.

``--real`` runs the methods through :func:`tinyray.search.run_search` (Ray, the real trainer, MLflow), each as a
search of its own.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO

import numpy as np

from tinyray.errors import UserError
from tinyray.files import TRIAL_FOLDER_PREFIX
from tinyray.status import COMPLETED, EARLY_STOPPED

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: method -> (searcher, scheduler)
METHODS: dict[str, tuple[str, str]] = {
    "a": ("nsga3", "moasha"),
    "b": ("random", "fifo"),
    "c": ("optuna-nsga3", "asha"),
    "d": ("nsga3", "asha"),
    "e": ("qnehvi", "moasha"),
    "f": ("optuna-tpe", "asha"),
}
METHOD_LABELS = {
    "a": "tinyray: NSGA-III + MOASHA",
    "b": "paper: random + FIFO",
    "c": "Optuna NSGA-III + ASHA",
    "d": "NSGA-III + ASHA",
    "e": "qNEHVI + MOASHA",
    "f": "Optuna MOTPE + ASHA",
}
CURVES_FILE = Path(__file__).parent / "benchdata" / "curves.csv"
#: fraction of the best final hypervolume a method must reach
TARGET_FRACTION = 0.95


@dataclass(frozen=True)
class BenchConfig:
    """Options of the search benchmark.

    Attributes:
        budget: FLOPs budget, multiply-accumulates of one image.
        seeds: number of seeds (runs per method), seeds ``first_seed..first_seed+seeds-1``.
        first_seed: the first seed. Tune a method's settings on other seeds than those it is reported on (the
            README's numbers are seeds 0-9; ``--first-seed 10`` gives tuning seeds 10-19).
        trials: compute of each run, in fully trained trials: a run stops after ``trials * max_epochs`` epochs.
        max_epochs: full fidelity; at most the epochs recorded in the curves; ``None`` for all of them.
        grace_period: first rung of the ASHA schedulers, in epochs.
        reduction_factor: eta of the ASHA schedulers.
        pop_size: NSGA-III population (tinyray's core and Optuna's sampler).
        generations_ahead: NSGA-III generations bred ahead (tinyray's core only: ``tinyray search
            --generations-ahead``).
        workers: simulated workers (trials at once).
        levels: compute levels at which the hypervolume is measured.
        methods: which of :data:`METHODS` to run.
        curves: the learning-curve table: a landscape recording (:mod:`tinyray.landscape`) or a grid
            (:class:`Curves`); default the shipped landscape, else the shipped grid.
    """

    budget: int = 200_000_000
    seeds: int = 5
    first_seed: int = 0
    trials: int = 120
    max_epochs: int | None = None
    grace_period: int = 1
    reduction_factor: int = 3
    pop_size: int = 10
    generations_ahead: int = 1
    workers: int = 2
    levels: int = 40
    methods: tuple[str, ...] = ("a", "b", "c", "d")
    curves: Path | None = None

    def seed_range(self) -> range:
        """The seeds of the runs of each method."""
        return range(self.first_seed, self.first_seed + self.seeds)


def validate(config: BenchConfig, recorded_epochs: int | None = None) -> None:
    """Raise :class:`UserError` for options the benchmark cannot run (``max_epochs`` must be resolved)."""
    for option, value, low in (("--seeds", config.seeds, 1), ("--trials", config.trials, 1),
                               ("--max-epochs", config.max_epochs, 1), ("--grace-period", config.grace_period, 1),
                               ("--reduction-factor", config.reduction_factor, 2), ("--pop-size", config.pop_size, 4),
                               ("--workers", config.workers, 1), ("--levels", config.levels, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{option} must be a whole number of at least {low}, got {value!r}")
    if config.grace_period > config.max_epochs:
        raise UserError(f"--grace-period {config.grace_period} exceeds --max-epochs {config.max_epochs}: lower it")
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise UserError(f"--methods {','.join(config.methods)!r} must be a comma-separated subset of {','.join(METHODS)}")
    if recorded_epochs is not None and config.max_epochs > recorded_epochs:
        raise UserError(
            f"--max-epochs {config.max_epochs} exceeds the {recorded_epochs} epochs recorded in the curves:"
            " lower it, or record longer curves (tinyray bench landscape --record)"
        )


# ---------------------------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------------------------


def trilinear(axes: tuple[np.ndarray, ...], values: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Linear interpolation on a regular 3-D grid, as scipy's ``RegularGridInterpolator(axes, values)`` computes it
    (the same cell, weights and order of sums), without importing scipy: a replay trial's process uses it.

    Args:
        axes: the three ascending grid axes, of lengths ``(n0, n1, n2)``.
        values: an ``n0 x n1 x n2 x k`` array; NaN marks an unrecorded grid point.
        point: ``(3,)`` coordinates within the axes' bounds.

    Returns:
        The ``(k,)`` interpolated values: NaN where any corner of the point's grid cell is NaN.
    """
    corners = []
    for axis, x in zip(axes, point):
        # the cell [axis[i], axis[i + 1]] holding x; the last point of an axis belongs to the last cell
        i = min(max(int(np.searchsorted(axis, x, side="right")) - 1, 0), len(axis) - 2)
        fraction = (x - axis[i]) / (axis[i + 1] - axis[i])
        corners.append(((i, 1.0 - fraction), (i + 1, fraction)))
    total = np.zeros(values.shape[3:])
    for (i, a), (j, b), (k, c) in itertools.product(*corners):
        total = total + values[i, j, k] * (a * b * c)
    return total


class Curves:
    """Recorded learning curves on a grid of the cube, interpolated between grid points.

    The grid may be incomplete (a recording interrupted before its largest networks): a candidate whose grid
    cell lacks a corner has no curve, and :meth:`max_budget` says up to which budget every candidate has one.

    Args:
        table: rows ``r, d, w, epoch, top1, seconds`` (cumulative seconds), one per recorded grid point and epoch;
            every recorded point has every epoch ``1..epochs``.
    """

    #: classes of the task the grid was recorded on (data version 2), for the FLOPs count's classifier
    num_classes = 10

    def __init__(self, table: "pd.DataFrame") -> None:
        missing = {"r", "d", "w", "epoch", "top1", "seconds"} - set(table.columns)
        if missing:
            raise UserError(
                f"learning-curve table lacks columns {sorted(missing)}: record it with benchmarks/record_curves.py"
            )
        self.axes = tuple(np.unique(table[name].to_numpy(dtype=float)) for name in ("r", "d", "w"))
        self.epochs = int(table["epoch"].max())
        shape = tuple(len(axis) for axis in self.axes)
        top1 = np.full(shape + (self.epochs,), np.nan)
        seconds = np.full(shape + (self.epochs,), np.nan)
        for (r, d, w), rows in table.groupby(["r", "d", "w"]):
            rows = rows.sort_values("epoch")
            if rows["epoch"].tolist() != list(range(1, self.epochs + 1)):
                raise UserError(
                    f"learning curve at r={r} d={d} w={w} does not have every epoch 1..{self.epochs}:"
                    " re-record it with benchmarks/record_curves.py"
                )
            index = tuple(int(np.searchsorted(axis, value)) for axis, value in zip(self.axes, (r, d, w)))
            top1[index] = rows["top1"].to_numpy(dtype=float)
            seconds[index] = np.diff(rows["seconds"].to_numpy(dtype=float), prepend=0.0)  # seconds of each epoch
        self.recorded = ~np.isnan(top1[..., 0])
        self._top1, self._seconds = top1, seconds

    def max_budget(self, space: Any, num_classes: int = 10) -> float:
        """The largest FLOPs budget under which every network of the cube lies in a fully recorded grid cell.

        FLOPs grow with r, d and w, so a cell's cheapest network is its low corner: a budget below the low corner
        of every cell with an unrecorded corner keeps every candidate in complete cells.
        """
        from tinyray.cost import analytic_cost

        bounds = (space.r, space.d, space.w)
        if any(axis[0] > b.low or axis[-1] < b.high for axis, b in zip(self.axes, bounds)):
            return 0.0  # the recorded grid does not span the cube
        limit = math.inf
        cells = [range(len(axis) - 1) for axis in self.axes]
        for i in cells[0]:
            for j in cells[1]:
                for k in cells[2]:
                    if not self.recorded[i:i + 2, j:j + 2, k:k + 2].all():
                        low = (self.axes[0][i], self.axes[1][j], self.axes[2][k])
                        limit = min(limit, analytic_cost(space, *low, num_classes).flops - 1)
        return limit

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Curves":
        """Read the table at ``path`` (default: the shipped ``benchdata/curves.csv``)."""
        import pandas as pd

        path = Path(path) if path is not None else CURVES_FILE
        if not path.exists():
            raise UserError(
                f"learning-curve table {path} does not exist: give --curves or record it with benchmarks/record_curves.py"
            )
        return cls(pd.read_csv(path))

    def curve(self, r: float, d: float, w: float) -> tuple[np.ndarray, np.ndarray]:
        """``(top1, seconds)`` per epoch at (r, d, w): two ``(epochs,)`` arrays (seconds of each epoch)."""
        point = np.clip([r, d, w], [a[0] for a in self.axes], [a[-1] for a in self.axes])
        top1, seconds = trilinear(self.axes, self._top1, point), trilinear(self.axes, self._seconds, point)
        if np.isnan(top1).any():
            raise ValueError(f"no recorded curve around r={r} d={d} w={w}: the grid cell lacks a corner")
        return np.clip(top1, 0.0, 1.0), np.maximum(seconds, 1e-6)

    def sample(self, r: float, d: float, w: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One simulated run: the grid has one seed and no noise, so :meth:`curve` itself."""
        return self.curve(r, d, w)

    def held_out(self) -> None:
        """The grid has no surrogate to hold out (it interpolates): ``None``."""
        return None


def curves_file(path: str | Path | None = None) -> Path:
    """The learning-curve table :func:`load_curves` reads for ``path``."""
    from tinyray.landscape import LANDSCAPE_FILE

    if path is None:
        return LANDSCAPE_FILE if LANDSCAPE_FILE.exists() else CURVES_FILE
    return Path(path)


def load_curves(path: str | Path | None = None) -> "Curves | Any":
    """The table at ``path``: a landscape recording (it has a ``net`` column) as a
    :class:`tinyray.landscape.Landscape`, else a grid as :class:`Curves`. Default: the shipped landscape if
    there is one, else the shipped grid."""
    import pandas as pd

    from tinyray.landscape import Landscape

    path = curves_file(path)
    if not path.exists():
        raise UserError(f"learning-curve table {path} does not exist: give --curves, or record it with tinyray "
                        "bench landscape --record")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the learning-curve table {path} ({exc}): give another --curves")
    return Landscape.load(path) if "net" in header else Curves.load(path)


# ---------------------------------------------------------------------------------------------------------------
# Searchers and schedulers behind one small interface
# ---------------------------------------------------------------------------------------------------------------


def make_scheduler(name: str, config: BenchConfig) -> Callable[[str, int, float, int, bool], bool]:
    """A decision function ``decide(trial_id, epoch, top1, flops, first) -> keep going?``.

    ``fifo`` keeps every trial to ``max_epochs``; ``moasha`` is :class:`tinyray.scheduler.MOASHA`; ``asha`` is
    Ray's ``ASHAScheduler`` (one bracket) on stand-in trials.
    """
    if name == "fifo":
        return lambda trial_id, epoch, top1, flops, first: epoch < config.max_epochs
    if name == "moasha":
        from tinyray.scheduler import CONTINUE, MOASHA

        core = MOASHA(config.max_epochs, config.grace_period, config.reduction_factor)
        return lambda trial_id, epoch, top1, flops, first: core.on_result(trial_id, epoch, top1, flops) == CONTINUE
    if name == "asha":
        from tinyray.tune.scheduler import ray_asha_decider

        return ray_asha_decider(config.max_epochs, config.grace_period, config.reduction_factor)
    raise ValueError(f"unknown scheduler {name!r}")


# ---------------------------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One simulated search.

    Attributes:
        completed: one ``(epochs_used, seconds, top1, flops)`` per full-fidelity trial, when it finished.
        trials: trials started.
        stopped: trials early-stopped.
        epochs: epochs used in all.
        seconds: simulated wall clock at the end.
        slot_seconds: seconds of all epochs (``slot_seconds / (workers * seconds)``: the workers' busy share).
        first_generation: epochs used when ``pop_size`` trials had ended (NSGA-III's first
            generation, as it waits for them; for the others their first ``pop_size`` ends); ``nan`` if fewer ended.
    """

    completed: list[tuple[int, float, float, int]] = field(default_factory=list)
    trials: int = 0
    stopped: int = 0
    epochs: int = 0
    slot_seconds: float = 0.0
    seconds: float = 0.0
    first_generation: float = math.nan


def simulate(method: str, seed: int, config: BenchConfig, curves: Curves, space: Any, num_classes: int = 10) -> RunResult:
    """Play one search of ``method`` on the tabular benchmark (module docstring).

    Args:
        method: a key of :data:`METHODS`.
        seed: seed of the searcher.
        config: benchmark options.
        curves: the learning curves.
        space: the search space (bounds, analytic FLOPs).
        num_classes: classifier outputs counted in FLOPs (those of the recorded task).

    Each trial's curve is ``curves.sample`` with a generator seeded by ``seed`` alone, so that the methods of
    one seed draw the same noise sequence (common random numbers).
    """
    from tinyray.cost import analytic_cost

    from tinyray.searchers import make_searcher

    searcher_name, scheduler_name = METHODS[method]
    ahead = config.generations_ahead if searcher_name == "nsga3" else 0
    searcher = make_searcher(searcher_name, space, config.budget, seed=seed, pop_size=config.pop_size, ahead=ahead,
                             num_classes=num_classes)
    decide = make_scheduler(scheduler_name, config)
    rng = np.random.default_rng(seed)
    cap = config.trials * config.max_epochs
    run = RunResult()
    events: list[tuple[float, int, str, int]] = []  # (time, sequence, trial id, epoch just finished)
    live: dict[str, tuple[np.ndarray, np.ndarray, int, float]] = {}  # trial -> (top1, seconds, flops, start)
    sequence = 0
    idle = config.workers
    now = 0.0

    def launch() -> None:
        nonlocal idle, sequence
        while idle > 0:
            trial_id = f"{method}{seed}-{run.trials:04d}"
            candidate = searcher.ask(trial_id)
            if candidate is None:
                return  # NSGA-III waits for its generation: the worker idles until the next event
            point = (candidate.r, candidate.d, candidate.w)
            top1, seconds = curves.sample(*point, rng)
            flops = analytic_cost(space, *point, num_classes).flops
            live[trial_id] = (top1, seconds, flops, now)
            run.trials += 1
            idle -= 1
            sequence += 1
            heapq.heappush(events, (now + seconds[0], sequence, trial_id, 1))

    launch()
    while events and run.epochs < cap:
        now, _, trial_id, epoch = heapq.heappop(events)
        top1, seconds, flops, _ = live[trial_id]
        run.epochs += 1
        run.slot_seconds += float(seconds[epoch - 1])
        accuracy = float(top1[epoch - 1])
        keep = decide(trial_id, epoch, accuracy, flops, epoch == 1) and epoch < config.max_epochs
        if keep:
            sequence += 1
            heapq.heappush(events, (now + seconds[epoch], sequence, trial_id, epoch + 1))
            continue
        del live[trial_id]
        if epoch >= config.max_epochs:
            run.completed.append((run.epochs, now, accuracy, flops))
            searcher.tell(trial_id, accuracy, COMPLETED)
        else:
            run.stopped += 1
            searcher.tell(trial_id, accuracy, EARLY_STOPPED)
        if len(run.completed) + run.stopped == config.pop_size:
            run.first_generation = float(run.epochs)
        idle += 1
        launch()
    run.seconds = now
    return run


def _curves(runs: dict[tuple[str, int], "RunResult"], config: "BenchConfig", epochs_cap: float,
            seconds_cap: float) -> "pd.DataFrame":
    """Hypervolume of every run at ``config.levels`` evenly spaced compute levels up to each cap, on both axes
    (training epochs and seconds): one row per method, seed, axis and level."""
    import pandas as pd

    axes = {"epochs": np.linspace(epochs_cap / config.levels, epochs_cap, config.levels),
            "seconds": np.linspace(seconds_cap / config.levels, seconds_cap, config.levels)}
    rows = []
    for (method, seed), run in runs.items():
        for axis_index, (axis, levels) in enumerate(axes.items()):
            for level, volume in zip(levels, hypervolume_curve(run, levels, config.budget, axis_index)):
                rows.append({"method": method, "seed": seed, "axis": axis, "compute": float(level),
                             "hypervolume": float(volume)})
    return pd.DataFrame(rows)


def hypervolume_curve(run: RunResult, levels: np.ndarray, budget: int, axis: int) -> np.ndarray:
    """Hypervolume of the front of trials completed by each compute level (``axis`` 0: epochs, 1: seconds)."""
    from tinyray.front import hypervolume

    done = sorted(run.completed, key=lambda row: row[axis])
    out = np.zeros(len(levels))
    for i, level in enumerate(levels):
        rows = [row for row in done if row[axis] <= level]
        if rows:
            out[i] = hypervolume(np.array([r[2] for r in rows]), np.array([r[3] for r in rows]), budget)
    return np.maximum.accumulate(out)


# ---------------------------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class BenchResult:
    """What ``tinyray bench search`` reports.

    Attributes:
        curves: one row per (method, seed, axis, level): ``method, seed, axis`` (``epochs``/``seconds``),
            ``compute`` and ``hypervolume``.
        summary: one row per method: final hypervolume mean, sd and the half-width of its 95% interval
            (Student's t over seeds), trials run, and for each axis the compute at which the mean curve first
            reaches 95% of the best final mean hypervolume, and its ratio to (b).
        wins: for (a) against each other method and axis, the fraction of compute levels after (a)'s first
            generation (the epochs by which ``pop_size`` of its trials had ended, mean over seeds) at which (a)'s
            mean hypervolume is higher.
        surrogate: the landscape surrogate's leave-one-network-out error
            (:meth:`tinyray.landscape.Landscape.held_out`), or ``None`` on the grid or ``--real``.
    """

    config: BenchConfig
    curves: "pd.DataFrame"
    summary: "pd.DataFrame"
    wins: dict[str, float]
    mode: str = "simulated"
    surrogate: "pd.DataFrame | None" = None

    def to_json(self) -> dict[str, Any]:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.config).items()}
        surrogate = None if self.surrogate is None else _records(self.surrogate)
        return {"mode": self.mode, "config": config, "summary": _records(self.summary), "wins": self.wins,
                "surrogate": surrogate, "curves": _records(self.curves)}

    def table(self) -> str:
        """The summary as a text table (after the surrogate's held-out error, when there is one)."""
        frame = self.summary.copy()
        frame.insert(0, "method", [f"({m}) {METHOD_LABELS[m]}" for m in frame.pop("method")])
        text = frame.to_string(index=False, float_format=lambda x: f"{x:.3f}")
        if self.surrogate is None:
            return text
        return surrogate_text(self.surrogate) + "\n" + text


def surrogate_text(held_out: "pd.DataFrame") -> str:
    """The surrogate's held-out error in one line per epoch (epoch 0 is the seconds GP), beside the nearest
    recorded network's."""
    lines = [f"landscape surrogate, leave-one-network-out over {int(held_out['networks'].iloc[0])} networks:"]
    for row in held_out.itertuples():
        nearest = f" (nearest recorded network: {row.nearest_rmse:.3f}, {row.nearest_rho:.2f})"
        if row.epoch:
            lines.append(f"  epoch {row.epoch}: top-1 RMSE {row.rmse:.3f}, Spearman rho {row.rho:.2f}" + nearest)
        else:
            lines.append(f"  seconds of an epoch: RMSE of log seconds {row.rmse:.3f}, Spearman rho {row.rho:.2f}"
                         + nearest)
    return "\n".join(lines)


def _records(frame: "pd.DataFrame") -> list[dict[str, Any]]:
    rows = frame.to_dict(orient="records")
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()} for row in rows]


_PROCESS_CURVES: dict[str, Any] = {}
#: ``runs/<method>-<seed>.json`` of ``tinyray bench search --out`` (one simulated run and what decided it)
RUN_RECORD_VERSION = 1
#: the libraries whose code decides a simulated run (the searchers' and Ray's ASHA)
_RUN_LIBRARIES = ("numpy", "scipy", "pymoo", "optuna", "botorch", "gpytorch", "torch", "ray")


def run_key(config: BenchConfig, curves_file: Path) -> dict[str, Any]:
    """What decides one simulated (method, seed) run besides the two: the settings, the curves' content and the
    searchers' library versions (``max_epochs`` resolved)."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    settings = {name: getattr(config, name) for name in ("budget", "trials", "max_epochs", "grace_period",
                                                          "reduction_factor", "pop_size", "generations_ahead",
                                                          "workers")}
    digest = hashlib.sha256(Path(curves_file).read_bytes()).hexdigest()
    return {**settings, "curves_sha256": digest, "libraries": {name: installed(name) for name in _RUN_LIBRARIES}}


class RunRecords:
    """The (method, seed) runs of a benchmark folder (``OUT/runs``), written as each run ends.

    Args:
        folder: the benchmark's ``--out`` folder.
        key: :func:`run_key` of the settings being run.
    """

    def __init__(self, folder: Path, key: dict[str, Any]) -> None:
        self.folder = Path(folder) / "runs"
        self.key = key
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot keep the runs in {self.folder} ({exc.strerror or exc}): give --out a folder"
                            " you can write") from None

    def path(self, method: str, seed: int) -> Path:
        return self.folder / f"{method}-{seed}.json"

    def load(self, method: str, seed: int) -> RunResult | None:
        """The recorded run, or ``None`` if none is recorded.

        Raises:
            UserError: the record is damaged, or was made with other settings.
        """
        from tinyray.files import read_json

        path = self.path(method, seed)
        if not path.is_file():
            return None
        data = read_json(path, "benchmark run")
        if not isinstance(data, dict) or data.get("version") != RUN_RECORD_VERSION or "run" not in data:
            raise UserError(f"{path} is not a run record of this tinyray (version {RUN_RECORD_VERSION}): delete it")
        if data.get("key") != self.key:
            theirs = data.get("key") or {}
            differ = sorted(name for name in set(self.key) | set(theirs) if self.key.get(name) != theirs.get(name))
            raise UserError(f"{path.parent} holds runs made with other settings (they differ in {', '.join(differ)}):"
                            " rerun with those settings, or give another --out")
        try:
            run = data["run"]
            return RunResult(**{**run, "completed": [tuple(row) for row in run["completed"]]})
        except (KeyError, TypeError) as exc:
            raise UserError(f"{path} is damaged ({exc!r}): delete it, and the rerun simulates that run again") from None

    def save(self, method: str, seed: int, run: RunResult, seconds: float) -> Path:
        """Record one run (atomically); ``seconds`` is the wall clock it took to simulate."""
        from tinyray.files import write_json_atomic

        path = self.path(method, seed)
        try:
            return write_json_atomic(path, {
                "version": RUN_RECORD_VERSION, "method": method, "seed": seed, "key": self.key,
                "simulated_in_seconds": round(seconds, 3), "run": asdict(run)})
        except OSError as exc:
            raise UserError(f"cannot write {path} ({exc.strerror or exc}); the runs recorded before it are kept:"
                            " free space, then rerun with the same --out") from None


def _simulate_job(config: BenchConfig, method: str, seed: int) -> tuple[RunResult, float]:
    """One (method, seed) in a worker process, which loads (and fits) the curves once; with its wall seconds."""
    import time

    from tinyray.space import load_space

    key = str(config.curves)
    if key not in _PROCESS_CURVES:
        _PROCESS_CURVES[key] = load_curves(config.curves)
    curves = _PROCESS_CURVES[key]
    started = time.perf_counter()
    run = simulate(method, seed, config, curves, load_space(), curves.num_classes)
    return run, time.perf_counter() - started


def run_bench(config: BenchConfig, processes: int = 1, out: Path | None = None, log: TextIO | None = None) -> BenchResult:
    """Run the simulated comparison of :data:`METHODS` over ``config.seeds`` seeds.

    Args:
        config: the benchmark's options.
        processes: simulate this many (method, seed) runs at once, in worker processes; the runs, and so the
            result, are the same for any number (each run's searcher and noise are seeded by its seed alone).
        out: record each run in ``out/runs`` as it ends, and reuse the runs recorded there (module docstring).
        log: a stream for one line per run as it ends (and one for the runs reused), or ``None``.
    """
    import time

    from tinyray.space import load_space

    curves = load_curves(config.curves)
    if config.max_epochs is None:
        config = replace(config, max_epochs=curves.epochs)
    validate(config, curves.epochs)
    space = load_space()
    from tinyray.searchers import FlopsBand

    classes = curves.num_classes
    FlopsBand(space, config.budget, num_classes=classes)  # a budget outside the space fails here, before any run
    covered = curves.max_budget(space)
    if config.budget > covered:
        from tinyray.cost import format_flops

        raise UserError(
            f"the recorded curves cover budgets up to {format_flops(int(covered))} (they lack larger"
            f" networks): lower --budget, or record the rest with tinyray bench landscape --record"
        )
    surrogate = curves.held_out()
    jobs = [(m, s) for m in config.methods for s in config.seed_range()]
    records = RunRecords(out, run_key(config, curves_file(config.curves))) if out is not None else None
    runs: dict[tuple[str, int], RunResult] = {}
    if records is not None:
        for job in jobs:
            recorded = records.load(*job)
            if recorded is not None:
                runs[job] = recorded
        if runs and log is not None:
            print(f"reusing {len(runs)} of {len(jobs)} runs recorded in {records.folder}", file=log, flush=True)
    todo = [job for job in jobs if job not in runs]

    def done(job: tuple[str, int], run: RunResult, seconds: float) -> None:
        runs[job] = run
        if records is not None:
            records.save(*job, run, seconds)
        if log is not None:
            print(f"({job[0]}) seed {job[1]}: simulated in {seconds:.1f} s ({len(runs)} of {len(jobs)} runs)",
                  file=log, flush=True)

    if processes > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_simulate_job, config, *job): job for job in todo}
            for future in as_completed(futures):
                done(futures[future], *future.result())
    else:
        for job in todo:
            started = time.perf_counter()
            run = simulate(*job, config, curves, space, classes)
            done(job, run, time.perf_counter() - started)
    runs = {job: runs[job] for job in jobs}  # the jobs' order, whatever order they ended in
    table = _curves(runs, config, config.trials * config.max_epochs, min(run.seconds for run in runs.values()))
    return BenchResult(config=config, curves=table, summary=_summarise(table, runs, config),
                       wins=_wins(table, config, runs), surrogate=surrogate)


def _mean_curves(table: "pd.DataFrame", axis: str) -> "pd.DataFrame":
    rows = table[table["axis"] == axis]
    return rows.pivot_table(index="compute", columns="method", values="hypervolume", aggfunc="mean").sort_index()


def _summarise(table: "pd.DataFrame", runs: dict[tuple[str, int], RunResult], config: BenchConfig) -> "pd.DataFrame":
    import pandas as pd

    rows = []
    needed: dict[str, dict[str, float]] = {}
    for axis in ("epochs", "seconds"):
        mean = _mean_curves(table, axis)
        target = TARGET_FRACTION * float(mean.iloc[-1].max())
        needed[axis] = {}
        for method in mean.columns:
            reached = mean.index[mean[method].to_numpy() >= target]
            needed[axis][method] = float(reached[0]) if len(reached) and target > 0 else math.inf
    for method in config.methods:
        final = table[(table["axis"] == "epochs") & (table["method"] == method)]
        final = final[final["compute"] == final["compute"].max()]["hypervolume"]
        method_runs = [run for (m, _), run in runs.items() if m == method]
        row = {
            "method": method,
            "hv_final_mean": float(final.mean()),
            "hv_final_sd": float(final.std(ddof=1)) if len(final) > 1 else 0.0,
            "hv_final_ci95": _half_width(final.to_numpy()),
            "trials": float(np.mean([run.trials for run in method_runs])),
            "completed": float(np.mean([len(run.completed) for run in method_runs])),
        }
        for axis in ("epochs", "seconds"):
            base = needed[axis].get("b", math.nan)
            row[f"{axis}_to_95"] = needed[axis][method]
            row[f"{axis}_ratio_to_b"] = needed[axis][method] / base if base and math.isfinite(base) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _half_width(values: np.ndarray, level: float = 0.95) -> float:
    """Half-width of the ``level`` confidence interval of the mean of ``values`` (Student's t); 0 for one value."""
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return 0.0
    return float(t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def _wins(table: "pd.DataFrame", config: BenchConfig,
          runs: dict[tuple[str, int], RunResult] | None = None) -> dict[str, float]:
    """Fraction of compute levels after (a)'s first generation at which (a) beats each other method (on the
    epochs axis; on the seconds axis, every level)."""
    wins: dict[str, float] = {}
    if "a" not in config.methods:
        return wins
    firsts = [run.first_generation for (m, _), run in (runs or {}).items() if m == "a"]
    firsts = [value for value in firsts if math.isfinite(value)]
    # without runs (or if no first generation ended), the first rung of every worker's first trial
    first = float(np.mean(firsts)) if firsts else float(config.grace_period * config.workers)
    for axis in ("epochs", "seconds"):
        mean = _mean_curves(table, axis)
        if axis == "epochs":
            mean = mean[mean.index > first]
        for other in config.methods:
            if other != "a" and len(mean):
                wins[f"a_beats_{other}_{axis}"] = float((mean["a"] > mean[other]).mean())
    return wins


def write_outputs(result: BenchResult, out: Path) -> dict[str, Path]:
    """Write ``bench_curves.csv``, ``bench_summary.csv`` and ``bench_hypervolume.png`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = {"curves": out / "bench_curves.csv", "summary": out / "bench_summary.csv", "plot": out / "bench_hypervolume.png"}
    result.curves.to_csv(files["curves"], index=False)
    result.summary.to_csv(files["summary"], index=False)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for ax, axis in zip(axes, ("epochs", "seconds")):
        rows = result.curves[result.curves["axis"] == axis]
        for method, group in rows.groupby("method"):
            stats = group.groupby("compute")["hypervolume"].agg(["mean", _half_width])
            ax.plot(stats.index, stats["mean"], label=f"({method}) {METHOD_LABELS[method]}")
            ax.fill_between(stats.index, stats["mean"] - stats["_half_width"], stats["mean"] + stats["_half_width"],
                            alpha=0.15)
        ax.set_xlabel("training epochs, all trials" if axis == "epochs" else "simulated seconds")
        ax.set_ylabel("hypervolume")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result.mode}: mean and 95% interval over {result.config.seeds} seeds")
    fig.tight_layout()
    fig.savefig(files["plot"])
    plt.close(fig)
    return files


# ---------------------------------------------------------------------------------------------------------------
# --real: the same comparison through Ray on the real trainer
# ---------------------------------------------------------------------------------------------------------------

def finish_order(results: Path, trials: "pd.DataFrame") -> "pd.DataFrame":
    """``trials`` (a search's trials table) in the order they finished: by the end of each trial's last reported
    epoch (``epoch_end`` in its ``result.json``). A trial without one (it failed before its first epoch) goes by
    its trial id after the others."""
    from tinyray.scale import reported_epochs

    ends = {}
    for path in Path(results).glob(f"{TRIAL_FOLDER_PREFIX}*/result.json"):
        reported = reported_epochs(path)
        if reported:
            ends[str(reported[-1].get("trial_id", path.parent.name.removeprefix(TRIAL_FOLDER_PREFIX)))] = float(
                reported[-1]["epoch_end"])
    order = trials.assign(_end=[ends.get(str(tid), float("inf")) for tid in trials["trial_id"]])
    return order.sort_values(["_end", "trial_id"], kind="stable").drop(columns="_end")


def run_real(config: BenchConfig, storage: Path, data: str | None = None) -> BenchResult:
    """Run the methods through :func:`tinyray.search.run_search` (one search per method and seed).

    Each search gets ``config.trials`` trials (so methods with early stopping use less compute); compute is the
    sum of the trials' epochs and of their training seconds, counted in the order the trials finished
    (:func:`finish_order`), and a search that used less than another keeps its final front at the higher compute
    levels.
    """
    from tinyray.search import SearchConfig, run_search

    methods = config.methods
    runs = {}
    for method in methods:
        searcher, scheduler = METHODS[method]
        for seed in config.seed_range():
            result = run_search(SearchConfig(
                budget=config.budget, name=f"bench-{method}-seed{seed}", storage=storage, data=data,
                trials=config.trials, max_epochs=config.max_epochs, grace_period=config.grace_period,
                reduction_factor=config.reduction_factor, searcher=searcher, scheduler=scheduler, seed=seed,
                pop_size=config.pop_size, progress="quiet",
                generations_ahead=config.generations_ahead if searcher == "nsga3" else 0,
            ))
            trials = result.trials
            run = RunResult(trials=len(trials), stopped=int((trials["status"] == EARLY_STOPPED).sum()),
                            epochs=int(trials["epochs"].sum()), seconds=float(trials["train_seconds"].fillna(0).sum()))
            # each trial's compute counts when it finished (its last epoch's end in its result.json): Tune's trial
            # ids are random, so their order is not the search's (it was used until session 13)
            used_epochs, used_seconds = 0, 0.0
            for row in finish_order(result.config.results_dir, trials).itertuples():
                used_epochs += int(row.epochs)
                used_seconds += float(row.train_seconds or 0.0)
                if row.status == COMPLETED:
                    run.completed.append((used_epochs, used_seconds, float(row.top1), int(row.flops)))
            runs[(method, seed)] = run
    # each search spends what its scheduler lets it: a finished search keeps its final front at higher levels
    table = _curves(runs, config, max(run.epochs for run in runs.values()), max(run.seconds for run in runs.values()))
    real_config = BenchConfig(**{**asdict(config), "methods": methods})
    return BenchResult(config=real_config, curves=table, summary=_summarise(table, runs, real_config),
                       wins=_wins(table, real_config, runs), mode="real")
