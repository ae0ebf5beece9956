"""The contract every searcher keeps, and the record of what it was told.

A searcher (a *core*: a plain Python object that tests and benchmarks drive without Ray) hands out (r, d, w)
candidates inside a :class:`~tinyray.searchers.band.FlopsBand` with ``ask(trial_id)``, learns from
``tell(trial_id, top1, status)``, and saves and restores itself as a JSON-able ``state_dict``. The Ray Tune
adapter (:class:`tinyray.tune.searcher.TinySearcher`) wraps any of them.

**Learning from early-stopped trials.** A trial the scheduler stopped has only a partial accuracy, measured
before its learning-rate schedule ended; it underestimates the network, by a different amount for each network.
tinyray's searchers rank it as ``top1 - STOPPED_PENALTY`` (1.0, :attr:`TrialRecord.effective_top1`): dominated by
every fully trained network of no more FLOPs, so survival prefers measured results, yet ordered among the stopped
ones by partial accuracy and FLOPs, so a network that reached a later rung outranks one stopped at the first, and a
stopped network still steers the search away from its region rather than being thrown away. The alternative that
Ray's ``OptunaSearch`` takes (and the ``optuna-nsga3`` searcher keeps, to be comparable), telling the partial
accuracy as if final, lets a stopped network displace fully trained ones from the population whenever its
underestimate happens to fall on their front. ``benchmarks/stopped_trials.py`` measured both on the search
benchmark (docs/benchmarks.md): about equal, the penalty slightly ahead.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from tinyray.cube import Candidate
from tinyray.errors import UserError
from tinyray.files import SEARCHER_STATE_VERSION
from tinyray.searchers.band import FlopsBand
from tinyray.status import COMPLETED, EARLY_STOPPED, FAILED, Status, check_status

logger = logging.getLogger(__name__)

#: An early-stopped trial enters NSGA-III with ``top1 - STOPPED_PENALTY``. top1 is a fraction in [0, 1], so
#: this ranks it below every completed trial while keeping the order among stopped ones.
STOPPED_PENALTY = 1.0
#: A failed trial enters NSGA-III with this top1 (below every stopped trial) and a constraint violation.
FAILED_TOP1 = -2.0



@dataclass(frozen=True)
class TrialRecord:
    """What the searcher was told about one trial.

    Attributes:
        trial_id: Tune's trial id.
        r, d, w: the candidate's multipliers.
        flops: analytic multiply-accumulates of one image at the candidate's resolution.
        top1: accuracy as a fraction in [0, 1]; for an ``early-stopped`` trial at its partial fidelity; ``None``
            for a ``failed`` trial.
        status: one of :data:`tinyray.status.STATUSES`. Only completed records are final results.
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
        return self.status == COMPLETED

    @property
    def effective_top1(self) -> float:
        """The top1 NSGA-III ranks by: top1, ``top1 - STOPPED_PENALTY`` if early-stopped, ``FAILED_TOP1`` if failed."""
        if self.status == COMPLETED:
            return float(self.top1)
        if self.status == EARLY_STOPPED:
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
            status=check_status(raw["status"]),
            generation=None if raw.get("generation") is None else int(raw["generation"]),
            index=None if raw.get("index") is None else int(raw["index"]),
        )


def _check_result(trial_id: str, top1: float | None, status: str) -> tuple[float | None, Status]:
    """Validate a told result; a completed or stopped trial without a finite top1 counts as failed."""
    checked = check_status(status)
    if checked == FAILED:
        return None, checked
    if top1 is None or not math.isfinite(top1):
        logger.warning("trial %s reported %s without a finite top1: counted as failed", trial_id, checked)
        return None, FAILED
    if not 0.0 <= top1 <= 1.0:
        raise ValueError(f"trial {trial_id} reported top1 {top1!r}: top1 must be a fraction in [0, 1]")
    return float(top1), checked



