"""The ``optuna-nsga3`` searcher: Optuna's ``NSGAIIISampler`` through Optuna's ask/tell, as Ray's ``OptunaSearch``
drives it.

It stands for what a Ray Tune user would assemble (``OptunaSearch(sampler=NSGAIIISampler())``) and is the
comparison of ``tinyray bench search`` (method c). Two choices keep it faithful to that:

* an early-stopped trial is told its last (partial) accuracy as a completed value (``OptunaSearch`` does the
  same; tinyray's own searchers rank it below every completed trial instead, see :mod:`tinyray.searchers.base`);
* the FLOPs band is given to the sampler as ``constraints_func``: a suggestion outside the band is told at once as
  infeasible, without training, and the sampler is asked again.

Objectives: top1 (maximised) and ``FLOPs / base FLOPs`` (minimised). A failed trial is told as Optuna's ``FAIL``.

**State.** The study's finished trials (parameters, values, Optuna's attributes) are the state; a restore adds them
to a fresh study with ``study.add_trial``. Unlike the ``nsga3`` searcher's exact replay, a restored study continues
from the same history with a fresh random stream (seeded by the seed and the history's length), so it does not
repeat the suggestions it made before.
"""

from __future__ import annotations

from typing import Any

import optuna

from tinyray.cube import Candidate
from tinyray.files import SEARCHER_STATE_VERSION
from tinyray.searchers.band import FlopsBand
from tinyray.searchers.base import SearchCore, TrialRecord, _check_result, _damaged, check_pop_size, take_pending
from tinyray.status import FAILED

#: suggestions outside the band told as infeasible in a row before giving up
_MAX_INFEASIBLE = 1000


class OptunaNSGA3Core(SearchCore):
    """Optuna's NSGA-III sampler over (r, d, w) under the FLOPs band.

    Args:
        band: the feasible FLOPs band.
        seed: seed of the sampler.
        pop_size: the sampler's population size.

    Raises:
        UserError: for a population below 4.
    """

    strategy = "optuna-nsga3"

    def __init__(self, band: FlopsBand, *, seed: int = 0, pop_size: int = 16) -> None:
        super().__init__(band, seed)
        self.pop_size = check_pop_size(pop_size)
        space = band.space
        self._distributions = {
            name: optuna.distributions.FloatDistribution(bounds.low, bounds.high)
            for name, bounds in (("r", space.r), ("d", space.d), ("w", space.w))
        }
        self._history: list[dict[str, Any]] = []  # the study's finished trials, in order (the state)
        # trial id -> (Optuna's trial, or None after a restore; candidate; FLOPs; Optuna's attributes at ask time)
        self._pending: dict[str, tuple[Any, Candidate, int, dict[str, Any]]] = {}
        self._study = self._new_study(seed)

    def _new_study(self, seed: int) -> Any:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.NSGAIIISampler(
            population_size=self.pop_size, seed=seed, constraints_func=lambda trial: trial.user_attrs["constraints"])
        return optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed, "pop_size": self.pop_size}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "pop_size": self.pop_size}

    @property
    def pending(self) -> dict[str, Candidate]:
        return {trial_id: candidate for trial_id, (_, candidate, _, _) in self._pending.items()}

    def ask(self, trial_id: str) -> Candidate:
        """The sampler's next suggestion inside the band (the same one again for a pending ``trial_id``).

        Raises:
            RuntimeError: if the sampler keeps suggesting networks outside the band.
        """
        if trial_id in self._pending:
            return self._pending[trial_id][1]
        budget = float(self.band.budget)
        for _ in range(_MAX_INFEASIBLE):
            trial = self._study.ask()
            x = tuple(trial.suggest_float(name, dist.low, dist.high) for name, dist in self._distributions.items())
            flops = self.band.flops(x)
            trial.set_user_attr("constraints", [(flops - budget) / budget, (self.band.floor - flops) / budget])
            if self.band.contains(flops):
                candidate = Candidate(float(x[0]), float(x[1]), float(x[2]))
                attrs = dict(self._study.trials[trial.number].system_attrs)
                self._pending[trial_id] = (trial, candidate, flops, attrs)
                return candidate
            self._study.tell(trial, [0.0, flops / self.base_flops])  # infeasible: told at once, never trained
            self._keep(trial.number)
        raise RuntimeError(f"Optuna suggested {_MAX_INFEASIBLE} networks outside the FLOPs band in a row")

    def tell(self, trial_id: str, top1: float | None, status: str) -> None:
        """Record a result; an early-stopped trial's partial top1 is told as if final (module docstring)."""
        top1, checked = _check_result(trial_id, top1, status)
        handed_out = take_pending(self._pending, trial_id)
        if handed_out is None:
            return
        trial, candidate, flops, attrs = handed_out
        values = None if checked == FAILED else [float(top1), flops / self.base_flops]
        if trial is not None:
            if values is None:
                self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self._study.tell(trial, values)
            self._keep(trial.number)
        else:  # handed out before a restore: its Optuna trial is gone, add it finished
            budget = float(self.band.budget)
            constraints = [(flops - budget) / budget, (self.band.floor - flops) / budget]
            entry = {"params": {"r": candidate.r, "d": candidate.d, "w": candidate.w}, "values": values,
                     "system_attrs": {**attrs, "constraints": constraints}, "user_attrs": {"constraints": constraints}}
            self._add(entry)
            self._history.append(entry)
        self._record(trial_id, candidate, flops, top1, checked)

    def _keep(self, number: int) -> None:
        frozen = self._study.trials[number]
        failed = frozen.state == optuna.trial.TrialState.FAIL
        self._history.append({"params": dict(frozen.params), "values": None if failed else list(frozen.values),
                              "system_attrs": dict(frozen.system_attrs), "user_attrs": dict(frozen.user_attrs)})

    def _add(self, entry: dict[str, Any]) -> None:
        failed = entry["values"] is None
        self._study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
            values=None if failed else entry["values"], params=entry["params"], distributions=self._distributions,
            system_attrs=entry["system_attrs"], user_attrs=entry["user_attrs"],
        ))

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: options, the study's finished trials, records and pending trials."""
        return {
            "version": SEARCHER_STATE_VERSION,
            "strategy": self.strategy,
            "config": self.config(),
            "optuna": optuna.__version__,
            "history": [dict(entry) for entry in self._history],
            "records": [rec.to_dict() for rec in self._records],
            "pending": [
                {"trial_id": trial_id, "flops": flops, "r": c.r, "d": c.d, "w": c.w, "system_attrs": attrs}
                for trial_id, (_, c, flops, attrs) in self._pending.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (module docstring: same history, fresh random stream).

        Raises:
            UserError: if the state is of another version or other options, or is damaged.
        """
        self._check_state(state)
        try:
            history = [{"params": {k: float(v) for k, v in e["params"].items()},
                        "values": None if e["values"] is None else [float(v) for v in e["values"]],
                        "system_attrs": dict(e["system_attrs"]), "user_attrs": dict(e["user_attrs"])}
                       for e in state["history"]]
            records = [TrialRecord.from_dict(raw) for raw in state["records"]]
            pending = {str(p["trial_id"]): (None, Candidate(float(p["r"]), float(p["d"]), float(p["w"])),
                                            int(p["flops"]), dict(p.get("system_attrs") or {}))
                       for p in state["pending"]}
            study = self._new_study(self.seed + len(history))
            self._study = study
            for entry in history:
                self._add(entry)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise _damaged(error) from error
        self._history = history
        self._records = records
        self._pending = pending
