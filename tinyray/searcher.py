"""The searcher: which (r, d, w) to train next, under a FLOPs budget.

Two strategies share one small contract, plain Python objects that tests and benchmarks drive without Ray:

* :class:`NSGA3Core` wraps pymoo's NSGA-III through its ask/tell interface. The genome is (r, d, w) inside
  the space's bounds; the objectives (both minimised) are ``-top1`` and ``FLOPs / base FLOPs``.
* :class:`RandomCore` is the paper's protocol: uniform random sampling of the cube under the same FLOPs band.

Both implement ``ask(trial_id) -> Candidate | None``, ``tell(trial_id, top1, status)``, ``records``,
``state_dict()`` and ``load_state_dict(state)``. Every candidate they hand out is a network whose analytic
FLOPs lie in the band ``floor <= FLOPs <= budget`` (:class:`FlopsBand`), and no two of them build the same
network (same resolution, stage depths and rounded channels).

**Learning from early-stopped trials.** A trial the scheduler stopped has only a partial accuracy, measured
before its learning-rate schedule ended; it underestimates the network, by a different amount for each network.
NSGA-III is told it as ``top1 - STOPPED_PENALTY`` (1.0): dominated by every fully trained network of no more
FLOPs, so survival prefers measured results, yet ordered among the stopped ones by partial accuracy and FLOPs, so
a network that reached a later rung (higher partial accuracy) outranks one stopped at the first, and a stopped
network still steers the search away from its region rather than being thrown away. The alternative that Ray's
``OptunaSearch`` takes, telling the partial accuracy as if final, lets a stopped network displace fully trained
ones from the population whenever its underestimate happens to fall on their front. ``benchmarks/stopped_trials.py``
measured both on the search benchmark (README, Performance): about equal, the penalty slightly ahead. The
searcher's tests check the order (stopped below completed, above failed).

:func:`make_core` builds a core by name; :func:`make_tune_searcher` wraps one in a Ray Tune ``Searcher``
(``TinySearcher``, defined when first asked for, so that ``import tinyray.searcher`` imports neither Ray nor
pymoo).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np

from tinyray.cost import analytic_cost, format_flops
from tinyray.cube import Candidate, decode_blocks, head_channels, round_channels, stage_depths
from tinyray.errors import UserError
from tinyray.space import SearchSpace

if TYPE_CHECKING:
    from ray.tune.search import Searcher

logger = logging.getLogger(__name__)

#: Version of the JSON state written by ``state_dict()`` and by the Tune adapter's ``save``.
STATE_VERSION = 1

Status = Literal["completed", "stopped", "failed"]
STATUSES: tuple[str, ...] = ("completed", "stopped", "failed")

#: An early-stopped trial enters NSGA-III with ``top1 - STOPPED_PENALTY``. top1 is a fraction in [0, 1], so
#: this ranks it below every completed trial while keeping the order among stopped ones.
STOPPED_PENALTY = 1.0
#: A failed trial enters NSGA-III with this top1 (below every stopped trial) and a constraint violation.
FAILED_TOP1 = -2.0

#: ``flops_fn(r, d, w)``: multiply-accumulates of one image of the network at (r, d, w).
FlopsFn = Callable[[float, float, float], int]

SEARCHERS: tuple[str, ...] = ("nsga3", "random")

# Uniform draws tried before sampling falls back to projecting draws into the band (a band that is a tiny
# corner of the cube), and draws tried in all before giving up.
_REJECTION_ATTEMPTS = 500
_SAMPLE_ATTEMPTS = 2000
# Repair stops once FLOPs are within this fraction of the band edge it moved to (or after the steps).
_REPAIR_TOLERANCE = 0.01
_BISECTION_STEPS = 30


# ---------------------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """What the searcher was told about one trial.

    Attributes:
        trial_id: Tune's trial id.
        r, d, w: the candidate's multipliers.
        flops: analytic multiply-accumulates of one image at the candidate's resolution.
        top1: accuracy as a fraction in [0, 1]; for a ``stopped`` trial at its partial fidelity; ``None`` for a
            ``failed`` trial.
        status: ``completed`` (trained to full fidelity), ``stopped`` (early-stopped by the scheduler) or
            ``failed`` (error). Only completed records are final results.
        generation: NSGA-III generation of the candidate (``None`` for random search).
        index: position of the candidate in its generation (``None`` for random search).
    """

    trial_id: str
    r: float
    d: float
    w: float
    flops: int
    top1: float | None
    status: Status
    generation: int | None = None
    index: int | None = None

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.r, self.d, self.w)

    @property
    def is_final(self) -> bool:
        """True for a trial trained to full fidelity: the only records a Pareto front or a fit may use."""
        return self.status == "completed"

    @property
    def effective_top1(self) -> float:
        """The top1 NSGA-III ranks by: top1, ``top1 - STOPPED_PENALTY`` if stopped, ``FAILED_TOP1`` if failed."""
        if self.status == "completed":
            return float(self.top1)
        if self.status == "stopped":
            return float(self.top1) - STOPPED_PENALTY
        return FAILED_TOP1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrialRecord":
        return cls(
            trial_id=str(raw["trial_id"]),
            r=float(raw["r"]),
            d=float(raw["d"]),
            w=float(raw["w"]),
            flops=int(raw["flops"]),
            top1=None if raw["top1"] is None else float(raw["top1"]),
            status=_check_status(raw["status"]),
            generation=None if raw.get("generation") is None else int(raw["generation"]),
            index=None if raw.get("index") is None else int(raw["index"]),
        )


def _check_status(status: str) -> Status:
    if status not in STATUSES:
        raise ValueError(f"trial status {status!r} is not one of {list(STATUSES)}")
    return status  # type: ignore[return-value]


def _check_result(trial_id: str, top1: float | None, status: str) -> tuple[float | None, Status]:
    """Validate a told result; a completed or stopped trial without a finite top1 counts as failed."""
    checked = _check_status(status)
    if checked == "failed":
        return None, checked
    if top1 is None or not math.isfinite(top1):
        logger.warning("trial %s reported %s without a finite top1: counted as failed", trial_id, checked)
        return None, "failed"
    if not 0.0 <= top1 <= 1.0:
        raise ValueError(f"trial {trial_id} reported top1 {top1!r}: top1 must be a fraction in [0, 1]")
    return float(top1), checked


# ---------------------------------------------------------------------------------------------------------------
# The feasible band
# ---------------------------------------------------------------------------------------------------------------


def _analytic_flops(space: SearchSpace, num_classes: int, r: float, d: float, w: float) -> int:
    return analytic_cost(space, r, d, w, num_classes).flops


class FlopsBand:
    """The feasible set of the search: points of the cube whose network has ``floor <= FLOPs <= budget``.

    FLOPs grow monotonically with each of r, d and w, so the smallest network of the cube is at the low
    corner and the largest at the high corner; the band is validated against both at construction.

    Args:
        space: the search space (bounds of r, d, w).
        budget: FLOPs budget (multiply-accumulates of one image). A budget above the largest network is
            allowed but not binding: it is clipped to the largest network, with a logged warning.
        floor: smallest FLOPs of a suggested network; default ``budget // 16`` (of the clipped budget), so
            that the front spans the range a formula fit needs. 0 disables it.
        num_classes: classifier outputs counted by the default ``flops_fn``.
        flops_fn: ``flops_fn(r, d, w) -> int`` multiply-accumulates; default the analytic count of
            :func:`tinyray.cost.analytic_cost`. It must depend on the built network only (two points that
            build the same network must cost the same).

    Raises:
        UserError: if the budget is below the smallest network, or the floor is above the budget or above the
            largest network.
    """

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        floor: int | None = None,
        *,
        num_classes: int = 1000,
        flops_fn: FlopsFn | None = None,
    ) -> None:
        self.space = space
        self.num_classes = int(num_classes)
        self.flops_fn: FlopsFn = flops_fn or partial(_analytic_flops, space, self.num_classes)
        self.low = np.array([space.r.low, space.d.low, space.w.low], dtype=float)
        self.high = np.array([space.r.high, space.d.high, space.w.high], dtype=float)
        self._flops_cache: dict[tuple[float, float, float], int] = {}
        self._key_cache: dict[tuple[float, float, float], tuple] = {}
        self._base_channels: tuple[int, ...] | None = None

        where = space.source or "the space file"
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 1:
            raise UserError(f"budget {budget!r} is not a positive number of FLOPs: give e.g. --budget 200M")
        self.requested_budget = int(budget)
        self.min_flops = int(self.flops_fn(*self.low))
        self.max_flops = int(self.flops_fn(*self.high))
        smallest = f"{format_flops(self.min_flops)} at {_point_text(self.low)}"
        largest = f"{format_flops(self.max_flops)} at {_point_text(self.high)}"
        if self.requested_budget < self.min_flops:
            raise UserError(
                f"budget {format_flops(self.requested_budget)} is below the smallest network in the space"
                f" ({smallest}): raise --budget or lower the bounds in {where}"
            )
        if self.requested_budget > self.max_flops:
            raise UserError(
                f"budget {format_flops(self.requested_budget)} is above the largest network in the space ({largest}),"
                f" so it would not constrain the search: lower --budget to {format_flops(self.max_flops)} or less,"
                f" or raise the upper bounds in {where}"
            )
        self.budget = self.requested_budget
        if floor is None:
            floor = self.budget // 16
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not floor >= 0:
            raise UserError(f"FLOPs floor {floor!r} is not a non-negative number: give e.g. --floor 20M, or 0")
        self.floor = int(floor)
        if self.floor >= self.requested_budget:  # an empty band, or one of a single FLOPs count
            where_floor = "above" if self.floor > self.requested_budget else "equal to"
            raise UserError(
                f"FLOPs floor {format_flops(self.floor)} is {where_floor} the budget "
                f"{format_flops(self.requested_budget)}: lower --floor (default budget/16) or raise --budget"
            )
        if self.floor > self.max_flops:
            raise UserError(
                f"FLOPs floor {format_flops(self.floor)} is above the largest network in the space ({largest}):"
                f" lower --floor or raise the upper bounds in {where}"
            )

    def __getstate__(self) -> dict[str, Any]:
        # The memos refill on demand: a pickled band (inside Tune's experiment state) stays small.
        return {**self.__dict__, "_flops_cache": {}, "_key_cache": {}}

    def describe(self) -> str:
        """The band in words, e.g. ``6.25M..100M FLOPs``."""
        return f"{format_flops(self.floor)}..{format_flops(self.budget)} FLOPs"

    def flops(self, x: np.ndarray | tuple[float, float, float]) -> int:
        """FLOPs of the network at ``x = (r, d, w)`` (memoised)."""
        key = (float(x[0]), float(x[1]), float(x[2]))
        flops = self._flops_cache.get(key)
        if flops is None:
            if len(self._flops_cache) > 200_000:
                self._flops_cache.clear()
            flops = self._flops_cache[key] = int(self.flops_fn(*key))
        return flops

    def contains(self, flops: int) -> bool:
        return self.floor <= flops <= self.budget

    def network_key(self, x: np.ndarray | tuple[float, float, float]) -> tuple:
        """What makes two points the same network: resolution, blocks per stage and rounded channels."""
        key = (float(x[0]), float(x[1]), float(x[2]))
        network = self._key_cache.get(key)
        if network is None:
            if self._base_channels is None:
                self._base_channels = tuple(
                    dict.fromkeys(block["out_chs"] for stage in decode_blocks(self.space, 1.0) for block in stage)
                )
            r, d, w = key
            network = (
                self.space.resolution(r),
                stage_depths(self.space, d),
                tuple(round_channels(self.space, channels, w) for channels in self._base_channels),
                head_channels(self.space, w),
            )
            if len(self._key_cache) > 200_000:
                self._key_cache.clear()
            self._key_cache[key] = network
        return network

    def sample(self, rng: np.random.Generator, avoid: set | frozenset = frozenset()) -> np.ndarray:
        """A point drawn uniformly from the cube under the band (rejection sampling).

        Networks whose :meth:`network_key` is in ``avoid`` are rejected too, unless nothing else is found.
        If the band is so small a corner of the cube that rejection keeps failing, draws are projected into
        the band by :meth:`project` instead.

        Args:
            rng: the random generator to draw from.
            avoid: network keys already handed out.

        Returns:
            ``(3,)`` array ``(r, d, w)``.

        Raises:
            UserError: if no network in the band could be found.
        """
        already_seen = None
        for attempt in range(_SAMPLE_ATTEMPTS):
            x = rng.uniform(self.low, self.high)
            if attempt < _REJECTION_ATTEMPTS:
                if not self.contains(self.flops(x)):
                    continue
            else:
                x = self.project(x)
                if x is None:
                    continue
            if self.network_key(x) in avoid:
                already_seen = x
                continue
            return x
        if already_seen is not None:
            logger.debug("every network drawn from the band %s was already tried: repeating one", self.describe())
            return already_seen
        raise UserError(
            f"no network of the space has FLOPs in {self.describe()}: widen the band (lower --floor or raise"
            " --budget)"
        )

    def project(self, x: np.ndarray) -> np.ndarray | None:
        """Move ``x`` into the band by scaling r, d and w by one common factor.

        Each multiplier is ``clip(x * s, low, high)``; FLOPs are monotone in ``s``, so bisection on ``log s``
        finds the factor closest to 1 whose network is inside the band (within ``_REPAIR_TOLERANCE`` of the
        band edge it crosses). The ratios r : d : w the search explores are kept wherever no bound clips them.

        Args:
            x: ``(3,)`` array ``(r, d, w)``, possibly outside the bounds.

        Returns:
            The repaired ``(3,)`` array, or ``None`` if the FLOPs step over the band along this ray.
        """
        x = np.clip(np.asarray(x, dtype=float), self.low, self.high)
        flops = self.flops(x)
        if self.contains(flops):
            return x

        def at(scale: float) -> np.ndarray:
            return np.clip(x * scale, self.low, self.high)

        too_large = flops > self.budget
        if too_large:  # at(lo) is the low corner (min FLOPs <= budget): shrink towards it
            lo, hi = float(np.min(self.low / x)), 1.0
        else:  # at(hi) is the high corner (max FLOPs >= floor): grow towards it
            lo, hi = 1.0, float(np.max(self.high / x))
        for _ in range(_BISECTION_STEPS):
            if hi / lo < 1.0 + 1e-9:
                break
            mid = math.sqrt(lo * hi)
            flops = self.flops(at(mid))
            if too_large:
                if flops <= self.budget:
                    lo = mid
                    if flops >= max(self.floor, (1.0 - _REPAIR_TOLERANCE) * self.budget):
                        return at(mid)
                else:
                    hi = mid
            else:
                if flops >= self.floor:
                    hi = mid
                    if flops <= min(self.budget, (1.0 + _REPAIR_TOLERANCE) * self.floor):
                        return at(mid)
                else:
                    lo = mid
        repaired = at(lo if too_large else hi)
        return repaired if self.contains(self.flops(repaired)) else None

    def config(self) -> dict[str, Any]:
        """The band's options, stored with a searcher's state to check a resume uses the same ones."""
        return {
            "space": self.space.name,
            "budget": self.requested_budget,
            "floor": self.floor,
            "num_classes": self.num_classes,
        }


def _as_array(candidate: Candidate) -> np.ndarray:
    return np.array([candidate.r, candidate.d, candidate.w])


def _point_text(x: np.ndarray) -> str:
    return f"r={x[0]:g} d={x[1]:g} w={x[2]:g}"


# ---------------------------------------------------------------------------------------------------------------
# The common contract
# ---------------------------------------------------------------------------------------------------------------


class SearchCore:
    """What both strategies offer: ask for candidates, tell results, save and restore.

    Attributes:
        band: the feasible FLOPs band every candidate lies in.
        seed: seed of the strategy's random generator.
        strategy: ``nsga3`` or ``random``.
    """

    strategy = ""

    def __init__(self, band: FlopsBand, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed {seed!r} must be a non-negative integer: give e.g. --seed 0")
        self.band = band
        self.seed = seed
        self._records: list[TrialRecord] = []

    @property
    def records(self) -> list[TrialRecord]:
        """Every trial told so far, in the order told (a copy). Only ``is_final`` ones are final results."""
        return list(self._records)

    @property
    def pending(self) -> dict[str, Candidate]:
        """Trials handed out and not yet told: trial id -> candidate."""
        raise NotImplementedError

    def ask(self, trial_id: str) -> Candidate | None:
        """The candidate for a new trial, or ``None`` to wait for pending results."""
        raise NotImplementedError

    def tell(self, trial_id: str, top1: float | None, status: str) -> None:
        """Report a trial's result (see :class:`TrialRecord` for ``top1`` and ``status``)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot with a ``version`` key, for :meth:`load_state_dict`."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a core built with the same options."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "seed": self.seed, **self.band.config()}

    # A pickled core (Tune pickles its searcher into the experiment state) is its JSON state.
    def __getstate__(self) -> dict[str, Any]:
        return {"band": self.band, "options": self._options(), "state": self.state_dict()}

    def __setstate__(self, pickled: dict[str, Any]) -> None:
        self.__init__(pickled["band"], **pickled["options"])  # type: ignore[misc]
        self.load_state_dict(pickled["state"])

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _record(
        self,
        trial_id: str,
        candidate: Candidate,
        flops: int,
        top1: float | None,
        status: Status,
        generation: int | None = None,
        index: int | None = None,
    ) -> TrialRecord:
        record = TrialRecord(
            trial_id=trial_id,
            r=candidate.r,
            d=candidate.d,
            w=candidate.w,
            flops=int(flops),
            top1=None if status == "failed" else float(top1),  # type: ignore[arg-type]
            status=status,
            generation=generation,
            index=index,
        )
        self._records.append(record)
        return record

    def _check_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            version = state.get("version") if isinstance(state, dict) else None
            raise UserError(
                f"searcher state has version {version!r}, this tinyray reads version {STATE_VERSION}:"
                " resume with the tinyray that wrote it, or start a new experiment"
            )
        saved = state.get("config", {})
        mine = self.config()
        for key, value in mine.items():
            if saved.get(key) != value:
                raise UserError(
                    f"searcher state was saved with {key}={saved.get(key)!r} but this run has {key}={value!r}:"
                    " resume with the same search options, or start a new experiment"
                )


