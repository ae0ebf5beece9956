"""``MOASHAScheduler``: a Ray Tune ``TrialScheduler`` around the multi-objective ASHA of :mod:`tinyray.scheduler`."""

from __future__ import annotations

import os
from typing import Any, Callable

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from tinyray.errors import UserError
from tinyray.files import read_json, write_json_atomic
from tinyray.scheduler import CONTINUE, MOASHA, STOP, Decision
from tinyray.tune.searcher import check_mode


class MOASHAScheduler(FIFOScheduler):
    """Ray Tune ``TrialScheduler`` around :class:`MOASHA`.

    It reads ``metric``, ``flops_attr`` and ``time_attr`` from each result. Tune restores a searcher but not a
    scheduler, so it writes its state atomically to ``state_path`` after every recorded result and loads it back
    when constructed with an existing file.

    Args:
        max_t, grace_period, reduction_factor, epsilon: as :class:`MOASHA`.
        state_path: JSON file for the scheduler's state, rewritten atomically after every recorded result and
            loaded at construction if it exists (so a resumed experiment keeps its rungs). ``None``: keep no file.
        metric: the accuracy key of a result (maximised).
        flops_attr: the FLOPs key of a result (minimised).
        time_attr: the epochs-so-far key of a result.

    Raises:
        UserError: for bad options, or a state file of other options, another version or damaged.
    """

    def __init__(self, *, max_t: int, grace_period: int = 1, reduction_factor: float = 3, epsilon: float = 0.01,
                 state_path: str | os.PathLike | None = None, metric: str = "top1", flops_attr: str = "flops",
                 time_attr: str = "training_iteration") -> None:
        super().__init__()
        self.core = MOASHA(max_t, grace_period, reduction_factor, epsilon)
        self.state_path = None if state_path is None else os.fspath(state_path)
        self._metric = metric
        self._mode = "max"
        self._flops_attr = flops_attr
        self._time_attr = time_attr
        self._num_stopped = 0
        if self.state_path is not None and os.path.exists(self.state_path):
            self._load(self.state_path)

    def _load(self, path: str) -> None:
        restored = MOASHA.from_dict(read_json(path, "scheduler state"))
        if not restored.same_options(self.core):
            raise UserError(
                f"scheduler state {path} was written with max_t={restored.max_t},"
                f" grace_period={restored.grace_period}, reduction_factor={restored.reduction_factor}:"
                " resume with the same options, or start a new experiment"
            )
        self.core = restored

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if mode:
            check_mode(mode, "scheduler")
        if metric:
            self._metric = metric
        return True

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = self._record(trial, result)
        if decision == STOP:
            self._num_stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._record(trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        pass  # a removed trial's recorded results stay: they were real measurements at their rungs

    def _record(self, trial: Any, result: dict | None) -> Decision:
        keys = (self._time_attr, self._metric, self._flops_attr)
        if not result or any(result.get(key) is None for key in keys):
            return CONTINUE
        epoch = int(result[self._time_attr])
        recorded = sum(len(rung) for rung in self.core.rungs.values())
        decision = self.core.on_result(trial.trial_id, epoch, float(result[self._metric]),
                                       int(result[self._flops_attr]))
        if self.state_path is not None and sum(len(rung) for rung in self.core.rungs.values()) != recorded:
            write_json_atomic(self.state_path, self.core.to_dict())
        return decision

    def debug_string(self) -> str:
        rungs = " | ".join(f"epoch {m}: {len(self.core.rungs[m])} results" for m in self.core.milestones)
        return f"Using multi-objective ASHA: num_stopped={self._num_stopped}; {rungs}"

    def save(self, checkpoint_path: str) -> None:
        write_json_atomic(checkpoint_path, self.core.to_dict())

    def restore(self, checkpoint_path: str) -> None:
        self._load(checkpoint_path)


class _StandInTrial:
    """What Ray's schedulers read from a trial: its id."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def ray_asha_decider(max_t: int, grace_period: int, reduction_factor: float
                     ) -> Callable[[str, int, float, int, bool], bool]:
    """Ray's own ``ASHAScheduler`` (one bracket, by top1) deciding on stand-in trials, for the search simulator of
    :mod:`tinyray.bench`: ``decide(trial_id, epoch, top1, flops, first) -> keep going?``."""
    asha = ASHAScheduler(time_attr="training_iteration", metric="top1", mode="max", max_t=max_t,
                         grace_period=grace_period, reduction_factor=reduction_factor)
    trials: dict[str, _StandInTrial] = {}

    def decide(trial_id: str, epoch: int, top1: float, flops: int, first: bool) -> bool:
        if first:
            trials[trial_id] = _StandInTrial(trial_id)
            asha.on_trial_add(None, trials[trial_id])
        result = {"training_iteration": epoch, "top1": top1}
        keep = asha.on_trial_result(None, trials[trial_id], result) == TrialScheduler.CONTINUE
        if not keep:
            asha.on_trial_complete(None, trials[trial_id], result)
        return keep

    return decide
