"""The tiny formula: for any FLOPs budget, the resolution, depth and width of the best network.

As in the paper (Sec. 3.2), a front of (r, d, w, FLOPs) points is turned into two Gaussian-process regressions
``r = R(c)`` and ``d = D(c)`` of ``c = FLOPs / FLOPs(base network)``; width follows from the budget,
``w = sqrt(c / (r^2 d))``. Because the builder rounds channels to multiples of 8 and depths to whole blocks, that
``w`` misses the budget by a few percent, so :func:`tinyray.scaling.solve_network` then finds the widest ``w``
whose exact analytic FLOPs (:func:`tinyray.cost.analytic_cost`) meet it.

Which points the fit uses: one a distinct FLOPs count. A front can hold two networks of the same FLOPs and the same
top-1 (a searcher that proposes a network twice gets the same seeded top-1 twice, and neither dominates the
other); the fit keeps the most accurate one of each FLOPs (the first on a tie) and leaves the twin out, because
leave-one-out, which chooses each curve's kernel, would otherwise predict a left-out point from its own copy.
:meth:`Formula.points_note` says how many points the fit used out of how many the front has, wherever the count
is shown.

Where an answer stands, and the one policy for answers outside: an answer is *outside* when its budget lies
outside the fitted range (the FLOPs of the front's lowest and highest points, give or take 3%: beyond them the
GPs extrapolate; see :func:`in_fitted_range`) or its r, d or w lies outside the search space's bounds (the cube
the front was searched in). Such an answer is refused: ``tinyray formula``, ``export`` and ``compare`` stop with
one line that names what is outside and exit with status 2, unless ``--allow-outside`` is given, and then the answer carries its ``outside`` sentence
in the text output and in ``--json`` alike (:func:`refuse_outside`). A search's closing lines state it for the
search's own budget in the same words. Refusing was chosen over clamping to the cube and re-solving: clamping
w to its bound and meeting the budget with r or d moves the network off both fitted curves, so it would be
neither the formula's answer nor a network the search measured, and outside the fitted range there is nothing
to clamp to at all (the curves themselves are the guess). A refusal covers both cases with one rule, and
``--allow-outside`` still gives the extrapolation to whoever asks for it, labelled.

One move stays on the curves and is made: when the curves' r and d leave a budget that only a width outside the
cube meets (a default search's front, seed 2 of 2026-12-07: r = 0.84, d = 0.68 and w = 1.03 at 200M, because the
front's networks near 200M have more resolution or depth than the curves' means), the input side moves within the
r curve's 95% band, the nearest side first, until a width inside the cube meets the budget
(:func:`tinyray.scaling.width_inside_cube`; that front gets r = 0.862, w = 0.893). d stays on its curve and r within
its band, so the network is still one the fit admits; the answer's ``note`` says what moved. When the band does
not reach far enough, the answer stays outside and is refused as above.

Choices, each measured rather than assumed (``tinyray formula --report`` prints the numbers for a front):

* The GPs are BoTorch ``SingleTaskGP`` models (inputs normalised, outputs standardised, noise inferred) fitted by
  ``fit_gpytorch_mll``. For each curve the input space (``c`` or ``log c``) and the kernel (Matern-5/2 or RBF)
  are chosen by leave-one-out error on the front itself: fronts are small (5-30 points) and differ between
  searches, and the choice is cheap to make every time. On the fronts measured so far ``log c`` wins: the paper's
  budgets span an order of magnitude (24M-339M) and the curves bend most at the small end.
* The band is the GP's posterior mean +- 1.96 posterior standard deviations of the latent curve (95%).
* The reviewers asked why a GP and not a linear regression; :func:`leave_one_out` answers with the
  leave-one-out RMSE of the GP against linear (``y ~ c``) and log-linear (``y ~ log c``) fits on the same front,
  for r, d and the width they imply.

A formula's whole state is plain JSON (:meth:`Formula.to_dict`): training points, the chosen variants and every
GP hyperparameter. :meth:`Formula.from_dict` rebuilds the GPs from it, so loading a published formula (the MLflow
pyfunc model of :func:`save_pyfunc`, whose loader is this module's :func:`_load_pyfunc`) never unpickles anything.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyray.errors import UserError
from tinyray.files import FORMULA_VERSION, read_results_csv, write_json_atomic
from tinyray.scaling import TOLERANCE as SOLVE_TOLERANCE
from tinyray.scaling import solve_network, solve_width, width_inside_cube
from tinyray.space import SearchSpace, load_space

if TYPE_CHECKING:
    import pandas as pd

#: The registered MLflow model a search publishes its formula as (``--formula-name``), and what it says.
DEFAULT_MODEL_NAME = "tinynet-formula"
MODEL_DESCRIPTION = "tinyray's tiny formula: FLOPs budget -> (r, d, w, resolution) of the best network"
#: The formula's pyfunc model: the name of the MLflow 3 logged model of the search's parent run (the experiment's
#: *Models* tab; ``runs:/<run id>/formula_model`` resolves to it) and of the same files as an artifact folder of
#: that run (where tinyray before MLflow 3's logged models kept it, and what ``tinyray publish`` checks).
MODEL_ARTIFACT = "formula_model"
#: The logged model's ``model_type``, which the *Models* tab shows and searches by.
MODEL_TYPE = "tiny-formula"
#: Candidate (input space, kernel) pairs of each curve, in order of preference on a tie.
VARIANTS: tuple[tuple[str, str], ...] = (("log_c", "matern52"), ("log_c", "rbf"), ("c", "matern52"), ("c", "rbf"))
#: Half-width of the band in posterior standard deviations (95%).
BAND_Z = 1.96
#: Fewest front points a formula is fitted on.
MIN_POINTS = 3


def default_model_name(space_name: str) -> str:
    """The registered model a search's formula goes to by default: ``tinynet-formula`` for EfficientNet-B0's space,
    ``tinynet-formula-<space>`` for another base, so that one MLflow store's versions of a model never mix bases
    (``models:/tinynet-formula/latest`` stays an EfficientNet-B0 formula after a ResNet-50 search)."""
    return DEFAULT_MODEL_NAME if space_name == "efficientnet_b0" else f"{DEFAULT_MODEL_NAME}-{space_name}"


def _features(c: np.ndarray, inputs: str) -> np.ndarray:
    return np.log(c) if inputs == "log_c" else np.asarray(c, dtype=float)


def _tensor(values: Any) -> Any:
    import torch

    return torch.tensor(np.array(values, dtype=float), dtype=torch.float64)


def import_botorch() -> None:
    """Import BoTorch (and under it gpytorch and linear_operator) without linear_operator's import-time warning.

    linear_operator decorates functions with ``@torch.jit.script`` when its ``linear_cg`` module is imported (by
    BoTorch's import, or later by a fit that reaches it), and torch deprecates that with a two-line FutureWarning
    that every command fitting or loading a formula printed on stderr. It is not tinyray's code, nothing a user can
    act on, and the scripted functions still work, so it is silenced here, for this message from torch.jit and
    during these imports only. Every use of BoTorch in tinyray comes after this call.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                                module=r"torch\.jit\._script")
        import botorch  # noqa: F401
        import linear_operator.utils.linear_cg  # noqa: F401  (the module that scripts; imported lazily otherwise)


