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


def _checkpoint(folder, index: int, state: dict) -> None:
    import json

    path = folder / f"checkpoint_{index:06d}"
    path.mkdir(parents=True)
    (path / "state.json").write_text(json.dumps(state))


def test_a_restarted_trial_takes_back_the_epochs_tunes_snapshot_missed(tmp_path, monkeypatch):
    """Tune snapshots the experiment every other checkpoint of a trial (KEEP_CHECKPOINTS = 2), so the checkpoint it
    restores a trial from may be one behind the trial's newest: the trial continues from its own newest and reports
    the missed epoch again (with a checkpoint), from the metrics that checkpoint keeps; it trains nothing twice."""
    from tinyray.tune import runtime, trainable

    assert runtime.KEEP_CHECKPOINTS == 2
    reports = [{"top1": 0.1, "epoch": 1}, {"top1": 0.2, "epoch": 2}, {"top1": 0.3, "epoch": 3}]
    folder = tmp_path / "trial_abc"
    _checkpoint(folder, 0, {"epoch": 1, "reports": reports[:1]})
    _checkpoint(folder, 1, {"epoch": 2, "reports": reports[:2]})
    (folder / "checkpoint_000002").mkdir()  # Tune's next one, half written when the driver died
    sent = []
    monkeypatch.setattr(trainable, "_report", lambda metrics, state, trainer: sent.append((metrics, state)))

    own = trainable._newest_own_state(str(tmp_path), "abc")
    assert own == {"epoch": 2, "reports": reports[:2]}
    restored = {"epoch": 1, "reports": reports[:1]}
    assert trainable._catch_up(restored, own, "replay") == own
    assert sent == [(reports[1], own)]  # epoch 2 again, with the checkpoint to continue from

    sent.clear()  # from scratch (Tune had no checkpoint of it): both epochs again, only the last with a checkpoint
    assert trainable._catch_up(None, own, "replay") == own and sent == [(reports[0], None), (reports[1], own)]
    sent.clear()  # Tune's is the newest, or the own one cannot say what it reported: Tune's, nothing sent
    assert trainable._catch_up(own, own, "replay") == own and sent == []
    assert trainable._catch_up(restored, {"epoch": 2}, "replay") == restored and sent == []
    assert trainable._newest_own_state(str(tmp_path), "other") is None and trainable._newest_own_state(None, "abc") is None


class _Trial:
    """What Tune's trial loggers and tinyray's tracking callback read from a trial."""

    def __init__(self, trial_id: str, local_path) -> None:
        self.trial_id, self.local_path, self.config = trial_id, str(local_path), {"r": 0.5, "d": 0.5, "w": 0.5}
        self.evaluated_params, self.checkpoint = self.config, None

    def init_local_path(self) -> None:
        pass


def test_trial_files_and_mlflow_take_each_epoch_once(tmp_path):
    """A resumed trial's reports of epochs already written (result.json, progress.csv, its MLflow run) are
    dropped, whichever driver wrote them; new epochs are written."""
    import json

    from mlflow import MlflowClient

    from tinyray.tracking import Tracker
    from tinyray.tune.callbacks import TrackingCallback
    from tinyray.tune.runtime import last_logged_epoch, trial_loggers

    folder = tmp_path / "trial_t1"
    folder.mkdir()
    (tmp_path / "cut.json").write_text('{"training_iteration": 1}\n{"training_iteration": 2}\n{"training_it')
    assert last_logged_epoch(tmp_path / "cut.json") == 2 and last_logged_epoch(tmp_path / "none.json") == 0
    (folder / "result.json").write_text('{"training_iteration": 1}\n{"training_iteration": 2}\n')
    trial = _Trial("t1", folder)
    loggers = trial_loggers()
    for epoch in (2, 3, 3):
        for logger in loggers:
            logger.on_trial_result(epoch, [trial], trial, {"training_iteration": epoch, "top1": 0.1 * epoch})
    for logger in loggers:
        logger.on_trial_complete(3, [trial], trial)
    lines = (folder / "result.json").read_text().splitlines()
    assert [json.loads(line)["training_iteration"] for line in lines] == [1, 2, 3]
    assert (folder / "progress.csv").read_text().count("\n") == 2  # its header and epoch 3

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker(uri, "once", journal=tmp_path / "tracking.json")
    parent = first.start_search("once", {"budget": 1})
    callback = TrackingCallback(first, parent, 3, lambda config: dict(config))
    for epoch in (1, 2):
        callback.on_trial_result(epoch, [trial], trial, {"training_iteration": epoch, "top1": 0.1 * epoch})
    state = callback.get_state()
    state["steps"] = {"t1": 1}  # a snapshot taken before epoch 2 was logged

    again = TrackingCallback(Tracker(uri, "once", journal=tmp_path / "tracking.json"), parent, 3,
                             lambda config: dict(config))
    again.set_state(state)
    for epoch in (2, 3):
        again.on_trial_result(epoch, [trial], trial, {"training_iteration": epoch, "top1": 0.1 * epoch})
    history = MlflowClient(tracking_uri=uri).get_metric_history(callback.runs["t1"], "top1")
    assert sorted(metric.step for metric in history) == [1, 2, 3]


