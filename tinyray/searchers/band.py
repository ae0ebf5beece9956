"""The feasible set of a search: the points of the (r, d, w) cube whose network has ``floor <= FLOPs <= budget``.

Every searcher draws, repairs and de-duplicates its candidates through :class:`FlopsBand`, so that no searcher
hands out a network over the budget or the same network twice.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any, Callable

import numpy as np

from tinyray.cost import analytic_cost, format_flops
from tinyray.errors import UserError
from tinyray.space import SearchSpace

logger = logging.getLogger(__name__)

#: ``flops_fn(r, d, w)``: multiply-accumulates of one image of the network at (r, d, w).
FlopsFn = Callable[[float, float, float], int]

# Uniform draws tried before sampling falls back to projecting draws into the band (a band that is a tiny
# corner of the cube), and draws tried in all before giving up.
_REJECTION_ATTEMPTS = 500
_SAMPLE_ATTEMPTS = 2000
#: Repair stops once FLOPs are within this fraction of the band edge it moved to (or after the steps); candidates
#: scaled onto a FLOPs level or the budget aim for the same window. No network sits exactly at a budget.
REPAIR_TOLERANCE = 0.01
_BISECTION_STEPS = 30
_R_ONLY, _W_ONLY = np.array([1, 0, 0]), np.array([0, 0, 1])



def _analytic_flops(space: SearchSpace, num_classes: int, r: float, d: float, w: float) -> int:
    return analytic_cost(space, r, d, w, num_classes).flops


class FlopsBand:
    """The feasible set of the search: points of the cube whose network has ``floor <= FLOPs <= budget``.

    FLOPs grow monotonically with each of r, d and w, so the smallest network of the cube is at the low
    corner and the largest at the high corner; the band is validated against both at construction.

    Args:
        space: the search space (bounds of r, d, w).
        budget: FLOPs budget (multiply-accumulates of one image), between the smallest and the largest network
            of the space (a budget above the largest would not constrain the search, so it is refused).
        floor: smallest FLOPs of a suggested network; default ``budget // 16``, so that the front spans the
            range a formula fit needs. 0 disables it.
        num_classes: classifier outputs counted by the default ``flops_fn``.
        flops_fn: ``flops_fn(r, d, w) -> int`` multiply-accumulates; default the analytic count of
            :func:`tinyray.cost.analytic_cost`. It must depend on the built network only (two points that
            build the same network must cost the same).
        resolution_fn: ``resolution_fn(r) -> int``, the input side at which a candidate is trained and measured
            (:meth:`tinyray.data.Data.train_resolution_fn`); default the space's deployment resolution. It decides
            :meth:`network_key`: on the built-in data a candidate trains at about 64 r px, so candidates of 149 and
            150 px (the same FLOPs: the stem's stride halves both to 75) are one measured network, and a search
            that tried both spent a trial on a duplicate and listed it twice on its front.

    Raises:
        UserError: if the budget is below the smallest or above the largest network, or the floor is not below
            the budget or is above the largest network.
    """

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        floor: int | None = None,
        *,
        num_classes: int = 1000,
        flops_fn: FlopsFn | None = None,
        resolution_fn: Callable[[float], int] | None = None,
    ) -> None:
        self.space = space
        self.num_classes = int(num_classes)
        self.flops_fn: FlopsFn = flops_fn or partial(_analytic_flops, space, self.num_classes)
        self.resolution_fn: Callable[[float], int] = resolution_fn or space.resolution
        self.low = np.array([space.r.low, space.d.low, space.w.low], dtype=float)
        self.high = np.array([space.r.high, space.d.high, space.w.high], dtype=float)
        self._flops_cache: dict[tuple[float, float, float], int] = {}
        self._key_cache: dict[tuple[float, float, float], tuple] = {}

        where = space.source or "the space file"
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 1:
            raise UserError(f"budget {budget!r} is not a positive number of FLOPs: give e.g. --budget 200M")
        self.requested_budget = int(budget)
        self.min_flops = int(self.flops_fn(*self.low))
        self.max_flops = int(self.flops_fn(*self.high))
        smallest = f"{format_flops(self.min_flops)} at {_point_text(self.low)}"
        largest = f"{format_flops(self.max_flops)} at {_point_text(self.high)}"
        if self.requested_budget < self.min_flops:
            raise UserError(
                f"budget {format_flops(self.requested_budget)} is below the smallest network in the space"
                f" ({smallest}): raise --budget or lower the bounds in {where}"
            )
        if self.requested_budget > self.max_flops:
            raise UserError(
                f"budget {format_flops(self.requested_budget)} is above the largest network in the space ({largest}),"
                f" so it would not constrain the search: lower --budget to {format_flops(self.max_flops)} or less,"
                f" or raise the upper bounds in {where}"
            )
        self.budget = self.requested_budget
        if floor is None:
            floor = self.budget // 16
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not floor >= 0:
            raise UserError(f"FLOPs floor {floor!r} is not a non-negative number: give e.g. --floor 20M, or 0")
        self.floor = int(floor)
        if self.floor >= self.requested_budget:  # an empty band, or one of a single FLOPs count
            where_floor = "above" if self.floor > self.requested_budget else "equal to"
            raise UserError(
                f"FLOPs floor {format_flops(self.floor)} is {where_floor} the budget "
                f"{format_flops(self.requested_budget)}: lower --floor (default budget/16) or raise --budget"
            )
        if self.floor > self.max_flops:
            raise UserError(
                f"FLOPs floor {format_flops(self.floor)} is above the largest network in the space ({largest}):"
                f" lower --floor or raise the upper bounds in {where}"
            )

    def __getstate__(self) -> dict[str, Any]:
        # The memos refill on demand: a pickled band (inside Tune's experiment state) stays small.
        return {**self.__dict__, "_flops_cache": {}, "_key_cache": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a band pickled before resolution_fn existed (a search started by tinyray before 2026-12-07, resumed
        # now) keyed networks by the deployment resolution: it goes on doing so
        self.__dict__.update(state)
        self.__dict__.setdefault("resolution_fn", self.space.resolution)

    def describe(self) -> str:
        """The band in words, e.g. ``6.25M..100M FLOPs``."""
        return f"{format_flops(self.floor)}..{format_flops(self.budget)} FLOPs"

    def flops(self, x: np.ndarray | tuple[float, float, float]) -> int:
        """FLOPs of the network at ``x = (r, d, w)`` (memoised)."""
        key = (float(x[0]), float(x[1]), float(x[2]))
        flops = self._flops_cache.get(key)
        if flops is None:
            if len(self._flops_cache) > 200_000:
                self._flops_cache.clear()
            flops = self._flops_cache[key] = int(self.flops_fn(*key))
        return flops

    def contains(self, flops: int) -> bool:
        return self.floor <= flops <= self.budget

    def network_key(self, x: np.ndarray | tuple[float, float, float]) -> tuple:
        """What makes two points the same measured network: the resolution it trains at (``resolution_fn``), and
        what the family says of (d, w) (blocks per stage and rounded channels,
        :meth:`tinyray.families.base.Network.key`)."""
        key = (float(x[0]), float(x[1]), float(x[2]))
        network = self._key_cache.get(key)
        if network is None:
            r, d, w = key
            network = (self.resolution_fn(r), *self.space.network.key(d, w))
            if len(self._key_cache) > 200_000:
                self._key_cache.clear()
            self._key_cache[key] = network
        return network

    def sample(self, rng: np.random.Generator, avoid: set | frozenset = frozenset()) -> np.ndarray:
        """A point drawn uniformly from the cube under the band (rejection sampling).

        Networks whose :meth:`network_key` is in ``avoid`` are rejected too, unless nothing else is found.
        If the band is so small a corner of the cube that rejection keeps failing, draws are projected into
        the band by :meth:`project` instead.

        Args:
            rng: the random generator to draw from.
            avoid: network keys already handed out.

        Returns:
            ``(3,)`` array ``(r, d, w)``.

        Raises:
            UserError: if no network in the band could be found.
        """
        already_seen = None
        for attempt in range(_SAMPLE_ATTEMPTS):
            x = rng.uniform(self.low, self.high)
            if attempt < _REJECTION_ATTEMPTS:
                if not self.contains(self.flops(x)):
                    continue
            else:
                x = self.project(x)
                if x is None:
                    continue
            if self.network_key(x) in avoid:
                already_seen = x
                continue
            return x
        if already_seen is not None:
            logger.debug("every network drawn from the band %s was already tried: repeating one", self.describe())
            return already_seen
        raise UserError(
            f"no network of the space has FLOPs in {self.describe()}: widen the band (lower --floor or raise"
            " --budget)"
        )

    def project(self, x: np.ndarray) -> np.ndarray | None:
        """Move ``x`` into the band by scaling r, d and w by one common factor.

        Each multiplier is ``clip(x * s, low, high)``; FLOPs are monotone in ``s``, so bisection on ``log s``
        finds the factor closest to 1 whose network is inside the band (within ``REPAIR_TOLERANCE`` of the
        band edge it crosses). The ratios r : d : w the search explores are kept wherever no bound clips them.

        Args:
            x: ``(3,)`` array ``(r, d, w)``, possibly outside the bounds.

        Returns:
            The repaired ``(3,)`` array, or ``None`` if the FLOPs step over the band along this ray.
        """
        x = np.clip(np.asarray(x, dtype=float), self.low, self.high)
        flops = self.flops(x)
        if self.contains(flops):
            return x
        if flops > self.budget:
            return self._scale_into(x, max(self.floor, (1.0 - REPAIR_TOLERANCE) * self.budget), self.budget)
        return self._scale_into(x, self.floor, min(self.budget, (1.0 + REPAIR_TOLERANCE) * self.floor))

    def at_level(self, x: np.ndarray, target: float) -> np.ndarray | None:
        """``x`` scaled by one common factor (as :meth:`project` scales) so that its network has about ``target``
        FLOPs: within ``REPAIR_TOLERANCE`` of it, and inside the band.

        Returns:
            The scaled ``(3,)`` array, or ``None`` if the FLOPs step over that window along this ray: whole
            pixels, whole blocks and channels in multiples of 8 make FLOPs a step function of the scale, and
            only 20-50% of uniformly drawn rays reach a given level of a 100M or 200M band (measured).
        """
        x = np.clip(np.asarray(x, dtype=float), self.low, self.high)
        high = min(float(self.budget), (1.0 + REPAIR_TOLERANCE) * target)
        low = min(max(float(self.floor), (1.0 - REPAIR_TOLERANCE) * target), high)
        scaled = self._scale_into(x, low, high)
        return scaled if scaled is not None and low <= self.flops(scaled) <= high else None

    def grow_to_budget(self, x: np.ndarray) -> np.ndarray | None:
        """``x`` grown to about the budget: scaled up by one common factor to within ``REPAIR_TOLERANCE`` below
        it, or, where a whole block or channel step jumps over that window along the ray, to the network just
        below the step, whose resolution alone and then width alone are raised towards the window. ``None`` if
        ``x`` is over the budget or cannot grow.

        Whole pixels (odd sides add a row at every stride), whole blocks and channels in multiples of 8 make
        FLOPs a step function. Measured on uniform draws of the cube under the budget (EfficientNet-B0, 40
        classes; ``tests/test_searcher.py`` checks the 200M rates): at 200M the common factor alone ends within 1%
        / 3% of the budget for 27% / 73% of 375 draws, with the two top-ups for 38% / 95%; at 100M (286 draws)
        22% / 51% and 38% / 76%.
        """
        x = np.clip(np.asarray(x, dtype=float), self.low, self.high)
        if self.flops(x) > self.budget:
            return None
        window = (max(float(self.floor), (1.0 - REPAIR_TOLERANCE) * self.budget), float(self.budget))
        grown = self._scale_into(x, *window, keep_below=True)
        for along in (_R_ONLY, _W_ONLY):  # a step jumped the window: top up with pixels, then channels
            if grown is None or self.flops(grown) >= window[0]:
                break
            grown = self._scale_into(grown, *window, keep_below=True, along=along)
        return grown if grown is not None and self.flops(grown) > self.flops(x) else None

    def _scale_into(self, x: np.ndarray, low: float, high: float, *, keep_below: bool = False,
                    along: np.ndarray | None = None) -> np.ndarray | None:
        """Bisection on ``log s`` for the factor ``s`` closest to 1 whose network ``clip(x * s)`` has FLOPs in
        ``[low, high]`` (FLOPs are monotone in ``s``). If the FLOPs step over the window, the network just past
        it on the way from ``x`` (below ``low`` when shrinking, above ``high`` when growing; below ``low`` always
        with ``keep_below``) if it is in the band, else ``None``. ``along`` (0/1 per axis, default all) says which of
        r, d, w the factor scales."""
        flops = self.flops(x)
        if low <= flops <= high:
            return x

        axes = np.ones(3, dtype=bool) if along is None else np.asarray(along, dtype=bool)

        def at(scale: float) -> np.ndarray:
            return np.clip(np.where(axes, x * scale, x), self.low, self.high)

        shrinking = flops > high
        if shrinking:  # at(lo) is the low corner (min FLOPs) of the axes scaled: shrink towards it
            lo, hi = float(np.min((self.low / x)[axes])), 1.0
        else:  # at(hi) is their high corner (max FLOPs): grow towards it
            lo, hi = 1.0, float(np.max((self.high / x)[axes]))
        if hi <= lo:
            return x if self.contains(flops) else None
        for _ in range(_BISECTION_STEPS):
            if hi / lo < 1.0 + 1e-9:
                break
            mid = math.sqrt(lo * hi)
            flops = self.flops(at(mid))
            if low <= flops <= high:
                return at(mid)
            if flops > high:
                hi = mid
            else:
                lo = mid
        nearest = at(lo if shrinking or keep_below else hi)
        return nearest if self.contains(self.flops(nearest)) else None

    def sample_levels(self, rng: np.random.Generator, n: int, avoid: set | frozenset = frozenset()) -> np.ndarray:
        """``n`` points spread evenly over log FLOPs: the ``k``-th has about ``floor * (budget / floor)^(k / (n-1))``
        FLOPs (the floor and the budget themselves included, within ``REPAIR_TOLERANCE``), in a direction drawn
        uniformly from the cube and reached by :meth:`at_level` (up to 500 directions a level).

        Why (the default of the NSGA-III searcher's initial population): the front and the formula fitted on it
        need networks from the floor up to the budget, and uniform draws of the cube seldom land near the budget
        (measured for 200M on EfficientNet-B0 with 40 classes: 2.6% of uniform draws in the band lie within 10% of
        it, 0.26% within 1%). A level whose draws keep failing (a band that is a sliver of the cube) falls back to
        :meth:`sample`.

        Returns:
            ``(n, 3)`` array of ``(r, d, w)`` rows, every network new to ``avoid`` and to the others if possible.
        """
        bottom = max(float(self.floor), float(self.min_flops), 1.0)
        targets = np.geomspace(bottom, float(self.budget), n) if n > 1 else np.array([float(self.budget)])
        taken = set(avoid)
        rows = []
        for target in targets:
            for _ in range(_REJECTION_ATTEMPTS):
                x = self.at_level(rng.uniform(self.low, self.high), target)
                if x is not None and self.network_key(x) not in taken:
                    break
            else:
                x = self.sample(rng, avoid=taken)
            taken.add(self.network_key(x))
            rows.append(x)
        return np.array(rows)

    def config(self) -> dict[str, Any]:
        """The band's options, stored with a searcher's state to check a resume uses the same ones."""
        return {
            "space": self.space.name,
            "budget": self.requested_budget,
            "floor": self.floor,
            "num_classes": self.num_classes,
        }


def _point_text(x: np.ndarray) -> str:
    return f"r={x[0]:g} d={x[1]:g} w={x[2]:g}"