def _make_gp(train_x: Any, train_y: Any, kernel: str) -> Any:
    """An unfitted BoTorch GP on ``batch x n x 1`` inputs and outputs (tensors; ``batch`` may be empty)."""
    import_botorch()
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Normalize, Standardize
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior

    batch = train_x.shape[:-2]
    return SingleTaskGP(
        train_x, train_y,
        covar_module=get_covar_module_with_dim_scaled_prior(ard_num_dims=1, batch_shape=batch,
                                                            use_rbf_kernel=kernel == "rbf"),
        input_transform=Normalize(d=1, batch_shape=batch),
        outcome_transform=Standardize(m=1, batch_shape=batch),
    )


def _fit(model: Any, seed: int) -> Any:
    import torch
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BoTorch warns on tiny, noisy 1-d data; the fit is still the MAP one
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    return model


def _fit_gp(x: np.ndarray, y: np.ndarray, kernel: str, seed: int = 0) -> Any:
    """A GP fitted to ``n`` points (``x``, ``y``: length-``n`` arrays)."""
    return _fit(_make_gp(_tensor(x).reshape(-1, 1), _tensor(y).reshape(-1, 1), kernel), seed)


def _gp_predict(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.no_grad():
        posterior = model.posterior(_tensor(x).reshape(-1, 1))
        mean = posterior.mean.reshape(-1).numpy()
        sd = posterior.variance.clamp_min(0).sqrt().reshape(-1).numpy()
    return mean, sd


@dataclass
class Curve:
    """One fitted GP regression ``target = f(c)``.

    Attributes:
        target: ``r`` or ``d``.
        inputs: ``log_c`` or ``c``: what the GP sees of c.
        kernel: ``matern52`` or ``rbf``.
        c: training inputs (c of the front points), length ``n``.
        y: training outputs, length ``n``.
        state: the fitted model's ``state_dict`` as nested lists (hyperparameters and transform buffers).
    """

    target: str
    inputs: str
    kernel: str
    c: list[float]
    y: list[float]
    state: dict[str, Any]

    @classmethod
    def fit(cls, target: str, c: np.ndarray, y: np.ndarray, inputs: str, kernel: str, seed: int = 0) -> "Curve":
        model = _fit_gp(_features(c, inputs), y, kernel, seed)
        state = {key: value.tolist() for key, value in model.state_dict().items()}
        curve = cls(target, inputs, kernel, [float(v) for v in c], [float(v) for v in y], state)
        curve.__dict__["model"] = model  # already built: skip the rebuild
        return curve

    @cached_property
    def model(self) -> Any:
        """The GP, rebuilt from the JSON state (no pickles)."""
        import torch

        x = _tensor(_features(np.asarray(self.c), self.inputs)).reshape(-1, 1)
        model = _make_gp(x, _tensor(self.y).reshape(-1, 1), self.kernel)
        model.load_state_dict({key: torch.tensor(value, dtype=torch.float64) for key, value in self.state.items()})
        model.eval()
        return model

    def predict(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the curve at ``c`` (length-``m`` arrays)."""
        return _gp_predict(self.model, _features(np.asarray(c, dtype=float), self.inputs))

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "inputs": self.inputs, "kernel": self.kernel, "c": self.c, "y": self.y,
                "state": self.state}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Curve":
        return cls(raw["target"], raw["inputs"], raw["kernel"], list(raw["c"]), list(raw["y"]), dict(raw["state"]))


def paper_width(c: np.ndarray | float, r: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
    """The paper's width for a relative budget: ``w = sqrt(c / (r^2 d))``."""
    return np.sqrt(np.asarray(c, dtype=float) / (np.square(r) * np.asarray(d, dtype=float)))


@dataclass(frozen=True)
class Answer:
    """The formula's network for one budget.

    Attributes:
        budget: FLOPs asked for (multiply-accumulates of one image).
        c: ``budget / FLOPs(base)`` at the same number of classes.
        r, d, w: the network: ``d`` and (within a pixel or two) ``r`` from the GPs, ``w`` solved so that
            ``flops <= budget`` (see :func:`solve_network`).
        r_lo, r_hi, d_lo, d_hi: 95% band of the GP curves.
        w_paper: ``sqrt(c / (r^2 d))`` at the GP's mean, before the exact solve.
        w_lo, w_hi: the exactly solved widths at the band's corners ``(r_hi, d_hi)`` and ``(r_lo, d_lo)``.
        resolution: input side, ``floor(224 r)``.
        flops, params: exact counts of the network at ``num_classes`` outputs.
        extrapolates: ``c`` lies outside the fitted front's range.
        in_bounds: r, d and w all lie inside the search space's bounds.
        fitted_low, fitted_high: the fitted range in FLOPs at ``num_classes`` outputs (the front's lowest and
            highest points).
        outside: ``""`` inside; else one sentence saying what lies outside (the range, the cube, or both), the
            same in the text output and in ``--json``.
        note: ``""``, or one sentence saying that ``r`` was moved within its band to keep ``w`` inside the cube
            (:func:`width_inside_cube`).
    """

    budget: int
    c: float
    r: float
    d: float
    w: float
    r_lo: float
    r_hi: float
    d_lo: float
    d_hi: float
    w_paper: float
    w_lo: float
    w_hi: float
    resolution: int
    flops: int
    params: int
    num_classes: int
    extrapolates: bool
    in_bounds: bool
    fitted_low: int = 0
    fitted_high: int = 0
    outside: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One readable line, e.g. ``200M: r=0.84 [0.80, 0.88] d=1.10 [...] w=0.75 -> 188 px, 199.8M FLOPs, 3.7M params``."""
        from tinyray.cost import format_flops

        text = (f"{format_flops(self.budget)}: r={self.r:.3f} [{self.r_lo:.2f}, {self.r_hi:.2f}] "
                f"d={self.d:.3f} [{self.d_lo:.2f}, {self.d_hi:.2f}] w={self.w:.3f} [{self.w_lo:.2f}, {self.w_hi:.2f}] "
                f"-> {self.resolution} px, {format_flops(self.flops)} FLOPs, {self.params / 1e6:.2f}M params")
        if self.note:
            text += f" ({self.note})"
        if self.outside:
            text += f" (OUTSIDE: {self.outside})"
        return text


#: How far (relative, in c) past the front's highest or below its lowest point a budget still counts as inside the
#: fitted range. Whole pixels, whole blocks and channels in multiples of 8 make FLOPs a step function, so the
#: network nearest a budget lies a few percent below it: grown onto a 200M budget (NSGA-III's budget-edge offspring,
#: :meth:`tinyray.searchers.band.FlopsBand.grow_to_budget`), 95% of uniformly drawn shapes end within 3% of it and
#: 38% within 1%. 3% of c is 0.03 in log c, about 1% of the log-range of the default 16x FLOPs band.
FITTED_RANGE_TOLERANCE = 0.03


def in_fitted_range(c: float, low: float, high: float) -> bool:
    """Whether ``c`` (or FLOPs) lies in the fitted range ``[low, high]``, give or take
    :data:`FITTED_RANGE_TOLERANCE`, so that the answer at the search's own budget counts as fitted when the front
    reached the budget: no network sits exactly at a budget."""
    return low * (1.0 - FITTED_RANGE_TOLERANCE) <= c <= high * (1.0 + FITTED_RANGE_TOLERANCE)


def outside_sentence(space: SearchSpace, budget: int, fitted: tuple[int, int], point: dict[str, float]) -> str:
    """What of an answer lies outside the fitted range and the cube, in one sentence ("" if nothing does).

    Args:
        space: the search space (its bounds are the cube).
        budget: the FLOPs asked for.
        fitted: the fitted range in FLOPs (the front's lowest and highest points).
        point: the answer's ``r``, ``d``, ``w``.
    """
    from tinyray.cost import format_flops

    parts = []
    low, high = fitted
    if not in_fitted_range(budget, low, high):
        parts.append(f"{format_flops(budget)} lies {'above' if budget > high else 'below'} the fitted range "
                     f"{format_flops(low)}-{format_flops(high)} FLOPs, so r and d are extrapolated")
    bounds = space.bounds()
    for key, value in point.items():
        if not bounds[key].contains(value):
            edge = bounds[key].high if value > bounds[key].high else bounds[key].low
            parts.append(f"{key}={value:.3f} is {'above' if value > edge else 'below'} the cube's bound {edge:g}")
    return "; ".join(parts)


def refuse_outside(answer: Answer, allow_outside: bool) -> Answer:
    """The policy for answers outside (see the module docstring): refuse unless ``allow_outside``.

    Raises:
        UserError: one line naming what is outside and the fix, if the answer is outside and not allowed.
    """
    from tinyray.cost import format_flops

    if answer.outside and not allow_outside:
        fix = (f"give a budget in {format_flops(answer.fitted_low)}-{format_flops(answer.fitted_high)}, or "
               if answer.extrapolates else "")
        raise UserError(f"the formula has no fitted answer for {format_flops(answer.budget)}: {answer.outside}; "
                        f"{fix}give --allow-outside to take that network anyway")
    return answer


@dataclass
class Formula:
    """A fitted tiny formula (see the module docstring).

    Attributes:
        space: the search space the front was found in.
        num_classes: classifier outputs the front's FLOPs were counted with.
        points: the front, one dict a point (``c``, ``flops``, ``r``, ``d``, ``w``, ``top1``).
        curves: ``{"r": Curve, "d": Curve}``.
        loo: leave-one-out table (:func:`leave_one_out`), one dict a row.
        source: where the front came from (a path or URI), for the record.
        front_size: networks on the front it was fitted from (``len(points)`` or more: see the module docstring).
        budget: the search's own budget (FLOPs), if fitted by a search: :meth:`table` reaches it.
    """

    space: SearchSpace
    num_classes: int
    points: list[dict[str, float]]
    curves: dict[str, Curve]
    loo: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    front_size: int = 0
    budget: int | None = None

    @property
    def base_flops(self) -> int:
        from tinyray.cost import base_flops

        return base_flops(self.space, self.num_classes)

    @property
    def c_range(self) -> tuple[float, float]:
        c = [point["c"] for point in self.points]
        return min(c), max(c)

    def points_note(self) -> str:
        """How many front points the fit used, e.g. ``7 front points`` or ``6 front points (of 7: ...)``."""
        used = len(self.points)
        if self.front_size <= used:
            return f"{used} front points"
        left = self.front_size - used
        return (f"{used} front points (of {self.front_size}: {left} at the same FLOPs as a more accurate or equal "
                f"one left out)")

    def loo_rmse(self) -> dict[str, float]:
        """Fit quality: the leave-one-out RMSE of the chosen r and d curves (``{"r": ..., "d": ...}``; a target
        whose row is missing, as in a formula saved without its LOO table, is left out)."""
        rows = {row.get("model"): row for row in self.loo}
        found = {}
        for target, curve in self.curves.items():
            row = rows.get(f"gp {curve.inputs} {curve.kernel}")
            if row is not None and row.get(f"{target}_rmse") is not None:
                found[target] = float(row[f"{target}_rmse"])
        return found

    def curve_values(self, c: np.ndarray) -> dict[str, np.ndarray]:
        """Mean and band of r and d at ``c`` (length-``m``), clamped to the search space's bounds."""
        out: dict[str, np.ndarray] = {}
        for target in ("r", "d"):
            mean, sd = self.curves[target].predict(c)
            bounds = self.space.bounds()[target]
            clamp = lambda v: np.clip(v, bounds.low, bounds.high)  # noqa: E731
            out[target] = clamp(mean)
            out[f"{target}_lo"] = clamp(mean - BAND_Z * sd)
            out[f"{target}_hi"] = clamp(mean + BAND_Z * sd)
        return out

    def answer(self, budget: float, num_classes: int | None = None) -> Answer:
        """The network of the formula for ``budget`` FLOPs at ``num_classes`` outputs (default the front's)."""
        from tinyray.cost import base_flops

        classes = num_classes or self.num_classes
        budget = int(budget)
        c = budget / base_flops(self.space, classes)
        values = {key: float(value[0]) for key, value in self.curve_values(np.array([c])).items()}
        d = values["d"]
        # The solve may move the side to meet the budget within 1%: preferably within the r curve's 95% band, else
        # anywhere in the cube; never out of the cube when the curve's r is inside it.
        cube = (self.space.r.low, self.space.r.high) if self.space.r.contains(values["r"]) else None
        band = (values["r_lo"], values["r_hi"])
        if cube:
            band = (max(band[0], cube[0]), min(band[1], cube[1]))
        r, w, flops, params = solve_network(self.space, values["r"], d, budget, classes, r_range=band)
        if budget - flops > SOLVE_TOLERANCE * budget:
            wider = solve_network(self.space, values["r"], d, budget, classes, r_range=cube)
            if wider[2] > flops:
                r, w, flops, params = wider
        note = ""
        if cube and self.space.d.contains(d) and not self.space.w.contains(w):
            inside = width_inside_cube(self.space, r, d, budget, classes, band)
            if inside is not None:
                note = (f"r {'raised' if inside[0] > r else 'lowered'} from the curve's {values['r']:.3f} to {inside[0]:.3f} "
                        f"(within its 95% band {band[0]:.2f}-{band[1]:.2f}) so that w={w:.3f} comes inside the "
                        f"cube's {self.space.w.low:g}-{self.space.w.high:g}")
                r, w, flops, params = inside
        base = base_flops(self.space, classes)
        fitted = (int(round(self.c_range[0] * base)), int(round(self.c_range[1] * base)))
        return Answer(
            budget=budget, c=c, r=r, d=d, w=w, r_lo=values["r_lo"], r_hi=values["r_hi"], d_lo=values["d_lo"],
            d_hi=values["d_hi"], w_paper=float(paper_width(c, values["r"], d)),
            # the band's widths meet the same budget at the band's corners (more resolution and depth, less width)
            w_lo=solve_width(self.space, values["r_hi"], values["d_hi"], budget, classes)[0],
            w_hi=solve_width(self.space, values["r_lo"], values["d_lo"], budget, classes)[0],
            resolution=self.space.resolution(r), flops=flops, params=params, num_classes=classes,
            extrapolates=not in_fitted_range(c, *self.c_range),
            in_bounds=all(self.space.bounds()[k].contains(v) for k, v in (("r", r), ("d", d), ("w", w))),
            fitted_low=fitted[0], fitted_high=fitted[1],
            outside=outside_sentence(self.space, budget, fitted, {"r": r, "d": d, "w": w}), note=note,
        )

    def table(self, points: int = 60) -> "pd.DataFrame":
        """The curves on a dense log-spaced grid of c (what ``formula.json`` stores): over the fitted range, and on
        to the search's budget (:attr:`budget`) where that lies beyond it, with a column ``fitted`` that is False
        on the extrapolated rows."""
        import pandas as pd

        low, high = self.c_range
        if self.budget:
            high = max(high, self.budget / self.base_flops)
        c = np.geomspace(low, high, points) if high > low else np.array([low])
        values = self.curve_values(c)
        table = pd.DataFrame({"c": c, "flops": np.round(c * self.base_flops).astype(np.int64), **values})
        table["w"] = paper_width(c, table["r"], table["d"])
        table["w_lo"] = paper_width(c, table["r_hi"], table["d_hi"])
        table["w_hi"] = paper_width(c, table["r_lo"], table["d_lo"])
        table["resolution"] = [self.space.resolution(r) for r in table["r"]]
        table["fitted"] = table["c"] <= self.c_range[1] * (1.0 + FITTED_RANGE_TOLERANCE)
        return table

    # -- state ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON state: everything :meth:`from_dict` needs, plus a dense table of the curves for readers."""
        low, high = self.c_range
        return {
            "version": FORMULA_VERSION,
            "space": {"name": self.space.name, "file": str(self.space.source)},
            "space_definition": self.space.to_dict(),
            "num_classes": self.num_classes,
            "base_flops": self.base_flops,
            "source": self.source,
            "band_z": BAND_Z,
            "c_range": [low, high],
            "front_size": self.front_size,
            "search_budget": self.budget,
            "budget_range": [low * self.base_flops, high * self.base_flops],
            "points": self.points,
            "curves": {name: curve.to_dict() for name, curve in self.curves.items()},
            "loo": self.loo,
            "table": self.table().to_dict(orient="records"),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "formula") -> "Formula":
        from tinyray.space import parse_space

        if not isinstance(raw, dict) or raw.get("version") != FORMULA_VERSION:
            found = raw.get("version") if isinstance(raw, dict) else type(raw).__name__
            raise UserError(f"{where} is not a tinyray formula of version {FORMULA_VERSION} (found {found!r}): "
                            f"refit it with 'tinyray formula --from RESULTS_DIR'")
        try:
            space = parse_space(raw["space_definition"], where=f"{where} (space)")
            curves = {name: Curve.from_dict(curve) for name, curve in raw["curves"].items()}
            return cls(space, int(raw["num_classes"]), list(raw["points"]), curves, list(raw.get("loo", [])),
                       str(raw.get("source", "")), int(raw.get("front_size") or 0),
                       int(raw["search_budget"]) if raw.get("search_budget") else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where} is damaged ({type(exc).__name__}: {exc}): refit it with 'tinyray formula --from RESULTS_DIR'") from None

    def save(self, path: Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "Formula":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"no formula at {path}: run 'tinyray formula --from RESULTS_DIR' or a search first") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the formula {path} ({exc}): refit it with 'tinyray formula --from RESULTS_DIR'") from None
        return cls.from_dict(raw, where=str(path))


# -- fitting ---------------------------------------------------------------------------------------------------
def _linear_loo(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions of an ordinary least-squares line ``y ~ a + b x`` (closed form, hat matrix)."""
    design = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    hat = design @ np.linalg.pinv(design.T @ design) @ design.T
    residual = y - design @ coef
    return y - residual / np.clip(1 - np.diag(hat), 1e-9, None)


def _gp_loo(c: np.ndarray, y: np.ndarray, inputs: str, kernel: str, seed: int) -> np.ndarray:
    """Leave-one-out predictions of a GP refitted (hyperparameters included) without each point in turn.

    The ``n`` folds are fitted at once as one batched GP (BoTorch's ``gen_loo_cv_folds`` layout).
    """
    import torch

    import_botorch()
    from botorch.cross_validation import gen_loo_cv_folds

    folds = gen_loo_cv_folds(_tensor(_features(c, inputs)).reshape(-1, 1), _tensor(y).reshape(-1, 1))
    model = _fit(_make_gp(folds.train_X, folds.train_Y, kernel), seed)
    with torch.no_grad():
        return model.posterior(folds.test_X).mean.reshape(-1).numpy()


def _rmse(prediction: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(prediction - truth))))


def leave_one_out(points: "pd.DataFrame", seed: int = 0) -> "pd.DataFrame":
    """Leave-one-out RMSE of every GP variant and of linear and log-linear fits, for r, d and the implied w.

    Args:
        points: the front, with columns ``c``, ``r``, ``d`` and ``w``.

    Returns:
        One row a model: ``model`` (e.g. ``gp log_c matern52``, ``linear``, ``log-linear``), ``r_rmse``,
        ``d_rmse``, ``w_rmse`` (w from the left-out point's c and the predicted r and d, by the paper's rule).
    """
    import pandas as pd

    c = points["c"].to_numpy(float)
    truth = {key: points[key].to_numpy(float) for key in ("r", "d", "w")}
    rows = []
    models: list[tuple[str, Any]] = [
        (f"gp {inputs} {kernel}", lambda y, i=inputs, k=kernel: _gp_loo(c, y, i, k, seed)) for inputs, kernel in VARIANTS
    ]
    models += [("linear", lambda y: _linear_loo(c, y)), ("log-linear", lambda y: _linear_loo(np.log(c), y))]
    for name, predict in models:
        r_hat, d_hat = predict(truth["r"]), predict(truth["d"])
        w_hat = paper_width(c, np.clip(r_hat, 1e-3, None), np.clip(d_hat, 1e-3, None))
        rows.append({"model": name, "r_rmse": _rmse(r_hat, truth["r"]), "d_rmse": _rmse(d_hat, truth["d"]),
                     "w_rmse": _rmse(w_hat, truth["w"])})
    return pd.DataFrame(rows)


def fit_formula(points: "pd.DataFrame", space: SearchSpace, num_classes: int, *, seed: int = 0,
                source: str = "", budget: int | None = None) -> Formula:
    """Fit the tiny formula on a front.

    Args:
        points: the front: columns ``r``, ``d``, ``w`` and ``flops`` (or ``c``); ``top1`` is kept if present.
        space: the search space the points come from (its base network defines c).
        num_classes: classifier outputs the ``flops`` were counted with.
        seed: seeds the GP fits.
        source: where the points came from, for the record.
        budget: the search's budget, if a search fits it (its table then reaches that budget).

    Raises:
        UserError: with fewer than :data:`MIN_POINTS` distinct points or missing columns.
    """
    import torch

    frame, front_size = _front_points(points, space, num_classes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 1-d GPs on tens of points: threads only add contention (measured 5-10x slower)
    try:
        formula = _fit_formula(frame, space, num_classes, seed, source)
    finally:
        torch.set_num_threads(threads)
    formula.front_size = front_size
    formula.budget = int(budget) if budget else None
    return formula


def _fit_formula(frame: "pd.DataFrame", space: SearchSpace, num_classes: int, seed: int, source: str) -> Formula:
    from tinyray.cost import base_flops

    loo = leave_one_out(frame, seed)
    gp_rows = loo[loo["model"].str.startswith("gp ")].reset_index(drop=True)
    curves = {}
    for target in ("r", "d"):
        best = int(np.argmin(gp_rows[f"{target}_rmse"].to_numpy()))  # first of the VARIANTS order on a tie
        inputs, kernel = VARIANTS[best]
        curves[target] = Curve.fit(target, frame["c"].to_numpy(float), frame[target].to_numpy(float), inputs, kernel, seed)
    records = frame[[col for col in ("c", "flops", "r", "d", "w", "top1") if col in frame]].to_dict(orient="records")
    base = base_flops(space, num_classes)
    assert all(abs(p["c"] * base - p["flops"]) <= 1 + 1e-6 * p["flops"] for p in records)
    return Formula(space, num_classes, records, curves, loo.to_dict(orient="records"), source)


def _front_points(points: "pd.DataFrame", space: SearchSpace, num_classes: int) -> tuple["pd.DataFrame", int]:
    """The distinct-FLOPs points the fit uses, and how many usable points there were before twins were dropped."""
    from tinyray.cost import base_flops

    missing = [col for col in ("r", "d", "w") if col not in points]
    if missing or not ({"flops", "c"} & set(points.columns)):
        need = ", ".join(missing + ([] if {"flops", "c"} & set(points.columns) else ["flops or c"]))
        raise UserError(f"the front lacks the column(s) {need}: give a front.csv or trials.csv of a tinyray search")
    frame = points.copy()
    base = base_flops(space, num_classes)
    if "c" not in frame:
        frame["c"] = frame["flops"].astype(float) / base
    if "flops" not in frame:
        frame["flops"] = frame["c"].astype(float) * base
    frame = frame.dropna(subset=["c", "r", "d", "w"])
    frame = frame[frame["c"] > 0]
    usable = len(frame)
    if "top1" in frame:  # the most accurate of each FLOPs count is kept (see the module docstring)
        frame = frame.sort_values("top1", ascending=False, kind="stable")
    frame = frame.drop_duplicates(subset=["c"]).sort_values("c", kind="stable").reset_index(drop=True)
    if len(frame) < MIN_POINTS:
        raise UserError(f"the front has {len(frame)} distinct point(s); the formula needs at least {MIN_POINTS}: "
                        f"run a search with more --trials")
    return frame, usable


# -- where fronts come from ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrontSource:
    """A front read from disk, with what is needed to interpret its FLOPs."""

    points: "pd.DataFrame"
    space: SearchSpace
    num_classes: int
    where: str


def read_search_info(results_dir: Path) -> dict[str, Any] | None:
    """The ``search.json`` a search writes into its results folder, or None."""
    path = Path(results_dir) / "search.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({exc}): the results folder is damaged") from None


def load_front(source: Path, *, space: str | None = None, num_classes: int | None = None) -> FrontSource:
    """Read a front from a search's results folder, or from a CSV (``front.csv``, ``trials.csv`` or any table
    with ``r``, ``d``, ``w`` and ``flops`` or ``c``; a table with a ``status`` column is reduced to its front).

    Args:
        source: a results folder or a CSV file.
        space: search space of a bare CSV (default: the folder's, else ``efficientnet_b0``).
        num_classes: classifier outputs its FLOPs were counted with (default: the folder's, else 1000).
    """
    import pandas as pd

    from tinyray.front import front_table

    source = Path(source).expanduser()
    info = None
    if source.is_dir():
        info = read_search_info(source)
        csv = source / "front.csv"
        if not csv.is_file():
            raise UserError(f"{source} has no front.csv: give the results folder of a finished tinyray search")
    elif source.is_file():
        csv = source
        info = read_search_info(source.parent) if source.name in ("front.csv", "trials.csv") else None
    else:
        raise UserError(f"{source} does not exist: give a search's results folder or a front CSV")
    try:
        table = read_results_csv(csv)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"cannot read {csv} as CSV ({str(exc).splitlines()[0]}): give a front.csv of a tinyray search") from None
    if "status" in table and "top1" in table and "flops" in table:
        table = front_table(table)
    space_name = space or (info or {}).get("space_file") or None
    classes = num_classes or (info or {}).get("num_classes") or 1000
    return FrontSource(table, load_space(space_name), int(classes), str(source))


def find_formula(storage: Path) -> Path | None:
    """The newest ``formula.json`` among the search folders of ``storage``."""
    storage = Path(storage).expanduser()
    if not storage.is_dir():
        return None
    found = [path for path in storage.glob("*/formula.json") if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


# -- the plot --------------------------------------------------------------------------------------------------
def plot_formula(formula: Formula, path: Path, title: str = "") -> Path:
    """r, d and w against c with their 95% bands, the front points and the base's landmarks (B0's: TinyNet-A..E) (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyray.cost import analytic_cost, base_flops

    table = formula.table(120)
    points = formula.points
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=110, sharex=True)
    base_1000 = base_flops(formula.space, 1000)
    landmarks = formula.space.network.landmarks()  # the paper's TinyNet-A..E on B0's cube, else none
    for ax, target in zip(axes, ("r", "d", "w")):
        ax.plot(table["c"], table[target], c="tab:blue", lw=1.8, label=f"{target}(c)")
        ax.fill_between(table["c"], table[f"{target}_lo"], table[f"{target}_hi"], color="tab:blue", alpha=0.18,
                        label="95% band")
        ax.scatter([p["c"] for p in points], [p[target] for p in points], c="tab:orange", s=28, zorder=3,
                   label=f"front ({len(points)} fitted)" if formula.front_size <= len(points)
                   else f"front ({len(points)} fitted of {formula.front_size})")
        if landmarks:
            tiny_c = [analytic_cost(formula.space, *point, 1000).flops / base_1000 for point in landmarks.values()]
            ax.scatter(tiny_c, [point["rdw".index(target)] for point in landmarks.values()], marker="x", c="gray",
                       s=30, label=f"{next(iter(landmarks))}..{list(landmarks)[-1]}")
        if not in_fitted_range(table["c"].max(), *formula.c_range):  # the table runs on to the search's budget
            ax.axvspan(formula.c_range[1], table["c"].max(), color="gray", alpha=0.15, label="extrapolated")
        ax.set_xscale("log")
        ax.set_xlabel(f"c = FLOPs / FLOPs({formula.space.name} at 1, 1, 1)")
        ax.set_ylabel(target)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title or "tiny formula: r(c), d(c) by GP regression, w = sqrt(c / (r^2 d))", fontsize=10)
    from tinyray.front import save_figure

    return save_figure(fig, path)


# -- MLflow pyfunc -----------------------------------------------------------------------------------------------
class FormulaPyfunc:
    """What ``mlflow.pyfunc.load_model(uri)`` wraps: ``predict`` takes a DataFrame with a ``flops`` column (FLOPs
    budgets) or a ``c`` column, and optionally ``num_classes``, and returns one row per budget with the columns of
    :class:`Answer`."""

    def __init__(self, formula: Formula) -> None:
        self.formula = formula

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> "pd.DataFrame":
        import pandas as pd

        from tinyray.cost import base_flops

        frame = pd.DataFrame(model_input)
        if "flops" not in frame and "c" not in frame:
            raise ValueError("the formula's input needs a 'flops' (FLOPs budgets) or a 'c' column")
        rows = []
        for _, row in frame.iterrows():
            classes = int(row["num_classes"]) if "num_classes" in frame and pd.notna(row["num_classes"]) else None
            budget = row["flops"] if "flops" in frame else row["c"] * base_flops(self.formula.space, classes or self.formula.num_classes)
            rows.append(self.formula.answer(float(budget), classes).as_dict())
        return pd.DataFrame(rows)


def _load_pyfunc(data_path: str, model_config: Any = None) -> FormulaPyfunc:
    """MLflow's loader hook (``loader_module="tinyray.formula"``): rebuild the formula from its JSON."""
    return FormulaPyfunc(Formula.load(Path(data_path)))


def save_pyfunc(formula_json: Path, path: Path, logged: Any = None, run_id: str | None = None) -> Path:
    """Save an MLflow pyfunc model of the formula at ``formula_json`` into the new folder ``path``.

    Args:
        logged: the ``mlflow.entities.LoggedModel`` these files are for, if any: its id and the run that made it go
            into the ``MLmodel`` file, as ``mlflow.pyfunc.log_model`` writes them.
        run_id: the run that made ``logged``.
    """
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import Model, infer_signature

    from tinyray import __version__
    from tinyray.tracking import quiet_mlflow

    quiet_mlflow()  # its INFO line about validating the input example is noise here
    formula = Formula.load(formula_json)
    example = pd.DataFrame({"flops": [float(formula.base_flops * formula.c_range[1])]})
    with warnings.catch_warnings():
        # The answer's resolution, FLOPs and params are integers and never missing: MLflow's hint about integer
        # columns that cannot hold missing values is a multi-line UserWarning on every search's stderr, not news.
        warnings.filterwarnings("ignore", message=r"Hint: Inferred schema contains integer column", category=UserWarning)
        signature = infer_signature(example, FormulaPyfunc(formula).predict(example))
    described = None if logged is None else Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                                                   run_id=run_id, model_id=logged.model_id)
    mlflow.pyfunc.save_model(
        path=str(path), loader_module="tinyray.formula", data_path=str(formula_json), signature=signature,
        input_example=example, pip_requirements=[f"tinyray=={__version__}"], mlflow_model=described,
    )
    return Path(path)


def log_model(client: Any, experiment_id: str, run_id: str, formula_json: Path, tags: dict[str, str],
              run_copy: bool = True) -> str:
    """Log the formula's pyfunc model as an MLflow 3 logged model made by the run, and return its id.

    This is what ``mlflow.pyfunc.log_model(name=MODEL_ARTIFACT)`` does inside an active run, through ``client``
    (tinyray keeps no global MLflow state): create the logged model (:data:`MODEL_ARTIFACT`, of type
    :data:`MODEL_TYPE`, source run ``run_id``), upload its files, record it as the run's output and mark it
    ready. The experiment's *Models* tab then lists it, and the run's page shows it as its logged model.

    Args:
        client: an ``mlflow.MlflowClient``.
        experiment_id, run_id: the search's experiment and parent run.
        formula_json: the fitted formula (``formula.json``).
        tags: the logged model's tags (those of the registered version, :func:`version_note`).
        run_copy: also upload the same files as the run's artifact folder :data:`MODEL_ARTIFACT` (what the run's
            *Artifacts* tab shows, and what searches before logged models had).
    """
    import tempfile

    from mlflow.entities import LoggedModelOutput

    logged = client.create_logged_model(experiment_id, name=MODEL_ARTIFACT, source_run_id=run_id, tags=tags,
                                        model_type=MODEL_TYPE)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = save_pyfunc(formula_json, Path(tmp) / MODEL_ARTIFACT, logged, run_id)
            client.log_model_artifacts(logged.model_id, str(model_dir))
            if run_copy:
                client.log_artifacts(run_id, str(model_dir), artifact_path=MODEL_ARTIFACT)
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        log_fit_metrics(client, run_id, logged.model_id, Formula.load(formula_json))
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    return logged.model_id


def fit_metrics(formula: Formula) -> dict[str, float]:
    """The formula's fit quality and what it was fitted on, as numbers: the metrics of its logged model.

    ``loo_r_rmse``, ``loo_d_rmse`` (leave-one-out RMSE of the chosen r and d curves), ``front_points`` (the front's
    size), ``points_fitted`` (one a distinct FLOPs count), ``budget_M`` (the search's budget) and ``flops_low_M``,
    ``flops_high_M`` (the FLOPs range the curves cover), FLOPs in millions. The keys differ from the search run's
    progress metrics (``front_size``): metrics of a logged model are also metrics of the run that logs them.
    """
    metrics = {f"loo_{target}_rmse": value for target, value in formula.loo_rmse().items()}
    metrics.update(front_points=float(formula.front_size or len(formula.points)), points_fitted=float(len(formula.points)),
                   flops_low_M=formula.base_flops * formula.c_range[0] / 1e6,
                   flops_high_M=formula.base_flops * formula.c_range[1] / 1e6)
    if formula.budget:
        metrics["budget_M"] = float(formula.budget) / 1e6
    return metrics


def log_fit_metrics(client: Any, run_id: str, model_id: str, formula: Formula) -> None:
    """Log :func:`fit_metrics` on the logged model ``model_id`` (made by ``run_id``): the *Models* tab shows them."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0, model_id=model_id)
                                      for key, value in fit_metrics(formula).items()])


def find_logged_model(client: Any, experiment_id: str, run_id: str) -> str | None:
    """The id of the ready logged model :data:`MODEL_ARTIFACT` that ``run_id`` made, or None (not logged yet)."""
    token = None
    while True:
        page = client.search_logged_models([experiment_id], filter_string=f"name = '{MODEL_ARTIFACT}'",
                                           page_token=token)
        for model in page:
            if model.source_run_id == run_id and str(model.status) == "READY":
                return model.model_id
        token = page.token
        if not token:
            return None


def link_version(client: Any, model_id: str, model_name: str, version: str) -> bool:
    """Tag the logged model with the registered version made from it (``mlflow.modelVersions``, which MLflow's UI
    reads to show the version beside the logged model, as ``mlflow.register_model`` does); False if it had it."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    known = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    versions = json.loads(known) if known else []
    entry = {"name": model_name, "version": str(version)}
    # an `mlflow server` tags it itself when the version is created (with the version as a number)
    if any(item.get("name") == model_name and str(item.get("version")) == str(version) for item in versions):
        return False
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*versions, entry])})
    return True


