"""Scaling the base network to a FLOPs budget: exact-budget solvers, single-dimension shrinks, compound scaling.

Every network that is meant to cost a given budget (the tiny formula's answer, the contenders of
``tinyray compare``, the shrinks of the proxy-fidelity panel) is placed by the functions here, on the exact
analytic count of :func:`tinyray.cost.analytic_cost`. FLOPs move in steps, not smoothly: channels are rounded to
multiples of 8, depths to whole blocks, the input side to whole pixels (and an odd side rounds up at every stride:
on EfficientNet-B0 at 1000 classes 96 px cost 72.4M FLOPs, 98 px 101.6M). So a rule such as "shrink d only"
rarely lands within 1% of a budget by itself; :func:`solve_network` closes the rest with the finest knob, width,
and the nearest input sides.

Compound scaling (Tan and Le, ICML 2019, eq. 3): depth ``alpha^phi``, width ``beta^phi``, resolution
``gamma^phi``, with the coefficients the base's family defines (``Network.COMPOUND``; EfficientNet's are
``alpha = 1.2``, ``beta = 1.1``, ``gamma = 1.15``, chosen so that ``alpha beta^2 gamma^2 ~ 2``: each step of phi
doubles FLOPs). TinyNets (Han et al., NeurIPS 2020, Table 1) run it backwards, phi < 0: EfficientNet-B-1 (phi = -1)
at about 200M FLOPs and B-2 (phi = -2) at about 100M. A family without coefficients has no compound rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinyray.space import SearchSpace

#: Widths the solver may return; outside the search space's bounds an answer is flagged by its caller.
WIDTH_RANGE = (0.05, 3.0)
#: How close to its budget a network placed for it must come (fraction of the budget, from below).
TOLERANCE = 0.01


def solve_width(space: SearchSpace, r: float, d: float, budget: float, num_classes: int,
                widths: tuple[float, float] = WIDTH_RANGE) -> tuple[float, int, int]:
    """The widest ``w`` in ``widths`` whose exact FLOPs at (r, d) do not exceed ``budget``.

    FLOPs grow monotonically (in steps: channels are rounded to multiples of 8) with ``w``, so a bisection over
    ``w`` in ``widths`` (default :data:`WIDTH_RANGE`) finds it.

    Returns:
        ``(w, flops, params)``; if even the narrowest width exceeds the budget, the narrowest.
    """
    from tinyray.cost import analytic_cost

    low, high = widths
    if analytic_cost(space, r, d, high, num_classes).flops <= budget:
        low = high
    elif analytic_cost(space, r, d, low, num_classes).flops <= budget:
        for _ in range(40):  # 3 / 2^40: far below a channel-rounding step
            middle = (low + high) / 2
            if analytic_cost(space, r, d, middle, num_classes).flops <= budget:
                low = middle
            else:
                high = middle
    w = round(low, 4)
    while w > widths[0] and analytic_cost(space, r, d, w, num_classes).flops > budget:
        w = round(w - 1e-4, 4)  # rounding to 4 decimals may have stepped over the edge
    cost = analytic_cost(space, r, d, w, num_classes)
    return w, cost.flops, cost.params


def solve_network(space: SearchSpace, r: float, d: float, budget: float, num_classes: int,
                  tolerance: float = TOLERANCE, widths: tuple[float, float] = WIDTH_RANGE,
                  r_range: tuple[float, float] | None = None) -> tuple[float, float, int, int]:
    """Meet ``budget`` within ``tolerance``: solve the width (in ``widths``) at ``r``; if channel rounding leaves a
    larger gap (a stage's channels jump by 8 at once: at w = 1/0.9 the first stage goes from 16 to 24 channels, +17%
    FLOPs), try the nearest other input sides, up to +-6% of the side (+-12% of the FLOPs), and take the first that
    meets it, or else the closest fit under the budget. The other sides stay within ``r_range`` if given (the
    formula passes its r curve's 95% band, within the cube when the curve's r lies inside it).

    Returns:
        ``(r, w, flops, params)``.
    """
    w, flops, params = solve_width(space, r, d, budget, num_classes, widths)
    best = (flops, r, w, params)
    side = space.resolution(r)
    reach = max(2, round(0.06 * side))
    low, high = max(8, side - reach), side + reach
    if r_range is not None:
        low = max(low, math.ceil(space.base_resolution * r_range[0] - 1e-6))
        high = min(high, space.resolution(r_range[1]))
    for pixels in sorted(range(low, high + 1), key=lambda px: (abs(px - side), px)):
        if budget - best[0] <= tolerance * budget:
            break
        if pixels == side:
            continue
        r_try = pixels / space.base_resolution
        w_try, flops_try, params_try = solve_width(space, r_try, d, budget, num_classes, widths)
        if flops_try <= budget and flops_try > best[0]:
            best = (flops_try, r_try, w_try, params_try)
    flops, r, w, params = best
    return r, w, flops, params


def width_inside_cube(space: SearchSpace, r: float, d: float, budget: float, num_classes: int,
                      r_range: tuple[float, float], tolerance: float = TOLERANCE) -> tuple[float, float, int, int] | None:
    """The network at depth ``d`` nearest to side ``floor(224 r)`` whose width lies in the cube and meets ``budget``.

    Where the curves' ``r`` and ``d`` leave a budget that only a width outside the space's bounds meets (``w > 1``:
    the curves' means lie below the resolution or depth of the front's networks at that budget), the input side
    moves away from ``r``, one pixel at a time within ``r_range`` (the formula passes its r curve's 95% band within
    the cube), the way that brings ``w`` back: up when ``w`` is too wide, down when too narrow. The first side whose
    solved width (:func:`solve_width` within the bounds) lies in the cube and comes within ``tolerance`` of the
    budget wins.

    Returns:
        ``(r, w, flops, params)``, or None when no side in ``r_range`` does it (the answer then stays outside).
    """
    bounds = space.bounds()["w"]
    w, _, _ = solve_width(space, r, d, budget, num_classes)
    if bounds.contains(w):
        return None
    side = space.resolution(r)
    low = max(8, math.ceil(space.base_resolution * r_range[0] - 1e-6))
    high = space.resolution(r_range[1])
    sides = range(side + 1, high + 1) if w > bounds.high else range(side - 1, low - 1, -1)
    for pixels in sides:
        r_try = pixels / space.base_resolution
        w_try, flops, params = solve_width(space, r_try, d, budget, num_classes, (bounds.low, bounds.high))
        if budget - flops <= tolerance * budget and flops <= budget and bounds.contains(w_try):
            return r_try, w_try, flops, params
    return None


def shrink(space: SearchSpace, factor: str, flops: float, num_classes: int, *, at_least: bool = False) -> float | None:
    """Shrink the base network (1, 1, 1) along ``factor`` alone, in steps of 0.001 within the space's bounds.

    Args:
        space: the search space.
        factor: ``r``, ``d`` or ``w``.
        flops: the FLOPs level.
        num_classes: classifier outputs the FLOPs count.
        at_least: False: the largest value whose FLOPs are at most ``flops`` (the proxy panel's shrinks); True: the
            smallest value whose FLOPs are at least ``flops`` (the step just above a budget, for
            :func:`solve_network` to trim by width), provided the lowest bound reaches ``flops`` at all.

    Returns:
        The value, or None if no value of the bounds qualifies (or, with ``at_least``, if even the lowest bound
        costs more than ``flops``).
    """
    from tinyray.cost import analytic_cost

    low, high = space.bounds()[factor].low, space.bounds()[factor].high
    point = {"r": 1.0, "d": 1.0, "w": 1.0}

    def cost(value: float) -> int:
        return analytic_cost(space, **{**point, factor: value}, num_classes=num_classes).flops

    # FLOPs are not monotone in r (odd input sides round up at every stride), so scan rather than bisect.
    if at_least and cost(low) > flops:
        return None
    steps = range(int(round((high - low) * 1000)) + 1)
    for step in (steps if at_least else reversed(steps)):
        value = round(low + step / 1000, 3)
        if (cost(value) >= flops) if at_least else (cost(value) <= flops):
            return value
    return None


@dataclass(frozen=True)
class Compound:
    """Compound scaling at one phi.

    Attributes:
        phi: the compound exponent (negative: smaller than the base network).
        coefficients: ``{"d": alpha, "w": beta, "r": gamma}``, the base family's ``Network.COMPOUND``.
        r, d, w: ``gamma^phi``, ``alpha^phi``, ``beta^phi``.
    """

    phi: float
    coefficients: dict[str, float]

    @property
    def r(self) -> float:
        return self.coefficients["r"] ** self.phi

    @property
    def d(self) -> float:
        return self.coefficients["d"] ** self.phi

    @property
    def w(self) -> float:
        return self.coefficients["w"] ** self.phi


def solve_phi(space: SearchSpace, budget: float, num_classes: int, low: float = -12.0) -> Compound:
    """The largest phi in ``[low, 0]`` whose compound-scaled network, by the coefficients of the space's family,
    costs at most ``budget``.

    The FLOPs of ``(gamma^phi, alpha^phi, beta^phi)`` rise with phi in steps (and dip where the input side turns
    odd), so the bisection brackets a crossing and the 0.001-grid scan below it finds the largest phi under the
    budget near that crossing.

    Raises:
        ValueError: if the space's family defines no compound coefficients, the budget is at least the base
            network's FLOPs (phi would not be negative) or below the FLOPs at ``low``.
    """
    from tinyray.cost import analytic_cost

    coefficients = space.network.COMPOUND
    if coefficients is None:
        raise ValueError(f"the {space.family} family of {space.name} defines no compound scaling coefficients "
                         f"(Network.COMPOUND), so it has no compound-scaled network")

    def flops(phi: float) -> int:
        point = Compound(phi, coefficients)
        return analytic_cost(space, point.r, point.d, point.w, num_classes).flops

    if flops(0.0) <= budget:
        raise ValueError(f"budget {budget:g} is not below the base network's {flops(0.0)} FLOPs")
    if flops(low) > budget:
        raise ValueError(f"budget {budget:g} is below the FLOPs of phi = {low}")
    below, above = low, 0.0
    while above - below > 1e-3:
        middle = (below + above) / 2
        if flops(middle) <= budget:
            below = middle
        else:
            above = middle
    phi = math.floor(above * 1000) / 1000
    for step in range(200):  # within 0.2 of phi: the largest grid value under the budget near the crossing
        if flops(phi - step / 1000) <= budget:
            return Compound(round(phi - step / 1000, 3), coefficients)
    return Compound(round(below, 4), coefficients)