def _damaged(error: Exception) -> UserError:
    return UserError(f"searcher state is damaged ({type(error).__name__}: {error}): start a new experiment")


# ---------------------------------------------------------------------------------------------------------------
# NSGA-III
# ---------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _pymoo_parts() -> SimpleNamespace:
    """pymoo subclasses of the search, built on first use so that importing this module skips pymoo."""
    from pymoo.core.duplicate import DuplicateElimination
    from pymoo.core.problem import Problem
    from pymoo.core.repair import Repair
    from pymoo.core.sampling import Sampling

    class CubeProblem(Problem):
        """x = (r, d, w) in the cube; F = (-top1, FLOPs / base FLOPs); G = ((FLOPs - budget), (floor - FLOPs)) / budget."""

        def __init__(self, band: FlopsBand) -> None:
            super().__init__(n_var=3, n_obj=2, n_ieq_constr=2, xl=band.low, xu=band.high)

        def _evaluate(self, x: Any, out: dict, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError("candidates are evaluated by training them: use ask/tell")

    class BandSampling(Sampling):
        """Initial population: uniform rejection sampling of the cube under the FLOPs band."""

        def __init__(self, band: FlopsBand, seen: set) -> None:
            super().__init__()
            self.band, self.seen = band, seen

        def _do(self, problem: Any, n_samples: int, *args: Any, random_state: Any = None, **kwargs: Any) -> np.ndarray:
            taken = set(self.seen)
            rows = []
            for _ in range(n_samples):
                x = self.band.sample(random_state, avoid=taken)
                taken.add(self.band.network_key(x))
                rows.append(x)
            return np.array(rows)

    class BandRepair(Repair):
        """Offspring moved into the FLOPs band by :meth:`FlopsBand.project`, or redrawn if that cannot."""

        def __init__(self, band: FlopsBand) -> None:
            super().__init__()
            self.band = band

        def _do(self, problem: Any, X: np.ndarray, random_state: Any = None, **kwargs: Any) -> np.ndarray:
            assert random_state is not None, "pymoo passes the algorithm's random state to repairs"
            rows = []
            for x in X:
                repaired = self.band.project(x)
                rows.append(repaired if repaired is not None else self.band.sample(random_state))
            return np.array(rows)

    class SameNetworkElimination(DuplicateElimination):
        """Two genomes that build the same network are duplicates; so is any network handed out before."""

        def __init__(self, band: FlopsBand, seen: set) -> None:
            super().__init__()
            self.band, self.seen = band, seen

        def _do(self, pop: Any, other: Any, is_duplicate: np.ndarray) -> np.ndarray:
            keys = [self.band.network_key(x) for x in pop.get("X")]
            if other is None:
                taken = set(self.seen)
                for i, key in enumerate(keys):
                    if key in taken:
                        is_duplicate[i] = True
                    taken.add(key)
            else:
                taken = {self.band.network_key(x) for x in other.get("X")}
                for i, key in enumerate(keys):
                    if key in taken:
                        is_duplicate[i] = True
            return is_duplicate

    return SimpleNamespace(
        CubeProblem=CubeProblem,
        BandSampling=BandSampling,
        BandRepair=BandRepair,
        SameNetworkElimination=SameNetworkElimination,
    )


class NSGA3Core(SearchCore):
    """pymoo's NSGA-III over (r, d, w), one generation of trials at a time.

    Generations go through pymoo's ask/tell: the algorithm asks for a population, its members are handed
    out one per :meth:`ask`, and when every member has been told the population is evaluated with the told
    objectives and given back with ``algorithm.tell``. While a generation waits for results, :meth:`ask`
    returns ``None`` (Ray Tune then waits).

    Objectives, both minimised: ``-effective_top1`` and ``FLOPs / base FLOPs``. Constraints
    ``FLOPs <= budget`` and ``FLOPs >= floor`` are always met by construction: the initial population is
    drawn by rejection sampling in the band and offspring are repaired into it (:meth:`FlopsBand.project`,
    redrawn if the FLOPs step over the band). Two genomes that build the same network are duplicates, also
    across generations.

    Partial results are never used as final ones:

    * an early-stopped trial (``stopped``) enters with ``top1 - STOPPED_PENALTY``: dominated at full fidelity
      by every completed trial of no more FLOPs, yet ordered among stopped ones by its partial accuracy;
    * a failed trial enters with ``top1 = FAILED_TOP1`` and a violated constraint, so survival keeps it only
      if there are not enough feasible ones and tournaments never prefer it.

    Restoring replays: a fresh algorithm with the same seed is re-asked and re-told the saved generations in
    order, which reproduces pymoo's state exactly (same random stream), so a restored search continues with
    the suggestions the uninterrupted one would have made.

    Args:
        band: the feasible FLOPs band.
        seed: seed of pymoo's random generator.
        pop_size: trials per generation; NSGA-III gets as many Das-Dennis reference directions.

    Raises:
        UserError: for a population below 4.
    """

    strategy = "nsga3"

    def __init__(self, band: FlopsBand, *, seed: int = 0, pop_size: int = 16) -> None:
        super().__init__(band, seed)
        if isinstance(pop_size, bool) or not isinstance(pop_size, int) or pop_size < 4:
            raise UserError(f"population size {pop_size!r} is too small: NSGA-III needs --pop-size 4 or more")
        self.pop_size = pop_size
        self.base_flops = int(band.flops_fn(1.0, 1.0, 1.0))
        self._reset()

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed, "pop_size": self.pop_size}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "pop_size": self.pop_size}

    def _reset(self) -> None:
        from pymoo.algorithms.moo.nsga3 import NSGA3
        from pymoo.core.termination import NoTermination
        from pymoo.util.ref_dirs import get_reference_directions

        parts = _pymoo_parts()
        self._seen: set = set()
        self._problem = parts.CubeProblem(self.band)
        self._algorithm = NSGA3(
            ref_dirs=get_reference_directions("das-dennis", 2, n_partitions=self.pop_size - 1),
            pop_size=self.pop_size,
            sampling=parts.BandSampling(self.band, self._seen),
            repair=parts.BandRepair(self.band),
            eliminate_duplicates=parts.SameNetworkElimination(self.band, self._seen),
        )
        self._algorithm.setup(self._problem, termination=NoTermination(), seed=self.seed)
        self._generation = 0
        self._records = []
        self._clear_generation()

    def _clear_generation(self) -> None:
        self._offspring: Any = None  # pymoo Population of the generation in flight
        self._candidates: list[Candidate] = []
        self._flops: list[int] = []
        self._queue: list[int] = []
        self._pending: dict[str, int] = {}
        self._told: dict[int, TrialRecord] = {}

    @property
    def generation(self) -> int:
        """Generations completed (told back to NSGA-III) so far."""
        return self._generation

    @property
    def pending(self) -> dict[str, Candidate]:
        return {trial_id: self._candidates[index] for trial_id, index in self._pending.items()}

    def ask(self, trial_id: str) -> Candidate | None:
        """The next member of the current generation, or ``None`` while the generation waits for results.

        Args:
            trial_id: the new trial's id (asking again with a pending id returns its candidate again).
        """
        if trial_id in self._pending:
            return self._candidates[self._pending[trial_id]]
        if self._offspring is None:
            self._start_generation()
        if not self._queue:
            return None
        index = self._queue.pop(0)
        self._pending[trial_id] = index
        return self._candidates[index]

    def tell(self, trial_id: str, top1: float | None, status: str) -> None:
        """Record a result; the generation goes back to NSGA-III once all its members are told.

        Args:
            trial_id: a pending trial's id (others are ignored with a warning).
            top1: accuracy as a fraction in [0, 1] (partial for ``stopped``; ignored for ``failed``).
            status: ``completed``, ``stopped`` or ``failed``.
        """
        top1, checked = _check_result(trial_id, top1, status)
        index = self._pending.pop(trial_id, None)
        if index is None:
            logger.warning("ignoring the result of trial %s: the searcher did not hand it out or was told already", trial_id)
            return
        self._told[index] = self._record(
            trial_id, self._candidates[index], self._flops[index], top1, checked, self._generation, index
        )
        if len(self._told) == len(self._candidates):
            self._finish_generation()

    def parents(self) -> list[TrialRecord]:
        """The trials NSGA-III currently keeps as its population (parents of the next generation)."""
        if self._algorithm.pop is None or not self._algorithm.is_initialized:
            return []
        by_genome = {(rec.r, rec.d, rec.w): rec for rec in self._records if rec.generation is not None}
        return [by_genome[tuple(float(v) for v in x)] for x in self._algorithm.pop.get("X")]

    def _start_generation(self) -> None:
        offspring = self._algorithm.ask()
        if offspring is None or len(offspring) == 0:
            # Mating found no new network (all duplicates): pymoo asks to stop; draw fresh ones instead.
            from pymoo.core.population import Population

            self._algorithm.termination.force_termination = False
            logger.warning("NSGA-III produced no new network in generation %d: drawing random ones", self._generation)
            taken = set(self._seen)
            rows = []
            for _ in range(self.pop_size):
                rows.append(self.band.sample(self._algorithm.random_state, avoid=taken))
                taken.add(self.band.network_key(rows[-1]))
            offspring = Population.new(X=np.array(rows))
        self._offspring = offspring
        for x in offspring.get("X"):
            flops = self.band.flops(x)
            assert self.band.contains(flops), f"candidate {x} has {flops} FLOPs outside {self.band.describe()}"
            self._seen.add(self.band.network_key(x))
            self._candidates.append(Candidate(float(x[0]), float(x[1]), float(x[2])))
            self._flops.append(flops)
        self._queue = list(range(len(self._candidates)))

    def _finish_generation(self) -> None:
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        told = [self._told[index] for index in range(len(self._candidates))]
        objectives = np.array([[-rec.effective_top1, rec.flops / self.base_flops] for rec in told])
        constraints = np.array([self._constraints(rec) for rec in told])
        Evaluator().eval(StaticProblem(self._problem, F=objectives, G=constraints), self._offspring)
        self._algorithm.tell(infills=self._offspring)
        self._generation += 1
        self._clear_generation()

    def _constraints(self, record: TrialRecord) -> list[float]:
        budget_excess = (record.flops - self.band.budget) / self.band.budget
        floor_shortfall = (self.band.floor - record.flops) / self.band.budget
        if record.status == "failed":
            budget_excess = 1.0  # a violation: survival and tournaments rank it below every feasible trial
        return [budget_excess, floor_shortfall]

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: options, completed generations, records and pending trials.

        pymoo's own state is not stored: :meth:`load_state_dict` rebuilds it by replay.
        """
        import pymoo

        return {
            "version": STATE_VERSION,
            "strategy": self.strategy,
            "config": self.config(),
            "pymoo": pymoo.__version__,
            "generation": self._generation,
            "records": [rec.to_dict() for rec in self._records],
            "pending": [
                {"trial_id": trial_id, "generation": self._generation, "index": index, **asdict(self._candidates[index])}
                for trial_id, index in self._pending.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the search from :meth:`state_dict` by replaying its generations into a fresh NSGA-III.

        Raises:
            UserError: if the state is of another version or other options, is damaged, or does not replay to
                the saved candidates (e.g. another pymoo version).
        """
        self._check_state(state)
        try:
            generation = int(state["generation"])
            records = [TrialRecord.from_dict(raw) for raw in state["records"]]
            pending = [(str(p["trial_id"]), int(p["index"]), Candidate(float(p["r"]), float(p["d"]), float(p["w"])))
                       for p in state["pending"]]
        except (KeyError, TypeError, ValueError) as error:
            raise _damaged(error) from error
        by_generation: dict[int, dict[int, TrialRecord]] = {}
        for rec in records:
            if rec.generation is None or rec.index is None or rec.generation > generation:
                raise _damaged(ValueError(f"record of trial {rec.trial_id} has no place in generation {generation}"))
            by_generation.setdefault(rec.generation, {})[rec.index] = rec

        self._reset()
        saved_with = state.get("pymoo", "?")
        for number in range(generation):
            self._start_generation()
            told = by_generation.get(number, {})
            if sorted(told) != list(range(len(self._candidates))):
                raise self._replay_error(number, saved_with)
            self._check_replay(number, {i: rec.candidate for i, rec in told.items()}, saved_with)
            self._told = dict(told)
            self._finish_generation()
        current = by_generation.get(generation, {})
        if current or pending:
            self._start_generation()
            self._check_replay(generation, {i: rec.candidate for i, rec in current.items()}, saved_with)
            self._check_replay(generation, {index: candidate for _, index, candidate in pending}, saved_with)
            self._told = dict(current)
            self._pending = {trial_id: index for trial_id, index, _ in pending}
            handed_out = set(current) | set(self._pending.values())
            self._queue = [i for i in range(len(self._candidates)) if i not in handed_out]
        self._records = records

    def _check_replay(self, generation: int, saved: dict[int, Candidate], saved_with: str) -> None:
        for index, candidate in saved.items():
            replayed = self._candidates[index] if index < len(self._candidates) else None
            if replayed is None or not np.allclose(_as_array(replayed), _as_array(candidate), rtol=1e-12, atol=0.0):
                raise self._replay_error(generation, saved_with)

    @staticmethod
    def _replay_error(generation: int, saved_with: str) -> UserError:
        import pymoo

        return UserError(
            f"cannot resume the NSGA-III searcher: replaying generation {generation} with pymoo {pymoo.__version__}"
            f" does not give the saved candidates (saved with pymoo {saved_with}): resume with the same pymoo"
            " and search options, or start a new experiment"
        )