def publish(formula: Formula, tracker: Any, run_id: str, folder: Path, *, model_name: str = DEFAULT_MODEL_NAME,
            title: str = "", search: str = "") -> dict[str, str]:
    """Write ``formula.json`` and ``formula.png`` into ``folder``, log them on the run, log the pyfunc model
    (:func:`log_model`: a logged model of the run) and register it as a new version of ``model_name`` (described by
    :func:`version_note`; ``search`` names the search, default the run's name).

    Returns:
        ``{"json", "plot", "run_model_uri", "model_uri", "model_id"}`` (``model_id``: the logged model's).
    """
    folder = Path(folder)
    json_path = formula.save(folder / "formula.json")
    plot_path = plot_formula(formula, folder / "formula.png", title)
    tracker.log_artifacts(run_id, [json_path, plot_path])
    client = tracker.client
    run = client.get_run(run_id)
    description, tags = version_note(formula, search or run.info.run_name)
    model_id = log_model(client, run.info.experiment_id, run_id, json_path, tags)
    version = register_model(client, model_name, run_id, run.info.artifact_uri, description, tags, model_id)
    return {"json": str(json_path), "plot": str(plot_path), "run_model_uri": f"runs:/{run_id}/{MODEL_ARTIFACT}",
            "model_uri": f"models:/{model_name}/{version}", "model_id": model_id}


