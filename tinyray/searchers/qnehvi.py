"""The ``qnehvi`` searcher: multi-objective Bayesian optimisation of (top-1, FLOPs) with BoTorch's qLogNEHVI.

It is what a Ray Tune user would otherwise reach for through Ax, as a searcher core beside NSGA-III.

**Model and objectives.** Only top-1 is unknown: a BoTorch ``SingleTaskGP`` (inputs normalised to the cube,
outputs standardised, noise inferred) models it over (r, d, w), fitted with ``fit_gpytorch_mll``. FLOPs are
known exactly before training, so they are not modelled: an ``MCMultiOutputObjective`` turns each posterior sample
of top-1 at ``X`` into the objective pair ``(top1, -FLOPs / budget)``, both maximised, with the analytic FLOPs of
``X``. The reference point ``(0, -1)`` makes the acquisition's hypervolume the one ``tinyray bench search``
reports (:func:`tinyray.front.hypervolume`: ``(1 - top1, FLOPs / budget)`` against ``(1, 1)``).
The acquisition is ``qLogNoisyExpectedHypervolumeImprovement`` over the completed trials (``X_baseline``, pruned
to the likely Pareto-optimal ones), which integrates over the noise of the measured accuracies.

**The FLOPs band** is a known constraint on the inputs, handled as the other searchers handle it: candidates are
drawn inside it and the acquisition is maximised over them (``optimize_acqf_discrete``), not by gradient ascent
under a constraint. The FLOPs count is piecewise constant in r, d and w (whole pixels, whole blocks, channels
rounded to multiples of 8), so it offers no gradient for a nonlinear constraint of ``optimize_acqf``, and a
smooth stand-in would let candidates over the budget through. In three dimensions a pool of a few hundred
points is dense: ``POOL_SIZE`` uniform draws from the cube, plus ``LOCAL_POOL_SIZE`` Gaussian perturbations of
the observed Pareto set's inputs (the local refinement that ``optimize_acqf``'s restarts would give), each kept
only if its network is inside the band and was never handed out (:meth:`FlopsBand.network_key`).

**Start.** The first ``pop_size`` candidates (and any until ``MIN_OBSERVATIONS`` trials have completed) are the
next points of a scrambled Sobol sequence over the cube that fall inside the band, so a qNEHVI search and an
NSGA-III search with the same ``--pop-size`` start from designs of the same size.

**Pending trials.** :meth:`QNEHVICore.ask` never waits: the trials handed out and not yet told are the
acquisition's ``X_pending``, whose outcomes qLogNEHVI fantasizes jointly with the baseline's under each posterior
sample, so a batch of asks spreads instead of repeating the same best point.

**Early-stopped and failed trials.** The GP models full-fidelity top-1, so its observations are the completed
trials only. An early-stopped trial's partial accuracy measures something else (a rung's accuracy, near chance
for a short proxy's first epoch) and would drag the GP down around good networks; a failed trial has no accuracy.
Both are still handed-out networks, which the search never proposes again.

**Cost.** The GP is fitted on at most ``MAX_OBSERVATIONS`` completed trials (the observed Pareto set, then the
most recent), with at most ``FIT_MAXITER`` L-BFGS iterations and ``FIT_ATTEMPTS`` attempts; the fitted model is
reused by the asks that follow until a new trial completes. :attr:`QNEHVICore.timings` records each
Bayesian-optimisation ask's fit and acquisition seconds (``benchmarks/qnehvi_search.py`` reports them).

**State and reproducibility.** Every random choice is seeded from the searcher's seed: the Sobol sequence (its
position is in the state), a NumPy generator for the candidate pools (its exact position is in the state), and
the torch generator, reseeded before each fit and acquisition from the seed and the number of asks, which fixes
the fit's restarts, the baseline pruning's samples and the acquisition's quasi-MC samples. The fit starts from
the model's default hyperparameters every time, so a model is a function of its observations only. The JSON
state is therefore the records, the pending trials, the Sobol position, the generator's position and the number
of asks, and a restored searcher continues with exactly the suggestions the uninterrupted one would have made.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tinyray.formula import import_botorch

import_botorch()  # BoTorch without linear_operator's import-time FutureWarning (see there)

import botorch  # noqa: E402
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement  # noqa: E402
from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective  # noqa: E402
from botorch.fit import fit_gpytorch_mll  # noqa: E402
from botorch.models import SingleTaskGP  # noqa: E402
from botorch.models.transforms import Normalize, Standardize  # noqa: E402
from botorch.optim import optimize_acqf_discrete  # noqa: E402
from botorch.sampling import SobolQMCNormalSampler  # noqa: E402
from gpytorch.mlls import ExactMarginalLogLikelihood  # noqa: E402

from tinyray.cube import Candidate  # noqa: E402
from tinyray.errors import UserError  # noqa: E402
from tinyray.files import SEARCHER_STATE_VERSION  # noqa: E402
from tinyray.front import pareto_mask  # noqa: E402
from tinyray.searchers.band import FlopsBand  # noqa: E402
from tinyray.searchers.base import (  # noqa: E402
    SearchCore, TrialRecord, _check_result, _damaged, load_common_state, pending_state, take_pending)

logger = logging.getLogger(__name__)

#: completed trials needed before the GP takes over from the Sobol start
MIN_OBSERVATIONS = 3
#: most completed trials the GP is fitted on (the observed Pareto set first, then the most recent)
MAX_OBSERVATIONS = 96
#: L-BFGS iterations and attempts (BoTorch retries from prior samples after a failed fit) of one fit
FIT_MAXITER = 100
FIT_ATTEMPTS = 2
#: uniform draws from the cube, and perturbations of the observed Pareto set, offered to the acquisition per ask
POOL_SIZE = 512
LOCAL_POOL_SIZE = 128
#: standard deviation of a perturbation, as a fraction of each bound's range
LOCAL_SCALE = 0.05
#: quasi-MC samples of the acquisition (BoTorch's default for qNEHVI)
MC_SAMPLES = 128
#: Sobol points tried in a row before the start draws uniformly from the band instead (a band that is a tiny
#: corner of the cube)
_SOBOL_ATTEMPTS = 500
_DTYPE = torch.float64


@dataclass(frozen=True)
class AskTiming:
    """Cost of one Bayesian-optimisation ask.

    Attributes:
        observations: completed trials the GP was fitted on.
        refitted: whether the GP was fitted for this ask (else the previous ask's model, on the same trials).
        fit_seconds: wall seconds of the GP fit (0 when not refitted).
        acquisition_seconds: wall seconds of building the candidate pool and maximising qLogNEHVI over it.
        candidates: size of the pool.
        pending: pending trials fantasized.
    """

    observations: int
    refitted: bool
    fit_seconds: float
    acquisition_seconds: float
    candidates: int
    pending: int


class QNEHVICore(SearchCore):
    """Multi-objective Bayesian optimisation of (top-1, FLOPs) under the FLOPs band (module docstring).

    Args:
        band: the feasible FLOPs band.
        seed: seed of the Sobol start, the candidate pools and torch's draws.
        pop_size: candidates of the Sobol start (as NSGA-III's first generation).

    Raises:
        UserError: for a negative seed or a start below 1 point.
    """

    strategy = "qnehvi"

    def __init__(self, band: FlopsBand, *, seed: int = 0, pop_size: int = 16) -> None:
        super().__init__(band, seed)
        if isinstance(pop_size, bool) or not isinstance(pop_size, int) or pop_size < 1:
            raise UserError(f"population size {pop_size!r} is too small: the qnehvi searcher needs --pop-size 1 or more")
        self.pop_size = pop_size
        self._rng = np.random.default_rng(seed)
        self._sobol = torch.quasirandom.SobolEngine(3, scramble=True, seed=seed)
        self._sobol_drawn = 0
        self._asked = 0
        self._seen: set = set()
        self._pending: dict[str, tuple[Candidate, int]] = {}
        self._model: Any = None
        self._model_key: tuple[str, ...] | None = None
        self._bounds = torch.tensor(np.stack([band.low, band.high]), dtype=_DTYPE)
        #: one :class:`AskTiming` per Bayesian-optimisation ask of this process (not saved)
        self.timings: list[AskTiming] = []

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed, "pop_size": self.pop_size}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "pop_size": self.pop_size}

    @property
    def pending(self) -> dict[str, Candidate]:
        return {trial_id: candidate for trial_id, (candidate, _) in self._pending.items()}

    def ask(self, trial_id: str) -> Candidate:
        """The candidate for a new trial (the same one again for a pending ``trial_id``); never ``None``.

        A Sobol point during the start, then the pool point of highest qLogNEHVI given the completed trials and
        the pending ones.
        """
        if trial_id in self._pending:
            return self._pending[trial_id][0]
        observed = [rec for rec in self._records if rec.is_final]
        if self._asked < self.pop_size or len(observed) < MIN_OBSERVATIONS:
            x = self._sobol_point()
        else:
            x = self._acquired_point(observed)
        self._asked += 1
        flops = self.band.flops(x)
        assert self.band.contains(flops), f"candidate {x} has {flops} FLOPs outside {self.band.describe()}"
        self._seen.add(self.band.network_key(x))
        candidate = Candidate(float(x[0]), float(x[1]), float(x[2]))
        self._pending[trial_id] = (candidate, flops)
        return candidate

    def tell(self, trial_id: str, top1: float | None, status: str) -> None:
        """Record a result; a completed one becomes an observation of the GP at the next ask."""
        top1, checked = _check_result(trial_id, top1, status)
        handed_out = take_pending(self._pending, trial_id)
        if handed_out is None:
            return
        self._record(trial_id, handed_out[0], handed_out[1], top1, checked)

    # ----------------------------------------------------------------------------------------------------------
    # Proposals
    # ----------------------------------------------------------------------------------------------------------

    def _sobol_point(self) -> np.ndarray:
        """The next point of the scrambled Sobol sequence whose network is in the band and new."""
        span = self.band.high - self.band.low
        for _ in range(_SOBOL_ATTEMPTS):
            unit = self._sobol.draw(1, dtype=_DTYPE)[0].numpy()
            self._sobol_drawn += 1
            x = self.band.low + unit * span
            if self.band.contains(self.band.flops(x)) and self.band.network_key(x) not in self._seen:
                return x
        logger.debug("no new Sobol point in the band %s: drawing uniformly", self.band.describe())
        return self.band.sample(self._rng, avoid=self._seen)

    def _acquired_point(self, observed: list[TrialRecord]) -> np.ndarray:
        """The pool point of highest qLogNEHVI (module docstring)."""
        observed = self._capped(observed)
        train_x = np.array([[rec.r, rec.d, rec.w] for rec in observed])
        train_y = np.array([[rec.top1] for rec in observed])
        front = train_x[pareto_mask(train_y[:, 0], np.array([rec.flops for rec in observed]))]
        pool = self._pool(front)
        if len(pool) == 0:
            logger.debug("every pool point was handed out before: drawing uniformly from %s", self.band.describe())
            return self.band.sample(self._rng, avoid=self._seen)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + self._asked)
            started = time.perf_counter()
            key = tuple(rec.trial_id for rec in observed)
            refit = key != self._model_key
            if refit:
                self._model = _fit_gp(_tensor(train_x), _tensor(train_y), self._bounds)
                self._model_key = key
            fitted = time.perf_counter()
            pending = [(c.r, c.d, c.w) for c, _ in self._pending.values()]
            acquisition = qLogNoisyExpectedHypervolumeImprovement(
                model=self._model,
                ref_point=[0.0, -1.0],
                X_baseline=_tensor(train_x),
                sampler=SobolQMCNormalSampler(sample_shape=torch.Size([MC_SAMPLES]), seed=self.seed + self._asked),
                objective=GenericMCMultiOutputObjective(self._objectives),
                X_pending=_tensor(pending) if pending else None,
                prune_baseline=True,
            )
            with torch.no_grad():
                best, _ = optimize_acqf_discrete(acquisition, q=1, choices=_tensor(pool), max_batch_size=256)
            done = time.perf_counter()
        self.timings.append(AskTiming(len(observed), refit, fitted - started if refit else 0.0, done - fitted,
                                      len(pool), len(pending)))
        logger.debug("qnehvi ask %d: fit %.2f s on %d trials, acquisition %.2f s over %d candidates, %d pending",
                     self._asked, self.timings[-1].fit_seconds, len(observed), done - fitted, len(pool), len(pending))
        return best[0].numpy().copy()  # a row of the pool, exactly (float64 throughout)

    def _capped(self, observed: list[TrialRecord]) -> list[TrialRecord]:
        """At most ``MAX_OBSERVATIONS`` completed trials: the observed Pareto set, then the most recent."""
        if len(observed) <= MAX_OBSERVATIONS:
            return observed
        on_front = pareto_mask(np.array([rec.top1 for rec in observed]), np.array([rec.flops for rec in observed]))
        keep = set(np.flatnonzero(on_front)[:MAX_OBSERVATIONS].tolist())
        for index in range(len(observed) - 1, -1, -1):
            if len(keep) >= MAX_OBSERVATIONS:
                break
            keep.add(index)
        return [observed[index] for index in sorted(keep)]

    def _pool(self, front: np.ndarray) -> np.ndarray:
        """``n x 3`` candidates in the band, of networks never handed out and distinct from each other."""
        span = self.band.high - self.band.low
        uniform = self._rng.uniform(self.band.low, self.band.high, size=(POOL_SIZE, 3))
        centres = front[self._rng.integers(len(front), size=LOCAL_POOL_SIZE)]
        local = np.clip(centres + self._rng.normal(scale=LOCAL_SCALE * span, size=(LOCAL_POOL_SIZE, 3)),
                        self.band.low, self.band.high)
        rows, taken = [], set(self._seen)
        for x in np.concatenate([local, uniform]):
            key = self.band.network_key(x)
            if key not in taken and self.band.contains(self.band.flops(x)):
                taken.add(key)
                rows.append(x)
        return np.array(rows).reshape(-1, 3)

    def _objectives(self, samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
        """``(top1, -FLOPs / budget)`` of posterior samples of top1 at ``X``.

        Args:
            samples: ``sample_shape x batch x n x 1`` samples of top1.
            X: ``batch x n x 3`` points (r, d, w) the samples are of.

        Returns:
            ``sample_shape x batch x n x 2`` objectives, both maximised.
        """
        assert X is not None, "qLogNEHVI passes the points to its objective"
        rows, inverse = torch.unique(X.detach().reshape(-1, 3), dim=0, return_inverse=True)
        flops = torch.tensor([self.band.flops(row.tolist()) for row in rows], dtype=samples.dtype)
        cost = (-flops[inverse] / self.band.budget).reshape(X.shape[:-1])
        return torch.stack([samples[..., 0], cost.expand(samples.shape[:-1])], dim=-1)

    # ----------------------------------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: options, the Sobol and generator positions, asks, records and pending trials."""
        return {
            "version": SEARCHER_STATE_VERSION,
            "strategy": self.strategy,
            "config": self.config(),
            "botorch": botorch.__version__,
            "rng": self._rng.bit_generator.state,
            "sobol_drawn": self._sobol_drawn,
            "asked": self._asked,
            "records": [rec.to_dict() for rec in self._records],
            "pending": pending_state(self._pending),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` exactly (module docstring).

        Raises:
            UserError: if the state is of another version or other options, or is damaged.
        """
        self._check_state(state)
        try:
            records, pending, rng = load_common_state(state)
            sobol_drawn, asked = int(state["sobol_drawn"]), int(state["asked"])
            if sobol_drawn < 0 or asked < 0:
                raise ValueError(f"negative counts: sobol_drawn {sobol_drawn}, asked {asked}")
        except (KeyError, TypeError, ValueError) as error:
            raise _damaged(error) from error
        self._rng = rng
        self._sobol = torch.quasirandom.SobolEngine(3, scramble=True, seed=self.seed)
        if sobol_drawn:
            self._sobol.fast_forward(sobol_drawn)
        self._sobol_drawn = sobol_drawn
        self._asked = asked
        self._records = records
        self._pending = pending
        self._seen = {self.band.network_key((rec.r, rec.d, rec.w)) for rec in records}
        self._seen |= {self.band.network_key((c.r, c.d, c.w)) for c, _ in pending.values()}
        self._model, self._model_key = None, None


def _tensor(values: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=float), dtype=_DTYPE)


def _fit_gp(train_x: torch.Tensor, train_y: torch.Tensor, bounds: torch.Tensor) -> SingleTaskGP:
    """A GP of top1 fitted to ``n x 3`` inputs within ``2 x 3`` bounds and ``n x 1`` outputs, in eval mode."""
    model = SingleTaskGP(train_x, train_y, input_transform=Normalize(d=3, bounds=bounds),
                         outcome_transform=Standardize(m=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BoTorch warns on small noisy data sets; the fit is still the MAP one
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model),
                         optimizer_kwargs={"options": {"maxiter": FIT_MAXITER}}, max_attempts=FIT_ATTEMPTS)
    return model.eval()
