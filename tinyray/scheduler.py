"""The scheduler: a multi-objective ASHA that stops trials early without starving the low-FLOPs end of the front.

Ray Tune's ASHA ranks trials by one metric (top-1), so on an accuracy/FLOPs search it stops the small networks
first. :class:`MOASHA` keeps ASHA's asynchronous rungs but ranks by both objectives:

* Rungs are at ``grace_period * eta**k`` epochs for ``k = 0, 1, ...`` below ``max_t`` (as Ray's ASHA with one
  bracket). When a trial first reports at or past a rung, its ``(top1, flops)`` is recorded there.
* All results recorded at that rung, the newcomer's included, are ranked: pymoo's non-dominated sorting over
  ``(-top1, flops)`` gives each its front; inside a front, larger crowding distance (pymoo's, in the plane of the
  front's own ranges; the two ends of a front have infinite distance) comes first; exact ties fall to higher
  top1, then lower FLOPs, then the earlier arrival. The trial's **rank position** in that order (0 = best) is
  what counts, not the order in which an argsort lists the trials (Syne Tune's MOASHA reads the latter as the
  former, so a trial that dominates every other can be stopped; here such a trial is alone on the first front,
  at position 0, and always continues).
* The trial continues iff its position is below ``ceil(n / eta)`` for the ``n`` results at the rung. While a rung
  holds fewer than ``eta`` results every trial continues: with so few there is no top ``1/eta`` to speak of, and
  the asynchronous ASHA paper promotes early rather than stopping on too little evidence. (Ray's ASHA instead
  compares with the percentile of whatever is there, so its second trial already stops if it is worse than the
  first.)
* A trial whose top1 is within ``epsilon`` (default 0.01) of the best top1 at the rung also continues: FLOPs alone
  never stop a trial whose accuracy is as good as any seen. Accuracy differences that small are noise at partial
  fidelity, and early in training every network can sit at chance (on the built-in data after one epoch of a
  nine-epoch schedule, all of them score 0.100); pure Pareto ranking would then keep only the cheapest networks,
  where Ray's ASHA, which stops only results strictly below its cutoff, keeps them all.
* A trial that reaches ``max_t`` is stopped (it is done). Decisions are final: a trial that continued is never
  re-ranked at that rung later, as in ASHA.

:class:`MOASHA` is a plain object (tests and the benchmark drive it without Ray); its state is a versioned JSON
dict (:meth:`MOASHA.to_dict` / :meth:`MOASHA.from_dict`). :class:`tinyray.tune.scheduler.MOASHAScheduler`
wraps it in a Ray Tune ``TrialScheduler`` that reads ``top1``, ``flops`` and ``training_iteration`` from each result
and, because Tune restores a searcher but not a scheduler, appends every recorded result to a journal at
``state_path`` (:meth:`MOASHA.record_of`) and loads it back when constructed with an existing file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tinyray.errors import UserError
from tinyray.files import SCHEDULER_STATE_VERSION as STATE_VERSION

Decision = Literal["continue", "stop"]
CONTINUE: Decision = "continue"
STOP: Decision = "stop"


@dataclass(frozen=True)
class RungResult:
    """One trial's result recorded at a rung.

    Attributes:
        trial_id: the trial.
        top1: validation accuracy at the rung, a fraction in [0, 1].
        flops: multiply-accumulates of one image of the trial's network.
    """

    trial_id: str
    top1: float
    flops: int


def rank_positions(top1: np.ndarray, flops: np.ndarray, first: int | None = None) -> np.ndarray:
    """Rank position (0 = best) of each result: front of (-top1, flops), then crowding distance, then ties.

    Args:
        top1: ``n`` accuracies in [0, 1] (maximised).
        flops: ``n`` FLOPs (minimised), in arrival order with ``top1``.
        first: rank only the fronts that hold the first ``first`` places (pymoo's ``n_stop_if_ranked``); the
            places of their members are exact, every other result gets ``n``. What a rung's cut needs, at a
            third of the cost (the crowding distances of the fronts beyond it are not computed).

    Returns:
        ``(n,)`` int array: ``positions[i]`` is result ``i``'s place in the order (a permutation of ``0..n-1``,
        unless ``first`` leaves some unranked), not the index of the result at place ``i``.
    """
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    top1 = np.asarray(top1, dtype=float)
    flops = np.asarray(flops, dtype=float)
    n = len(top1)
    if n == 0:
        return np.zeros(0, dtype=int)
    objectives = np.column_stack([-top1, flops])
    fronts = NonDominatedSorting().do(objectives, n_stop_if_ranked=n if first is None else first)
    front_of = np.full(n, len(fronts), dtype=int)  # beyond the fronts ranked
    crowding = np.zeros(n, dtype=float)
    for number, members in enumerate(fronts):
        members = np.asarray(members, dtype=int)
        front_of[members] = number
        crowding[members] = calc_crowding_distance(objectives[members]) if len(members) > 2 else np.inf
    # lexsort sorts by the last key first: front, then larger crowding, higher top1, lower FLOPs, arrival.
    order = np.lexsort((np.arange(n), flops, -top1, -crowding, front_of))
    positions = np.empty(n, dtype=int)
    positions[order] = np.arange(n)
    positions[front_of == len(fronts)] = n
    return positions


class MOASHA:
    """Multi-objective asynchronous successive halving (see the module docstring).

    Args:
        max_t: full fidelity in epochs; a trial reaching it is stopped (done).
        grace_period: the first rung, in epochs.
        reduction_factor: eta: about one result in eta at a rung goes on.
        epsilon: a result within this much top1 (a fraction) of the best at its rung always goes on.

    Raises:
        UserError: for non-positive epochs, ``grace_period > max_t``, ``reduction_factor < 2`` or a negative
            ``epsilon``.
    """

    def __init__(self, max_t: int, grace_period: int = 1, reduction_factor: float = 3, epsilon: float = 0.01) -> None:
        for name, value, low in (("max_t", max_t, 1), ("grace_period", grace_period, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"scheduler {name} must be a whole number of at least {low} epochs, got {value!r}")
        if grace_period > max_t:
            raise UserError(f"--grace-period {grace_period} exceeds --max-epochs {max_t}: lower it or raise --max-epochs")
        if not reduction_factor >= 2:
            raise UserError(f"--reduction-factor must be at least 2, got {reduction_factor!r}")
        if not 0.0 <= epsilon < 1.0:
            raise UserError(f"scheduler epsilon must be a top1 fraction in [0, 1), got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.max_t = max_t
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.milestones: tuple[int, ...] = tuple(_milestones(max_t, grace_period, reduction_factor))
        self.rungs: dict[int, list[RungResult]] = {m: [] for m in self.milestones}
        self.decisions: dict[int, dict[str, Decision]] = {m: {} for m in self.milestones}

    def on_result(self, trial_id: str, epoch: int, top1: float, flops: int) -> Decision:
        """Record a trial's result after ``epoch`` epochs and decide whether it goes on.

        A result between rungs only continues (or stops the trial at ``max_t``). At a new rung, the result is
        recorded and ranked (module docstring). At a rung the trial was already recorded at, the decision taken
        then is returned again, unranked: a resumed trial reports its last epoch again (:mod:`tinyray.tune.trainable`),
        and a trial stopped at that rung must stop again.

        Args:
            trial_id: the trial.
            epoch: epochs trained so far (Tune's ``training_iteration``).
            top1: validation accuracy after ``epoch`` epochs, in [0, 1].
            flops: the trial's FLOPs.

        Returns:
            ``"continue"`` or ``"stop"``.
        """
        if epoch >= self.max_t:
            return STOP
        decision: Decision = CONTINUE
        for milestone in reversed(self.milestones):
            if epoch < milestone:
                continue
            if trial_id in self.decisions[milestone]:
                if epoch == milestone:
                    decision = self.decisions[milestone][trial_id]
            else:
                decision = self._decide(milestone, RungResult(str(trial_id), float(top1), int(flops)))
            break
        return decision

    def _decide(self, milestone: int, result: RungResult) -> Decision:
        rung = self.rungs[milestone]
        rung.append(result)
        n = len(rung)
        if n < self.reduction_factor or result.top1 >= max(r.top1 for r in rung) - self.epsilon:
            decision: Decision = CONTINUE
        else:
            kept = math.ceil(n / self.reduction_factor)
            positions = rank_positions(np.array([r.top1 for r in rung]), np.array([r.flops for r in rung]), kept)
            decision = CONTINUE if positions[-1] < kept else STOP
        self.decisions[milestone][result.trial_id] = decision
        return decision

    def decision(self, trial_id: str, milestone: int) -> Decision | None:
        """The decision taken for ``trial_id`` at ``milestone``, or ``None`` if it has not reached it."""
        return self.decisions.get(milestone, {}).get(trial_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: options, and per rung the results in arrival order with their decisions."""
        return {
            "version": STATE_VERSION,
            "max_t": self.max_t,
            "grace_period": self.grace_period,
            "reduction_factor": self.reduction_factor,
            "epsilon": self.epsilon,
            "rungs": [
                {
                    "epoch": milestone,
                    "results": [
                        {key: value for key, value in self.record_of(milestone, index).items() if key != "epoch"}
                        for index in range(len(self.rungs[milestone]))
                    ],
                }
                for milestone in self.milestones
            ],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "MOASHA":
        """Rebuild a scheduler from :meth:`to_dict`.

        Raises:
            UserError: if the state is of another version or damaged.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            found = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise UserError(
                f"scheduler state has version {found!r}, this tinyray reads version {STATE_VERSION}:"
                " start a new experiment"
            )
        try:
            scheduler = cls(int(state["max_t"]), int(state["grace_period"]), state["reduction_factor"],
                            float(state["epsilon"]))
            for rung in state["rungs"]:
                for raw in rung["results"]:
                    scheduler.restore_result(int(rung["epoch"]), raw)
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"scheduler state is damaged ({error}): start a new experiment") from error
        return scheduler

    def restore_result(self, milestone: int, raw: dict[str, Any]) -> None:
        """Put back a result recorded at ``milestone`` (:meth:`record_of`'s fields) with its decision, unranked.

        Raises:
            ValueError, KeyError, TypeError: for a rung that is not one of this scheduler's, or a damaged result.
        """
        if milestone not in self.rungs:
            raise ValueError(f"rung {milestone} is not one of {list(self.milestones)}")
        result = RungResult(str(raw["trial_id"]), float(raw["top1"]), int(raw["flops"]))
        if raw["decision"] not in (CONTINUE, STOP):
            raise ValueError(f"decision {raw['decision']!r}")
        self.rungs[milestone].append(result)
        self.decisions[milestone][result.trial_id] = raw["decision"]

    def record_of(self, milestone: int, index: int) -> dict[str, Any]:
        """The ``index``-th result recorded at ``milestone`` with its decision, as :meth:`to_dict` lists it."""
        result = self.rungs[milestone][index]
        return {"epoch": milestone, "trial_id": result.trial_id, "top1": result.top1, "flops": result.flops,
                "decision": self.decisions[milestone][result.trial_id]}

    def same_options(self, other: "MOASHA") -> bool:
        return (self.max_t, self.grace_period, self.reduction_factor, self.epsilon) == (
            other.max_t, other.grace_period, other.reduction_factor, other.epsilon)


def _milestones(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    milestones, k = [], 0
    while True:
        milestone = int(round(grace_period * reduction_factor**k))
        if milestone >= max_t:
            return milestones
        milestones.append(milestone)
        k += 1
