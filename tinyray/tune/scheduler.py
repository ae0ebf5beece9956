"""``MOASHAScheduler``: a Ray Tune ``TrialScheduler`` around the multi-objective ASHA of :mod:`tinyray.scheduler`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from tinyray.errors import UserError
from tinyray.files import write_json_atomic
from tinyray.scheduler import CONTINUE, MOASHA, STOP, Decision
from tinyray.tune.searcher import check_mode


class MOASHAScheduler(FIFOScheduler):
    """Ray Tune ``TrialScheduler`` around :class:`MOASHA`.

    It reads ``metric``, ``flops_attr`` and ``time_attr`` from each result. Tune restores a searcher but not a
    scheduler, so it keeps its state in ``state_path`` and loads it back when constructed with an existing file.

    The file is a journal (:func:`read_state`): the state as :meth:`MOASHA.to_dict` gives it (indented JSON, what the
    whole file was until 2026-12-07, so older files load as they are), then one line per result recorded since,
    appended as it is recorded. Rewriting the whole state after every result cost O(results) a result (4 ms at
    500 results, measured): O(trials^2) a search. The state is rewritten whole, atomically, when the file is loaded.

    Args:
        max_t, grace_period, reduction_factor, epsilon: as :class:`MOASHA`.
        state_path: the scheduler's journal, appended after every recorded result and loaded at construction if
            it exists (so a resumed experiment keeps its rungs). ``None``: keep no file.
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
        self._order: dict[str, int] = {}  # trial -> its place in Tune's list of trials (choose_trial_to_run)
        if self.state_path is not None and os.path.exists(self.state_path):
            self._load(self.state_path, fold=True)

    def _load(self, path: str, fold: bool = False) -> None:
        restored = read_state(path)
        if not restored.same_options(self.core):
            raise UserError(
                f"scheduler state {path} was written with max_t={restored.max_t},"
                f" grace_period={restored.grace_period}, reduction_factor={restored.reduction_factor}:"
                " resume with the same options, or start a new experiment"
            )
        self.core = restored
        if fold:  # the journal folded into one state (a torn last line dropped), then appended to again
            write_json_atomic(path, restored.to_dict())

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

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """FIFO's choice (the first pending trial, else the first paused one, in the order Tune added them), found
        among the trials that have not ended (Tune's live set) instead of all of them: Tune asks at every step, and
        FIFO's scan of every trial cost O(trials) a call (2.4 ms of driver CPU a trial at 300 trials, measured)."""
        trials = tune_controller.get_trials()
        if len(self._order) > len(trials):
            self._order = {}
        for index in range(len(self._order), len(trials)):
            self._order[trials[index].trial_id] = index
        live = tune_controller.get_live_trials()
        for status in (Trial.PENDING, Trial.PAUSED):
            waiting = [trial for trial in live if trial.status == status]
            if waiting:
                return min(waiting, key=lambda trial: self._order.get(trial.trial_id, len(trials)))
        return None

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        pass  # a removed trial's recorded results stay: they were real measurements at their rungs

    def _record(self, trial: Any, result: dict | None) -> Decision:
        keys = (self._time_attr, self._metric, self._flops_attr)
        if not result or any(result.get(key) is None for key in keys):
            return CONTINUE
        epoch = int(result[self._time_attr])
        recorded = {milestone: len(rung) for milestone, rung in self.core.rungs.items()}
        decision = self.core.on_result(trial.trial_id, epoch, float(result[self._metric]),
                                       int(result[self._flops_attr]))
        if self.state_path is not None:
            new = [self.core.record_of(milestone, index) for milestone, rung in self.core.rungs.items()
                   for index in range(recorded[milestone], len(rung))]
            if new:
                self._append(new)
        return decision

    def _append(self, records: list[dict[str, Any]]) -> None:
        assert self.state_path is not None
        if not os.path.exists(self.state_path):  # the first record: the state so far (it holds the records) begins it
            write_json_atomic(self.state_path, self.core.to_dict())
            return
        with open(self.state_path, "a", encoding="utf-8") as file:
            file.write("".join(json.dumps(record) + "\n" for record in records))

    def debug_string(self) -> str:
        rungs = " | ".join(f"epoch {m}: {len(self.core.rungs[m])} results" for m in self.core.milestones)
        return f"Using multi-objective ASHA: num_stopped={self._num_stopped}; {rungs}"

    def save(self, checkpoint_path: str) -> None:
        write_json_atomic(checkpoint_path, self.core.to_dict())

    def restore(self, checkpoint_path: str) -> None:
        self._load(checkpoint_path)


def read_state(path: str | os.PathLike) -> MOASHA:
    """The scheduler kept in ``path`` by :class:`MOASHAScheduler`: its state, then the results appended since (a
    last line cut short by a crash is dropped; its trial reports that rung again and is ranked then).

    Raises:
        UserError: if the file is unreadable, or its state or a result before the last is damaged.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot read scheduler state {path}: {error.strerror}; check the experiment folder") from None
    text = text.lstrip()
    try:
        state, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as error:
        raise UserError(f"scheduler state {path} is not valid JSON ({error.msg}): start a new experiment") from None
    scheduler = MOASHA.from_dict(state)
    lines = [line for line in text[end:].splitlines() if line.strip()]
    for number, line in enumerate(lines):
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break
            raise UserError(f"scheduler state {path} is damaged (line {number + 2} after its state): start a new"
                            " experiment") from None
        try:
            scheduler.restore_result(int(raw["epoch"]), raw)
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"scheduler state {path} is damaged ({error}): start a new experiment") from None
    return scheduler


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
