"""The searchers: which (r, d, w) to train next, under a FLOPs budget. One module a searcher, one registry.

Every searcher is a plain Python object (a *core*, :class:`~tinyray.searchers.base.SearchCore`) that tests and
benchmarks drive without Ray: ``ask(trial_id) -> Candidate | None``, ``tell(trial_id, top1, status)``,
``records``, ``state_dict()`` and ``load_state_dict(state)``. Every candidate it hands out is a network whose
analytic FLOPs lie in the band ``floor <= FLOPs <= budget`` (:class:`~tinyray.searchers.band.FlopsBand`).

:data:`SEARCHERS` is the one registry: ``tinyray search --searcher``, :func:`tinyray.search.run_search` and
``tinyray bench search`` read it, and the CLI's help lists it. **Adding a searcher** is one module here with a
:class:`~tinyray.searchers.base.SearchCore` subclass, plus one line in :data:`SEARCHERS`. Importing this package
imports neither Ray nor pymoo nor Optuna nor BoTorch: a searcher's module is imported when it is built.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from tinyray.errors import UserError
from tinyray.searchers.band import FlopsBand, FlopsFn

if TYPE_CHECKING:
    from tinyray.searchers.base import SearchCore
    from tinyray.space import SearchSpace


@dataclass(frozen=True)
class SearcherEntry:
    """A registered searcher: where its class is (``module:Class``) and one line for ``--help``."""

    path: str
    help: str

    def load(self) -> type:
        module, _, name = self.path.partition(":")
        return getattr(importlib.import_module(module), name)


#: name -> searcher; the first is the default
SEARCHERS: dict[str, SearcherEntry] = {
    "nsga3": SearcherEntry("tinyray.searchers.nsga3:NSGA3Core", "pymoo's NSGA-III over (r, d, w) (default)"),
    "random": SearcherEntry("tinyray.searchers.random_search:RandomCore",
                            "uniform sampling under the FLOPs band (the paper's protocol)"),
    "optuna-nsga3": SearcherEntry("tinyray.searchers.optuna_nsga3:OptunaNSGA3Core",
                                  "Optuna's NSGAIIISampler, as Ray's OptunaSearch drives it"),
    "optuna-tpe": SearcherEntry("tinyray.searchers.optuna_tpe:OptunaTPECore",
                                "Optuna's multi-objective TPESampler, as Ray's OptunaSearch drives it"),
    "qnehvi": SearcherEntry("tinyray.searchers.qnehvi:QNEHVICore",
                            "BoTorch's qLogNEHVI: multi-objective Bayesian optimisation, Sobol start of --pop-size"),
}
DEFAULT_SEARCHER = next(iter(SEARCHERS))


def searcher_help() -> str:
    """The registered searchers, one ``name: help`` each, for ``--help``."""
    return "; ".join(f"{name}: {entry.help}" for name, entry in SEARCHERS.items())


def check_searcher(name: str) -> str:
    """The registry key of ``name`` (case and spaces ignored).

    Raises:
        UserError: for a name that is not registered.
    """
    key = str(name).strip().lower()
    if key not in SEARCHERS:
        raise UserError(f"unknown searcher {name!r}: use one of {list(SEARCHERS)}")
    return key


def make_searcher(
    name: str,
    space: "SearchSpace",
    budget: int,
    *,
    floor: int | None = None,
    seed: int = 0,
    pop_size: int = 16,
    ahead: int = 0,
    initial: str | None = None,
    trials: int | None = None,
    num_classes: int = 1000,
    flops_fn: FlopsFn | None = None,
    resolution_fn: Callable[[float], int] | None = None,
) -> "SearchCore":
    """Build a registered searcher.

    Args:
        name: a key of :data:`SEARCHERS`.
        space: the search space.
        budget: FLOPs budget (multiply-accumulates of one image).
        floor: smallest FLOPs of a candidate; default ``budget // 16``.
        seed: random seed.
        pop_size: population per generation (for the searchers that have one).
        ahead: generations bred ahead of the oldest one in flight (``nsga3`` only; others refuse a non-zero one).
        initial: how the first candidates are drawn (``nsga3`` only: ``"log-flops"``, its default, or
            ``"uniform"``); None for the searcher's default.
        trials: the search's trial count, for the searchers that order their last trials by it (``nsga3``).
        num_classes: classifier outputs counted in FLOPs.
        flops_fn: ``flops_fn(r, d, w) -> int``; default the analytic count.
        resolution_fn: ``resolution_fn(r) -> int``, the side a candidate trains at (:class:`FlopsBand`); default
            the space's deployment resolution.

    Raises:
        UserError: for an unknown name, an impossible band (see :class:`FlopsBand`) or bad options.
    """
    cls = SEARCHERS[check_searcher(name)].load()
    band = FlopsBand(space, budget, floor, num_classes=num_classes, flops_fn=flops_fn, resolution_fn=resolution_fn)
    offered = {"seed": seed, "pop_size": pop_size, "ahead": ahead,
               **({"initial": initial} if initial is not None else {}), **({"trials": trials} if trials else {})}
    accepted = inspect.signature(cls).parameters
    if ahead and "ahead" not in accepted:
        raise UserError(f"searcher {name!r} has no generations to breed ahead: drop --generations-ahead or use nsga3")
    if initial is not None and "initial" not in accepted:
        raise UserError(f"searcher {name!r} has no choice of initial population: use nsga3")
    return cls(band, **{key: value for key, value in offered.items() if key in accepted})


__all__ = ["DEFAULT_SEARCHER", "SEARCHERS", "FlopsBand", "SearcherEntry", "check_searcher", "make_searcher",
           "searcher_help"]
