"""The class paths that experiments saved by tinyray 0.1 (before :mod:`tinyray.tune` and :mod:`tinyray.searchers`)
pickled, so that ``tinyray search --resume`` still restores them.

Ray Tune pickles its searcher, scheduler and callbacks into the experiment (``tuner.pkl``) by class path. Before
issue 14 those paths were ``tinyray.searcher.*`` (a module that no longer exists), ``tinyray.scheduler.MOASHAScheduler``
and ``tinyray.trial.*`` (Ray classes defined lazily inside Ray-free modules), and the callbacks were local classes
whose code referred to helpers of ``tinyray.search``. :func:`install_legacy_aliases`, called right before
``Tuner.restore``, makes each old path name today's object; nothing else imports the old paths.
``tests/test_resume.py::test_resume_of_an_experiment_saved_before_issue_14`` covers it.
"""

from __future__ import annotations

import sys
from types import ModuleType

import tinyray.scheduler
import tinyray.search
from tinyray.searchers.band import FlopsBand, _analytic_flops
from tinyray.searchers.base import SearchCore, TrialRecord
from tinyray.searchers.nsga3 import NSGA3Core
from tinyray.searchers.random_search import RandomCore
from tinyray.tune import trainable
from tinyray.tune.callbacks import DiskFull, is_disk_full
from tinyray.tune.scheduler import MOASHAScheduler
from tinyray.tune.searcher import TinySearcher

#: old module -> {old name: today's object}; a module that still exists gets the names as attributes
LEGACY_NAMES: dict[str, dict[str, object]] = {
    "tinyray.searcher": {
        "TinySearcher": TinySearcher, "SearchCore": SearchCore, "NSGA3Core": NSGA3Core, "RandomCore": RandomCore,
        "FlopsBand": FlopsBand, "TrialRecord": TrialRecord, "_analytic_flops": _analytic_flops,
    },
    "tinyray.trial": {name: getattr(trainable, name) for name in ("run_trial", "TrialSettings", "_space", "_data")},
    "tinyray.scheduler": {"MOASHAScheduler": MOASHAScheduler},
    "tinyray.search": {"_DiskFull": DiskFull, "_is_disk_full": is_disk_full},
}


def install_legacy_aliases() -> None:
    """Make every path of :data:`LEGACY_NAMES` importable (idempotent)."""
    for module_name, names in LEGACY_NAMES.items():
        module = sys.modules.get(module_name)
        if module is None:
            module = ModuleType(module_name, "alias of today's classes for experiments saved by tinyray 0.1")
            sys.modules[module_name] = module
            setattr(tinyray, module_name.rpartition(".")[2], module)
        for name, value in names.items():
            if not hasattr(module, name):
                setattr(module, name, value)

