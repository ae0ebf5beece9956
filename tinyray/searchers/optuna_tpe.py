"""The ``optuna-tpe`` searcher: Optuna's multi-objective ``TPESampler`` through Optuna's ask/tell, as Ray's
``OptunaSearch`` drives it (``OptunaSearch(sampler=TPESampler(), metric=[...], mode=[...])``).

It is the second comparison a Ray Tune user would reach for (``tinyray bench search`` method f), beside
:mod:`tinyray.searchers.optuna_nsga3`, whose conventions it shares: the FLOPs band is the sampler's
``constraints_func`` (a suggestion outside the band is told at once as infeasible, without training), an
early-stopped trial is told its last accuracy as a completed value, objectives are top-1 (maximised) and
``FLOPs / base FLOPs`` (minimised), and the state is the study's finished trials. The sampler is Optuna's
multi-objective TPE (MOTPE) with ``multivariate=True`` (one joint density of r, d and w, not three
independent ones: the FLOPs band couples them), and ``--pop-size`` sets its random start (``n_startup_trials``).
"""

from __future__ import annotations

from typing import Any

import optuna

from tinyray.searchers.optuna_nsga3 import OptunaNSGA3Core


class OptunaTPECore(OptunaNSGA3Core):
    """Optuna's multi-objective TPE over (r, d, w) under the FLOPs band.

    Args:
        band: the feasible FLOPs band.
        seed: seed of the sampler.
        pop_size: trials drawn at random before TPE models them (``n_startup_trials``).

    Raises:
        UserError: for a population below 4.
    """

    strategy = "optuna-tpe"

    def _new_study(self, seed: int) -> Any:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(
            n_startup_trials=self.pop_size, multivariate=True, seed=seed,
            constraints_func=lambda trial: trial.user_attrs["constraints"])
        return optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
