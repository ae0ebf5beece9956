"""The ``nsga3`` searcher (the default): pymoo's NSGA-III over (r, d, w), through pymoo's ask/tell interface.

The genome is (r, d, w) inside the space's bounds; the objectives (both minimised) are ``-top1`` and
``FLOPs / base FLOPs`` (see :mod:`tinyray.searchers.base` for how early-stopped and failed trials enter).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
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
from tinyray.searchers.band import FlopsBand
from tinyray.searchers.base import SearchCore, TrialRecord, _check_result, _damaged, check_pop_size, take_pending
from tinyray.status import FAILED

logger = logging.getLogger(__name__)


def _as_array(candidate: Candidate) -> np.ndarray:
    return np.array([candidate.r, candidate.d, candidate.w])



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

    * an early-stopped trial enters with ``top1 - STOPPED_PENALTY``: dominated at full fidelity
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
        self.pop_size = check_pop_size(pop_size)
        self._reset()

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed, "pop_size": self.pop_size}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "pop_size": self.pop_size}

    def _reset(self) -> None:
        self._seen: set = set()
        self._problem = CubeProblem(self.band)
        self._algorithm = NSGA3(
            ref_dirs=get_reference_directions("das-dennis", 2, n_partitions=self.pop_size - 1),
            pop_size=self.pop_size,
            sampling=BandSampling(self.band, self._seen),
            repair=BandRepair(self.band),
            eliminate_duplicates=SameNetworkElimination(self.band, self._seen),
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
            top1: accuracy as a fraction in [0, 1] (partial if ``early-stopped``; ignored if ``failed``).
            status: one of :data:`tinyray.status.STATUSES`.
        """
        top1, checked = _check_result(trial_id, top1, status)
        index = take_pending(self._pending, trial_id)
        if index is None:
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
        return UserError(
            f"cannot resume the NSGA-III searcher: replaying generation {generation} with pymoo {pymoo.__version__}"
            f" does not give the saved candidates (saved with pymoo {saved_with}): resume with the same pymoo"
            " and search options, or start a new experiment"
        )