def version_note(formula: Formula, search: str) -> tuple[str, dict[str, str]]:
    """The description and tags of the model version a search registers: which search, its budget, the front the
    formula was fitted on, and how well (leave-one-out RMSE of r and d).

    Args:
        formula: the fitted formula.
        search: the search's name (its MLflow experiment).
    """
    from tinyray.cost import format_flops

    rmse = formula.loo_rmse()
    budget = f"{format_flops(formula.budget)} FLOPs" if formula.budget else "no budget recorded"
    fit = ", ".join(f"{target} {value:.3f}" for target, value in rmse.items()) or "not recorded"
    curves = ", ".join(f"{target}: gp {curve.inputs} {curve.kernel}" for target, curve in formula.curves.items())
    description = (f"Tiny formula of tinyray search `{search}` (space {formula.space.name}, budget {budget}), "
                   f"fitted on {formula.points_note()}. Fit quality, leave-one-out RMSE: {fit} ({curves}). "
                   f"FLOPs range covered: {format_flops(formula.base_flops * formula.c_range[0])} to "
                   f"{format_flops(formula.base_flops * formula.c_range[1])}.")
    tags = {"search": search, "space": formula.space.name, "front_size": str(formula.front_size or len(formula.points)),
            "points_fitted": str(len(formula.points))}
    if formula.budget:
        tags["budget"] = str(int(formula.budget))
    tags.update({f"loo_{target}_rmse": f"{value:.4f}" for target, value in rmse.items()})
    return description, tags