class SearchCore:
    """What every searcher offers: ask for candidates, tell results, save and restore.

    A new searcher subclasses this, sets :attr:`strategy`, implements the methods that raise
    ``NotImplementedError`` (``pending``, ``ask``, ``tell``, ``state_dict``, ``load_state_dict``) and records each
    told result with :meth:`_record`. Its constructor takes the band and keyword options among those
    :func:`tinyray.searchers.make_searcher` offers (``seed``, ``pop_size``); :meth:`_options` returns the ones it
    keeps, which a pickled searcher is rebuilt with.

    Attributes:
        band: the feasible FLOPs band every candidate lies in.
        seed: seed of the strategy's random generator.
        strategy: the searcher's name in the registry (:data:`tinyray.searchers.SEARCHERS`).
        rules: keys of :meth:`config` that older tinyrays did not save and whose absence means other candidates
            would be replayed: a state without one is refused as saved by an older tinyray.
    """

    strategy = ""
    rules: tuple[str, ...] = ()

    def __init__(self, band: FlopsBand, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed {seed!r} must be a non-negative integer: give e.g. --seed 0")
        self.band = band
        self.seed = seed
        self._records: list[TrialRecord] = []

    @cached_property
    def base_flops(self) -> int:
        """FLOPs of the base network at (1, 1, 1): the unit of a multi-objective searcher's FLOPs objective."""
        return int(self.band.flops_fn(1.0, 1.0, 1.0))

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
            top1=None if status == FAILED else float(top1),  # type: ignore[arg-type]
            status=status,
            generation=generation,
            index=index,
        )
        self._records.append(record)
        return record

    def _check_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != SEARCHER_STATE_VERSION:
            version = state.get("version") if isinstance(state, dict) else None
            raise UserError(
                f"searcher state has version {version!r}, this tinyray reads version {SEARCHER_STATE_VERSION}:"
                " resume with the tinyray that wrote it, or start a new experiment"
            )
        saved = state.get("config", {})
        mine = self.config()
        for key, value in mine.items():
            if key not in saved and key in self.rules:
                raise UserError(
                    f"searcher state was saved by a tinyray older than its {key!r} rule, whose candidates this tinyray"
                    " would not replay: finish the search with the tinyray that started it, or start a new experiment"
                )
            if saved.get(key) != value:
                raise UserError(
                    f"searcher state was saved with {key}={saved.get(key)!r} but this run has {key}={value!r}:"
                    " resume with the same search options, or start a new experiment"
                )


def check_pop_size(pop_size: int) -> int:
    """A population size of an NSGA-III searcher, or a :class:`UserError`."""
    if isinstance(pop_size, bool) or not isinstance(pop_size, int) or pop_size < 4:
        raise UserError(f"population size {pop_size!r} is too small: NSGA-III needs --pop-size 4 or more")
    return pop_size


def take_pending(pending: dict[str, Any], trial_id: str) -> Any:
    """Remove and return what ``pending`` holds for a told trial; None, with a warning, for a trial not handed out
    (or told already), whose result is then ignored."""
    handed_out = pending.pop(trial_id, None)
    if handed_out is None:
        logger.warning("ignoring the result of trial %s: the searcher did not hand it out or was told already", trial_id)
    return handed_out


def pending_state(pending: dict[str, tuple[Candidate, int]]) -> list[dict[str, Any]]:
    """The JSON form of a searcher's pending trials ``{trial_id: (candidate, flops)}``."""
    return [{"trial_id": trial_id, "flops": flops, **asdict(candidate)}
            for trial_id, (candidate, flops) in pending.items()]


def load_common_state(state: dict[str, Any]) -> tuple[list[TrialRecord], dict[str, tuple[Candidate, int]], Any]:
    """``(records, pending, rng)`` read back from a searcher state's ``records``, ``pending`` (:func:`pending_state`)
    and ``rng`` (a numpy bit generator's state). Raises ``KeyError``/``TypeError``/``ValueError`` on a damaged state,
    for the caller to turn into :func:`_damaged`."""
    import numpy as np

    records = [TrialRecord.from_dict(raw) for raw in state["records"]]
    pending = {
        str(p["trial_id"]): (Candidate(float(p["r"]), float(p["d"]), float(p["w"])), int(p["flops"]))
        for p in state["pending"]
    }
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    return records, pending, rng


def _damaged(error: Exception) -> UserError:
    return UserError(f"searcher state is damaged ({type(error).__name__}: {error}): start a new experiment")
