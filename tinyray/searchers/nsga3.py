"""The ``nsga3`` searcher (the default): pymoo's NSGA-III over (r, d, w), through pymoo's ask/tell interface.

The genome is (r, d, w) inside the space's bounds; the objectives (both minimised) are ``-top1`` and
``FLOPs / base FLOPs`` (see :mod:`tinyray.searchers.base` for how early-stopped and failed trials enter).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pymoo
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem
from pymoo.util.ref_dirs import get_reference_directions

from tinyray.cube import Candidate
from tinyray.errors import UserError
from tinyray.files import SEARCHER_STATE_VERSION
from tinyray.searchers.band import REPAIR_TOLERANCE, FlopsBand
from tinyray.searchers.base import SearchCore, TrialRecord, _check_result, _damaged, check_pop_size, take_pending
from tinyray.status import FAILED

logger = logging.getLogger(__name__)


#: How the initial population is drawn (see :class:`BandSampling`).
INITIAL_SAMPLINGS = ("log-flops", "uniform")


def _as_array(candidate: Candidate) -> np.ndarray:
    return np.array([candidate.r, candidate.d, candidate.w])



class CubeProblem(Problem):
    """x = (r, d, w) in the cube; F = (-top1, FLOPs / base FLOPs); G = ((FLOPs - budget), (floor - FLOPs)) / budget."""

    def __init__(self, band: FlopsBand) -> None:
        super().__init__(n_var=3, n_obj=2, n_ieq_constr=2, xl=band.low, xu=band.high)

    def _evaluate(self, x: Any, out: dict, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("candidates are evaluated by training them: use ask/tell")

class BandSampling(Sampling):
    """Initial population: spread evenly over log FLOPs from the band's floor to its budget
    (:meth:`FlopsBand.sample_levels`), or drawn uniformly from the cube under the band (``initial="uniform"``)."""

    def __init__(self, band: FlopsBand, seen: set, initial: str = "log-flops") -> None:
        super().__init__()
        self.band, self.seen, self.initial = band, seen, initial

    def _do(self, problem: Any, n_samples: int, *args: Any, random_state: Any = None, **kwargs: Any) -> np.ndarray:
        if self.initial == "log-flops":
            return self.band.sample_levels(random_state, n_samples, avoid=self.seen)
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


@dataclass
class _Generation:
    """A generation in flight: pymoo's population of it, its candidates, who has which, and what was told."""

    number: int
    offspring: Any  # pymoo Population
    candidates: list[Candidate] = field(default_factory=list)
    flops: list[int] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)  # indices not handed out yet
    told: dict[int, TrialRecord] = field(default_factory=dict)