def register_model(client: Any, model_name: str, run_id: str, artifact_uri: str, description: str = "",
                   tags: dict[str, str] | None = None, model_id: str | None = None) -> str:
    """Register the run's :data:`MODEL_ARTIFACT` as a new version of ``model_name`` (created with
    :data:`MODEL_DESCRIPTION` if it does not exist); return the version number.

    Args:
        client: an ``mlflow.MlflowClient``.
        model_name: the registered model's name.
        run_id: the run that holds the model artifact.
        artifact_uri: that run's artifact root.
        description, tags: the version's (see :func:`version_note`).
        model_id: the logged model the version is made from (:func:`log_model`); it is tagged with the version
            (:func:`link_version`).
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description=MODEL_DESCRIPTION)
    # The source is a folder, not models:/<model id> (which makes MLflow's sqlite registry look the logged model up
    # through the global tracking URI, which tinyray leaves alone): the logged model's own artifact folder when
    # there is one, since an `mlflow server` refuses a version whose source lies outside its model_id's artifacts
    # (MLflow 3.x), else the run's copy.
    source = f"{artifact_uri}/{MODEL_ARTIFACT}"
    if model_id is not None:
        source = client.get_logged_model(model_id).artifact_location
    version = client.create_model_version(model_name, source=source, run_id=run_id,
                                          tags=tags or None, description=description or None, model_id=model_id)
    if model_id is not None:
        link_version(client, model_id, model_name, str(version.version))
    return str(version.version)


def _artifact_location(uri: str, tracking_uri: str | None) -> str:
    """Where the files of a ``models:/`` or ``runs:/`` URI are, asked of the store at ``tracking_uri`` (and of its
    own model registry, or ``MLFLOW_REGISTRY_URI``'s); any other URI as it is.

    MLflow's ``download_artifacts`` resolves both through the process's global registry URI whatever
    ``registry_uri`` it is given (MLflow 3.17: a run's artifact that is a logged model goes through ``models:/``),
    and without ``MLFLOW_REGISTRY_URI`` that is ``./mlflow.db``: it created that file and found no model there.
    """
    import posixpath

    from mlflow import MlflowClient
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    if not uri.startswith(("models:/", "runs:/")):
        return uri
    client = MlflowClient(tracking_uri=tracking_uri,
                          registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri)
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].lstrip("/").partition("/")
        return posixpath.join(client.get_run(run_id).info.artifact_uri, path)
    found = get_model_name_and_version(client, uri)
    if len(found) == 1:  # models:/<logged model id>
        return client.get_logged_model(found[0]).artifact_location
    name, version = found
    return client.get_model_version_download_uri(name, version)


def load_from_uri(uri: str, tracking_uri: str | None = None) -> Formula:
    """Load a published formula from an MLflow model URI (``models:/tinynet-formula/1``, ``runs:/<id>/formula_model``)
    by downloading its JSON: nothing is unpickled and no code from the artifact runs."""
    import tempfile

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from tinyray.tracking import quiet_mlflow, sqlite_file

    quiet_mlflow()
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    database = sqlite_file(tracking_uri)
    if database is not None and not database.is_file():
        raise UserError(f"there is no MLflow store at {tracking_uri}: give the --tracking-uri of the search that "
                        f"published {uri} (e.g. sqlite:///$PWD/tinyray-results/mlflow.db)")
    if tracking_uri is None and uri.startswith(("models:/", "runs:/")):
        # MLflow would look in (and create) ./mlflow.db of the working folder
        raise UserError(f"{uri} needs the MLflow store it was published to: give --tracking-uri "
                        "(e.g. sqlite:///$PWD/tinyray-results/mlflow.db) or set MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            location = _artifact_location(uri, tracking_uri)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp,
                                                             tracking_uri=tracking_uri))
        except (MlflowException, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load the formula {uri} ({first[:160]}): check the URI and --tracking-uri") from None
        found = list(local.rglob("formula.json")) if local.is_dir() else [local]
        if not found:
            raise UserError(f"{uri} holds no formula.json: give the URI of a formula model published by tinyray")
        return Formula.load(found[0])