# ---------------------------------------------------------------------------------------------------------------
# Random search
# ---------------------------------------------------------------------------------------------------------------


class RandomCore(SearchCore):
    """The paper's protocol: candidates drawn uniformly from the cube under the FLOPs band.

    :meth:`ask` always has a candidate (rejection sampling, never a network handed out before while others
    are left); results are only recorded. The state stores the random generator's exact position.

    Args:
        band: the feasible FLOPs band.
        seed: seed of the random generator.
    """

    strategy = "random"

    def __init__(self, band: FlopsBand, *, seed: int = 0) -> None:
        super().__init__(band, seed)
        self._rng = np.random.default_rng(seed)
        self._seen: set = set()
        self._pending: dict[str, tuple[Candidate, int]] = {}

    @property
    def pending(self) -> dict[str, Candidate]:
        return {trial_id: candidate for trial_id, (candidate, _) in self._pending.items()}

    def ask(self, trial_id: str) -> Candidate:
        """A new uniformly drawn candidate in the band (the same one again for a pending ``trial_id``)."""
        if trial_id in self._pending:
            return self._pending[trial_id][0]
        x = self.band.sample(self._rng, avoid=self._seen)
        self._seen.add(self.band.network_key(x))
        candidate = Candidate(float(x[0]), float(x[1]), float(x[2]))
        self._pending[trial_id] = (candidate, self.band.flops(x))
        return candidate

    def tell(self, trial_id: str, top1: float | None, status: str) -> None:
        """Record a result (see :meth:`NSGA3Core.tell`)."""
        top1, checked = _check_result(trial_id, top1, status)
        handed_out = self._pending.pop(trial_id, None)
        if handed_out is None:
            logger.warning("ignoring the result of trial %s: the searcher did not hand it out or was told already", trial_id)
            return
        self._record(trial_id, handed_out[0], handed_out[1], top1, checked)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: options, the generator's position, records and pending trials."""
        return {
            "version": STATE_VERSION,
            "strategy": self.strategy,
            "config": self.config(),
            "rng": self._rng.bit_generator.state,
            "records": [rec.to_dict() for rec in self._records],
            "pending": [
                {"trial_id": trial_id, "flops": flops, **asdict(candidate)}
                for trial_id, (candidate, flops) in self._pending.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`.

        Raises:
            UserError: if the state is of another version or other options, or is damaged.
        """
        self._check_state(state)
        try:
            records = [TrialRecord.from_dict(raw) for raw in state["records"]]
            pending = {
                str(p["trial_id"]): (Candidate(float(p["r"]), float(p["d"]), float(p["w"])), int(p["flops"]))
                for p in state["pending"]
            }
            rng = np.random.default_rng()
            rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError) as error:
            raise _damaged(error) from error
        self._rng = rng
        self._records = records
        self._pending = pending
        self._seen = {self.band.network_key((c.r, c.d, c.w)) for c in [rec.candidate for rec in records]}
        self._seen |= {self.band.network_key((c.r, c.d, c.w)) for c, _ in pending.values()}


# ---------------------------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------------------------


def make_core(
    name: str,
    space: SearchSpace,
    budget: int,
    *,
    floor: int | None = None,
    seed: int = 0,
    pop_size: int = 16,
    num_classes: int = 1000,
    flops_fn: FlopsFn | None = None,
) -> NSGA3Core | RandomCore:
    """Build a search core by name.

    Args:
        name: ``nsga3`` or ``random``.
        space: the search space.
        budget: FLOPs budget (multiply-accumulates of one image).
        floor: smallest FLOPs of a candidate; default ``budget // 16``.
        seed: random seed.
        pop_size: NSGA-III trials per generation (ignored by ``random``).
        num_classes: classifier outputs counted in FLOPs.
        flops_fn: ``flops_fn(r, d, w) -> int``; default the analytic count.

    Raises:
        UserError: for an unknown name or an impossible band (see :class:`FlopsBand`).
    """
    key = str(name).strip().lower()
    if key not in SEARCHERS:
        raise UserError(f"unknown searcher {name!r}: use one of {list(SEARCHERS)}")
    band = FlopsBand(space, budget, floor, num_classes=num_classes, flops_fn=flops_fn)
    if key == "nsga3":
        return NSGA3Core(band, seed=seed, pop_size=pop_size)
    return RandomCore(band, seed=seed)


# ---------------------------------------------------------------------------------------------------------------
# Ray Tune adapter
# ---------------------------------------------------------------------------------------------------------------


def classify_result(
    result: dict[str, Any] | None, *, error: bool, metric: str, max_epochs: int
) -> tuple[float | None, Status]:
    """Turn Tune's end-of-trial report into ``(top1, status)`` for :meth:`SearchCore.tell`.

    Args:
        result: the trial's last result (may be ``None``, or lack the metric).
        error: whether the trial raised.
        metric: the accuracy key in ``result``.
        max_epochs: full fidelity; a trial that ran fewer ``training_iteration`` was early-stopped.

    Returns:
        ``(top1, "completed")``, ``(top1, "stopped")`` or ``(None, "failed")``.
    """
    if error or not result or result.get(metric) is None:
        return None, "failed"
    top1 = float(result[metric])
    if not math.isfinite(top1):
        return None, "failed"
    epochs = int(result.get("training_iteration") or 0)
    return top1, ("completed" if epochs >= max_epochs else "stopped")


def write_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a JSON state atomically: a temporary file in the same folder, then ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(state, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON state written by :func:`write_state`.

    Raises:
        UserError: if the file is missing or is not JSON.
    """
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise UserError(f"cannot read searcher state {path}: {error.strerror}; check the experiment folder")
    except json.JSONDecodeError as error:
        raise UserError(f"searcher state {path} is not valid JSON ({error.msg}): start a new experiment")


def make_tune_searcher(core: SearchCore, *, metric: str = "top1", mode: str = "max", max_epochs: int) -> "Searcher":
    """Wrap a core in a Ray Tune ``Searcher`` (:class:`TinySearcher`).

    Args:
        core: the search core.
        metric: the accuracy key the trainable reports (a fraction in [0, 1]).
        mode: must be ``max``: the searcher maximises accuracy.
        max_epochs: epochs of a full-fidelity trial; a trial ending with fewer ``training_iteration`` was
            early-stopped.
    """
    return _tune_searcher_class()(core, metric=metric, mode=mode, max_epochs=max_epochs)


def __getattr__(name: str) -> Any:
    # ``from tinyray.searcher import TinySearcher`` defines the class (and imports Ray) on first use; it also
    # lets pickle find the class by name.
    if name == "TinySearcher":
        return _tune_searcher_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=1)
def _tune_searcher_class() -> type:
    from ray.tune.search import Searcher

    class TinySearcher(Searcher):
        """Ray Tune ``Searcher`` around a :class:`SearchCore`: suggestions are ``{"r", "d", "w"}`` configs.

        A trial is ``completed`` if its last result has ``training_iteration >= max_epochs``, ``stopped`` if
        fewer (the scheduler stopped it), ``failed`` on error or without the metric. ``save``/``restore``
        write the core's JSON state atomically.
        """

        def __init__(self, core: SearchCore, *, metric: str = "top1", mode: str = "max", max_epochs: int) -> None:
            _check_mode(mode)
            if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
                raise UserError(f"max epochs {max_epochs!r} must be a positive integer: give e.g. --max-epochs 6")
            super().__init__(metric=metric, mode=mode)
            self.core = core
            self.max_epochs = max_epochs

        def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
            if mode:
                _check_mode(mode)
                self._mode = mode
            if metric:
                self._metric = metric
            return True

        def suggest(self, trial_id: str) -> dict[str, float] | None:
            candidate = self.core.ask(trial_id)
            if candidate is None:
                return None
            return {"r": candidate.r, "d": candidate.d, "w": candidate.w}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            top1, status = classify_result(result, error=error, metric=self.metric, max_epochs=self.max_epochs)
            self.core.tell(trial_id, top1, status)

        def save(self, checkpoint_path: str) -> None:
            write_state(
                checkpoint_path,
                {
                    "version": STATE_VERSION,
                    "metric": self.metric,
                    "mode": self.mode,
                    "max_epochs": self.max_epochs,
                    "core": self.core.state_dict(),
                },
            )

        def restore(self, checkpoint_path: str) -> None:
            state = read_state(checkpoint_path)
            if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "core" not in state:
                raise UserError(
                    f"{checkpoint_path} is not a tinyray searcher state of version {STATE_VERSION}:"
                    " start a new experiment"
                )
            self.core.load_state_dict(state["core"])
            self._metric = state.get("metric", self._metric)
            self.max_epochs = int(state.get("max_epochs", self.max_epochs))

    TinySearcher.__module__ = __name__
    TinySearcher.__qualname__ = "TinySearcher"
    return TinySearcher


def _check_mode(mode: str) -> None:
    if mode != "max":
        raise UserError(f"the tinyray searcher maximises accuracy: use mode 'max', not {mode!r}")