class NSGA3Core(SearchCore):
    """pymoo's NSGA-III over (r, d, w), one generation of trials at a time, or with generations bred ahead.

    Generations go through pymoo's ask/tell: the algorithm asks for a population, its members are handed
    out one per :meth:`ask` in pymoo's order (the search's last ``pop_size`` most FLOPs first, see ``trials``), and when every member has been told the population is evaluated with the told
    objectives and given back with ``algorithm.tell``. With ``ahead=0`` (the default), while a generation waits
    for its results :meth:`ask` returns ``None`` (Ray Tune then waits, and the freed slots idle until the
    generation's last trial ends). With ``ahead=k``, ``k`` more generations are asked from pymoo before the
    oldest one is told, so freed slots take members of the next generation: pymoo is called in the fixed order
    ask 0..k, then (tell g, ask g+k+1) for g = 0, 1, ..., generations being told in order. Generation g+k+1 is
    bred from the survivors of generations up to g, so a search with ``ahead=k`` is as reproducible as one without
    (the same results give the same candidates) but not the same search.

    Objectives, both minimised: ``-effective_top1`` and ``FLOPs / base FLOPs``. Constraints
    ``FLOPs <= budget`` and ``FLOPs >= floor`` are always met by construction: the initial population is
    spread evenly over log FLOPs from the floor to the budget (:meth:`FlopsBand.sample_levels`; one network
    at each end, so the front can reach the budget the formula is asked about), and from the second generation
    on one offspring is the most accurate network so far scaled onto the budget (``edge``: the formula is asked
    about the budget, so the search measures its best shape there); offspring are repaired into it (:meth:`FlopsBand.project`,
    redrawn if the FLOPs step over the band). Two genomes that build the same network are duplicates, also
    across generations.

    Partial results are never used as final ones:

    * an early-stopped trial enters with ``top1 - STOPPED_PENALTY``: dominated at full fidelity
      by every completed trial of no more FLOPs, yet ordered among stopped ones by its partial accuracy;
    * a failed trial enters with ``top1 = FAILED_TOP1`` and a violated constraint, so survival keeps it only
      if there are not enough feasible ones and tournaments never prefer it.

    Restoring replays: a fresh algorithm with the same seed is re-asked and re-told the saved generations in
    the same order, which reproduces pymoo's state exactly (same random stream), so a restored search continues
    with the suggestions the uninterrupted one would have made.

    Args:
        band: the feasible FLOPs band.
        seed: seed of pymoo's random generator.
        pop_size: trials per generation; NSGA-III gets as many Das-Dennis reference directions.
        ahead: generations bred ahead of the oldest one in flight (0: wait for each generation's results).
        initial: the initial population: ``"log-flops"`` (the default) or ``"uniform"`` (uniform draws of the
            cube under the band, what tinyray did before 2026-12-06; kept for comparisons).
        edge: from the second generation on, one offspring a generation is the population's most accurate
            network scaled onto the budget (:meth:`_put_on_the_edge`); False breeds every offspring.

    Raises:
        UserError: for a population below 4, a negative ``ahead`` or an unknown ``initial``.
    """

    strategy = "nsga3"
    rules = ("initial", "edge")  # session 9's initial population and budget-edge offspring

    def __init__(self, band: FlopsBand, *, seed: int = 0, pop_size: int = 16, ahead: int = 0,
                 initial: str = "log-flops", edge: bool = True, trials: int | None = None) -> None:
        super().__init__(band, seed)
        # the search's trial count, if known: its last pop_size trials are handed out most FLOPs first (longest
        # processing time first), so that the trials still running when nothing is left to start are short ones;
        # members of the first generation never are (a search of pop_size trials or fewer keeps pymoo's order)
        self.trials = trials
        if initial not in INITIAL_SAMPLINGS:
            raise UserError(f"initial population {initial!r} is not one of {', '.join(INITIAL_SAMPLINGS)}")
        self.initial = initial
        self.edge = bool(edge)
        self.pop_size = check_pop_size(pop_size)
        if isinstance(ahead, bool) or not isinstance(ahead, int) or ahead < 0:
            raise UserError(f"generations bred ahead must be a whole number of at least 0, got {ahead!r}")
        self.ahead = ahead
        self._reset()

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed, "pop_size": self.pop_size, "ahead": self.ahead, "initial": self.initial,
                "edge": self.edge}

    def config(self) -> dict[str, Any]:
        # ``ahead`` only when set: states saved before it existed (one generation at a time) still load.
        # ``initial`` and ``edge`` always: a state saved before them replays other candidates, so it is refused.
        return {**super().config(), "pop_size": self.pop_size, **({"ahead": self.ahead} if self.ahead else {}),
                "initial": self.initial, "edge": self.edge}

    def _reset(self) -> None:
        self._seen: set = set()
        self._problem = CubeProblem(self.band)
        self._algorithm = NSGA3(
            ref_dirs=get_reference_directions("das-dennis", 2, n_partitions=self.pop_size - 1),
            pop_size=self.pop_size,
            sampling=BandSampling(self.band, self._seen, self.initial),
            repair=BandRepair(self.band),
            eliminate_duplicates=SameNetworkElimination(self.band, self._seen),
        )
        self._algorithm.setup(self._problem, termination=NoTermination(), seed=self.seed)
        self._generation = 0  # generations told
        self._asked = 0  # generations asked from pymoo
        self._records = []
        self._flight: dict[int, _Generation] = {}
        self._pending: dict[str, tuple[int, int]] = {}  # trial id -> (generation, index)

    @property
    def generation(self) -> int:
        """Generations completed (told back to NSGA-III) so far."""
        return self._generation

    @property
    def pending(self) -> dict[str, Candidate]:
        return {trial_id: self._flight[number].candidates[index]
                for trial_id, (number, index) in self._pending.items()}

    def ask(self, trial_id: str) -> Candidate | None:
        """The next member of the oldest generation in flight that has one, or ``None`` while every generation
        in flight (``1 + ahead``) is handed out and waits for results.

        Args:
            trial_id: the new trial's id (asking again with a pending id returns its candidate again).
        """
        if trial_id in self._pending:
            number, index = self._pending[trial_id]
            return self._flight[number].candidates[index]
        self._fill_flight()
        last = self.trials is not None and len(self._records) + len(self._pending) >= self.trials - self.pop_size
        for number in sorted(self._flight):
            generation = self._flight[number]
            if generation.queue:
                # the first generation keeps its order (floor to budget) whatever the trial count
                position = max(range(len(generation.queue)),
                               key=lambda k: generation.flops[generation.queue[k]]) if last and number > 0 else 0
                index = generation.queue.pop(position)
                self._pending[trial_id] = (number, index)
                return generation.candidates[index]
        return None

    def tell(self, trial_id: str, top1: float | None, status: str) -> None:
        """Record a result; generations go back to NSGA-III in order, each once all its members are told.

        Args:
            trial_id: a pending trial's id (others are ignored with a warning).
            top1: accuracy as a fraction in [0, 1] (partial if ``early-stopped``; ignored if ``failed``).
            status: one of :data:`tinyray.status.STATUSES`.
        """
        top1, checked = _check_result(trial_id, top1, status)
        where = take_pending(self._pending, trial_id)
        if where is None:
            return
        number, index = where
        generation = self._flight[number]
        generation.told[index] = self._record(
            trial_id, generation.candidates[index], generation.flops[index], top1, checked, number, index
        )
        while self._generation in self._flight and self._complete(self._flight[self._generation]):
            self._finish_generation()

    @staticmethod
    def _complete(generation: _Generation) -> bool:
        return len(generation.told) == len(generation.candidates)

    def parents(self) -> list[TrialRecord]:
        """The trials NSGA-III currently keeps as its population (parents of the next generation)."""
        if self._algorithm.pop is None or not self._algorithm.is_initialized:
            return []
        by_genome = {(rec.r, rec.d, rec.w): rec for rec in self._records if rec.generation is not None}
        return [by_genome[tuple(float(v) for v in x)] for x in self._algorithm.pop.get("X")]

    def _fill_flight(self) -> None:
        """Ask pymoo for generations until ``1 + ahead`` are in flight."""
        while self._asked <= self._generation + self.ahead:
            self._start_generation()

    def _start_generation(self) -> None:
        offspring = self._algorithm.ask()
        if offspring is None or len(offspring) == 0:
            # Mating found no new network (all duplicates): pymoo asks to stop; draw fresh ones instead.
            self._algorithm.termination.force_termination = False
            logger.warning("NSGA-III produced no new network in generation %d: drawing random ones", self._asked)
            taken = set(self._seen)
            rows = []
            for _ in range(self.pop_size):
                rows.append(self.band.sample(self._algorithm.random_state, avoid=taken))
                taken.add(self.band.network_key(rows[-1]))
            offspring = Population.new(X=np.array(rows))
        elif self.edge and self._generation > 0:
            self._put_on_the_edge(offspring)
        generation = _Generation(self._asked, offspring)
        for x in offspring.get("X"):
            flops = self.band.flops(x)
            assert self.band.contains(flops), f"candidate {x} has {flops} FLOPs outside {self.band.describe()}"
            self._seen.add(self.band.network_key(x))
            generation.candidates.append(Candidate(float(x[0]), float(x[1]), float(x[2])))
            generation.flops.append(flops)
        generation.queue = list(range(len(generation.candidates)))
        self._flight[generation.number] = generation
        self._asked += 1

    def _put_on_the_edge(self, offspring: Any) -> None:
        """Replace the last offspring by the most accurate network of the population scaled onto the budget.

        The population is pymoo's survivors of the generations told so far (replayed exactly on restore). Its
        most accurate member (by the objective NSGA-III ranks: stopped trials are penalised) is scaled by one
        common factor, as repair scales, to within ``REPAIR_TOLERANCE`` below the budget, or to the largest network
        of that shape below it where a whole block or channel step jumps over that window
        (:meth:`FlopsBand.grow_to_budget`). Nothing changes if growing adds less than ``REPAIR_TOLERANCE`` of its
        FLOPs (it is at the edge already), or if the grown network was tried before or is among the offspring.
        """
        population = self._algorithm.pop
        objectives = population.get("F") if population is not None else None
        if objectives is None or len(objectives) == 0 or len(offspring) < 2:
            return
        best = np.asarray(population.get("X")[int(np.argmin(objectives[:, 0]))], dtype=float)
        edge = self.band.grow_to_budget(best)
        # a best network already at the edge (an earlier edge offspring, say) grows by a pixel at most: no slot for it
        if edge is None or self.band.flops(edge) <= (1.0 + REPAIR_TOLERANCE) * self.band.flops(best):
            return
        rows = offspring.get("X")
        key = self.band.network_key(edge)
        if key in self._seen or key in {self.band.network_key(x) for x in rows}:
            return
        rows = np.array(rows, dtype=float)
        rows[-1] = edge
        offspring.set("X", rows)

    def _finish_generation(self) -> None:
        generation = self._flight.pop(self._generation)
        told = [generation.told[index] for index in range(len(generation.candidates))]
        objectives = np.array([[-rec.effective_top1, rec.flops / self.base_flops] for rec in told])
        constraints = np.array([self._constraints(rec) for rec in told])
        Evaluator().eval(StaticProblem(self._problem, F=objectives, G=constraints), generation.offspring)
        self._algorithm.tell(infills=generation.offspring)
        self._generation += 1
        if self.ahead:
            self._fill_flight()  # eagerly, so pymoo's order of asks and tells never depends on timing

    def _constraints(self, record: TrialRecord) -> list[float]:
        budget_excess = (record.flops - self.band.budget) / self.band.budget
        floor_shortfall = (self.band.floor - record.flops) / self.band.budget
        if record.status == FAILED:
            budget_excess = 1.0  # a violation: survival and tournaments rank it below every feasible trial
        return [budget_excess, floor_shortfall]

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: options, completed generations, records and pending trials.

        pymoo's own state is not stored: :meth:`load_state_dict` rebuilds it by replay.
        """
        return {
            "version": SEARCHER_STATE_VERSION,
            "strategy": self.strategy,
            "config": self.config(),
            "pymoo": pymoo.__version__,
            "generation": self._generation,
            "records": [rec.to_dict() for rec in self._records],
            "pending": [
                {"trial_id": trial_id, "generation": number, "index": index,
                 **asdict(self._flight[number].candidates[index])}
                for trial_id, (number, index) in self._pending.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the search from :meth:`state_dict` by replaying its generations into a fresh NSGA-III.

        Raises:
            UserError: if the state is of another version or other options, is damaged, or does not replay to
                the saved candidates (e.g. another pymoo version).
        """
        self._check_state(state)
        saved_ahead = state.get("config", {}).get("ahead", 0) if isinstance(state.get("config"), dict) else 0
        if saved_ahead != self.ahead:
            raise UserError(f"searcher state was saved with ahead={saved_ahead!r} but this run has ahead={self.ahead!r}:"
                            " resume with the same options, or start a new experiment")
        try:
            generation = int(state["generation"])
            records = [TrialRecord.from_dict(raw) for raw in state["records"]]
            pending = [(str(p["trial_id"]), int(p.get("generation", generation)), int(p["index"]),
                        Candidate(float(p["r"]), float(p["d"]), float(p["w"]))) for p in state["pending"]]
        except (KeyError, TypeError, ValueError) as error:
            raise _damaged(error) from error
        last = generation + self.ahead
        by_generation: dict[int, dict[int, TrialRecord]] = {}
        for rec in records:
            if rec.generation is None or rec.index is None or rec.generation > last:
                raise _damaged(ValueError(f"record of trial {rec.trial_id} has no place in generation {generation}"))
            by_generation.setdefault(rec.generation, {})[rec.index] = rec
        if any(not generation <= number <= last for _, number, _, _ in pending):
            raise _damaged(ValueError(f"a pending trial has no place in generations {generation}-{last}"))

        self._reset()
        saved_with = state.get("pymoo", "?")
        for number in range(generation):
            self._fill_flight() if self.ahead else self._start_generation()
            flight = self._flight[number]
            told = by_generation.get(number, {})
            if sorted(told) != list(range(len(flight.candidates))):
                raise self._replay_error(number, saved_with)
            self._check_replay(flight, {i: rec.candidate for i, rec in told.items()}, saved_with)
            flight.told = dict(told)
            self._finish_generation()
        handed = {(number, index): candidate for _, number, index, candidate in pending}
        in_flight = [number for number in range(generation, last + 1)
                     if by_generation.get(number) or any(key[0] == number for key in handed)]
        if in_flight or self.ahead:
            self._fill_flight() if self.ahead else self._start_generation()
        for number, flight in self._flight.items():
            current = by_generation.get(number, {})
            self._check_replay(flight, {i: rec.candidate for i, rec in current.items()}, saved_with)
            self._check_replay(flight, {i: c for (n, i), c in handed.items() if n == number}, saved_with)
            flight.told = dict(current)
            taken = set(current) | {i for (n, i) in handed if n == number}
            flight.queue = [i for i in range(len(flight.candidates)) if i not in taken]
        if any(number not in self._flight for number in in_flight):
            raise _damaged(ValueError(f"trials of generations {in_flight} but {sorted(self._flight)} in flight"))
        self._pending = {trial_id: (number, index) for trial_id, number, index, _ in pending}
        self._records = records

    def _check_replay(self, flight: _Generation, saved: dict[int, Candidate], saved_with: str) -> None:
        for index, candidate in saved.items():
            replayed = flight.candidates[index] if index < len(flight.candidates) else None
            if replayed is None or not np.allclose(_as_array(replayed), _as_array(candidate), rtol=1e-12, atol=0.0):
                raise self._replay_error(flight.number, saved_with)

    @staticmethod
    def _replay_error(generation: int, saved_with: str) -> UserError:
        return UserError(
            f"cannot resume the NSGA-III searcher: replaying generation {generation} with pymoo {pymoo.__version__}"
            f" does not give the saved candidates (saved with pymoo {saved_with}): resume with the same pymoo"
            " and search options, or start a new experiment"
        )