def test_trial_files_are_written_in_the_results_folder_not_tunes_staging_copy(tmp_path):
    """With local storage a trial's result.json/progress.csv/params.json go straight into its folder of the results
    folder: Tune would copy its staging folder, all trials' files, into it at every snapshot (O(trials) each)."""
    from ray.train._internal.storage import StorageContext

    from tinyray.tune.runtime import trial_files_folder, trial_loggers

    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="trial_t1")
    trial = _Trial("t1", tmp_path / "staging" / "trial_t1")
    trial.storage = storage
    assert trial_files_folder(trial) == storage.trial_fs_path == str(tmp_path / "exp" / "trial_t1")
    for logger in trial_loggers():
        logger.on_trial_result(1, [trial], trial, {"training_iteration": 1, "top1": 0.1})
        logger.on_trial_complete(1, [trial], trial)
    assert sorted(p.name for p in (tmp_path / "exp" / "trial_t1").iterdir()) == [
        "params.json", "params.pkl", "progress.csv", "result.json"]
    assert not (tmp_path / "staging").exists()
    del trial.storage  # no storage known (remote storage keeps Tune's staging copy): the trial's own folder
    assert trial_files_folder(trial) == trial.local_path


def test_a_trials_last_epoch_goes_to_mlflow_with_the_end_of_its_run(tmp_path):
    """The result Tune marks done (the scheduler stopped the trial, or it reached full fidelity) is logged with the
    run's end tags and ``epochs`` in one call; earlier epochs each in their own; a snapshot taken in between
    (``get_state``) does not count the held epoch as logged."""
    from mlflow import MlflowClient

    from tinyray.tracking import Tracker
    from tinyray.tune.callbacks import TrackingCallback

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "final", journal=tmp_path / "tracking.json")
    parent = tracker.start_search("final", {"budget": 1})
    callback = TrackingCallback(tracker, parent, 3, lambda config: dict(config))
    trial = _Trial("t1", tmp_path / "trial_t1")
    trial.last_result = {"training_iteration": 2}
    calls = []
    log_batch = tracker.client.log_batch
    tracker.client.log_batch = lambda *args, **kwargs: (calls.append(kwargs), log_batch(*args, **kwargs))[1]
    callback.on_trial_start(0, [trial], trial)
    calls.clear()
    callback.on_trial_result(1, [trial], trial, {"training_iteration": 1, "top1": 0.1})
    callback.on_trial_result(2, [trial], trial, {"training_iteration": 2, "top1": 0.2, "done": True})
    assert len(calls) == 1 and callback.get_state()["steps"] == {"t1": 1}
    callback.on_trial_complete(2, [trial], trial)
    assert len(calls) == 2 and {m.key for m in calls[1]["metrics"]} == {"top1", "epochs"}
    assert {t.key: t.value for t in calls[1]["tags"]}["status"] == "early-stopped"
    client = MlflowClient(tracking_uri=uri)
    assert [(m.step, m.value) for m in client.get_metric_history(callback.runs["t1"], "top1")] == [(1, 0.1), (2, 0.2)]
    assert client.get_run(callback.runs["t1"]).info.status == "FINISHED" and callback.steps == {"t1": 2}
