"""The Ray Tune glue (tinyray.tune): its few uses of Ray's private API, and the class paths of experiments saved
before the glue had a package of its own."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_pure_cores_import_no_ray():
    code = ("import sys, tinyray.searchers, tinyray.searchers.nsga3, tinyray.searchers.random_search, "
            "tinyray.scheduler, tinyray.front, tinyray.formula, tinyray.search, tinyray.tracking, tinyray.progress, "
            "tinyray.bench, tinyray.publish, tinyray.report, tinyray.cli; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_ray_private_api_that_runtime_uses_is_still_there():
    """tinyray.tune.runtime wraps three private uses of Ray, each in one function: fail loudly if Ray changes them."""
    import logging

    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    from ray import tune

    from tinyray.tune import runtime

    assert hasattr(ray_constants, "ENABLE_RAY_CLUSTER")
    assert callable(services.canonicalize_bootstrap_address)
    assert runtime._dialled_address("127.0.0.1:6379").endswith(":6379")
    # the tuner keeps its run and tune configs on ``_local_tuner``, where restored callbacks are replaced
    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(num_samples=1))
    sentinel_callbacks, sentinel_scheduler = [object()], object()
    runtime.replace_restored_callbacks(tuner, sentinel_callbacks, sentinel_scheduler)
    local = tuner._local_tuner
    assert local._run_config.callbacks is sentinel_callbacks and local._tune_config.scheduler is sentinel_scheduler
    # ... and a resumed run reads them from there (what replace_restored_callbacks relies on)
    import inspect

    assert local._get_tune_run_arguments(None)["callbacks"] is sentinel_callbacks
    assert "scheduler=self._tune_config.scheduler" in inspect.getsource(type(local)._fit_resume)
    assert isinstance(logging.getLogger(runtime.RAY_TOKEN_NOTICE_LOGGER), logging.Logger)


def test_legacy_class_paths_name_todays_classes():
    code = ("import tinyray.tune.legacy as legacy; legacy.install_legacy_aliases(); "
            "from tinyray.searcher import TinySearcher, NSGA3Core, FlopsBand; "
            "from tinyray.scheduler import MOASHAScheduler; from tinyray.trial import run_trial, TrialSettings; "
            "from tinyray.tune.searcher import TinySearcher as T; from tinyray.tune.scheduler import MOASHAScheduler as M; "
            "assert TinySearcher is T and MOASHAScheduler is M; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("name", ["nsga3", "random", "optuna-nsga3", "qnehvi"])
def test_tune_searcher_pickles_as_tune_saves_it(space, name):
    import ray.cloudpickle

    from tinyray.searchers import make_searcher
    from tinyray.tune.searcher import TinySearcher

    searcher = TinySearcher(make_searcher(name, space, 100_000_000, pop_size=4, seed=0), max_epochs=3)
    suggested = searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"top1": 0.5, "training_iteration": 1})
    clone = ray.cloudpickle.loads(ray.cloudpickle.dumps(searcher))
    assert type(clone).__module__ == "tinyray.tune.searcher"
    assert clone.core.records == searcher.core.records and suggested is not None
    assert clone.core.records[0].status == "early-stopped"
