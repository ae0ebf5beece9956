"""Ray itself: start or join it, run or restore the Tune experiment, and read its results back.

Ray's public API does not cover three things tinyray needs; each is one function here, with a comment saying why,
and ``tests/test_tune.py`` fails loudly when Ray changes it:

* :func:`_keep_local_ray_on_loopback`: a local Ray binds a reachable address unless Ray's (private) switch
  ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` is off; it is read at import, so setting the environment
  variable after ``import ray`` is not enough;
* :func:`_dialled_address`: the address Ray really dials for ``host:port`` (``ray._private.services``), to refuse a
  loopback-only cluster in one line instead of a hang;
* :func:`replace_restored_callbacks`: ``Tuner.restore`` takes no callbacks or scheduler, and the restored ones would
  log into the previous driver's tracker; they are replaced on the tuner's private ``_local_tuner``.

Ray's token-authentication notice is silenced through its logger's name (:data:`RAY_TOKEN_NOTICE_LOGGER`); if the
logger moves, the notice merely comes back.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import cloudpickle, tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.result import EXPR_PARAM_FILE, EXPR_PARAM_PICKLE_FILE, EXPR_PROGRESS_FILE, EXPR_RESULT_FILE
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.utils.util import SafeFallbackEncoder

from tinyray.errors import UserError
from tinyray.files import TRIAL_FOLDER_PREFIX
from tinyray.progress import Progress
from tinyray.replay import REPLAY
from tinyray.status import trial_status
from tinyray.tracking import described, error_line, trial_start_tags
from tinyray.tune.callbacks import DiskFull, MonitorCallback, QuietWhenFull, StopWhenDiskFull, TrackingCallback
from tinyray.tune.legacy import install_legacy_aliases
from tinyray.tune.scheduler import MOASHAScheduler
from tinyray.tune.searcher import TinySearcher
from tinyray.tune.trainable import TrialSettings, run_trial, trial_folder

if TYPE_CHECKING:
    import pandas as pd

    from tinyray.search import SearchConfig

#: Tune keeps a trial's two newest checkpoints and snapshots the experiment (O(trials) each time) when a trial has
#: made this many since the last snapshot. With 1 (until issue 20's fix), every epoch of every trial forced a
#: snapshot, O(trials^2) a search; with 2, a snapshot may lag a trial by one checkpoint, which a restarted trial
#: takes back from its own folder (:func:`tinyray.tune.trainable.run_trial`).
KEEP_CHECKPOINTS = 2
#: Ray >= 2.59 announces its (default) token authentication on every start: noise before tinyray's own lines, and
#: in front of a one-line error. The logger is Ray's private module's.
RAY_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def _keep_local_ray_on_loopback() -> None:
    """Keep every process of a local Ray on 127.0.0.1 (Ray's single-machine switch, on by default on macOS and
    Windows). Private API: Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` into ``ray_constants`` at import, and
    offers no public switch."""
    import ray._private.ray_constants as ray_constants

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] not in ("0", "false", "False")


def _dialled_address(address: str) -> str | None:
    """The ``host:port`` Ray dials for ``address`` (it may swap a loopback host for this machine's address), or
    None if Ray's private helper has moved (Ray's own error is then the fallback)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address)
    except Exception:  # noqa: BLE001 - a private helper: if it moves or fails, skip the check
        return None


def replace_restored_callbacks(tuner: "tune.Tuner", callbacks: list, scheduler: Any) -> None:
    """Give a restored tuner this driver's callbacks and scheduler.

    Private API: ``Tuner.restore`` rebuilds the callbacks and scheduler pickled by the previous driver (whose
    tracker and progress line are gone) and has no argument to replace them; the tuner keeps them on its
    ``_local_tuner``. Their states (the trial -> MLflow run mapping) are still restored by Tune afterwards.
    """
    local = tuner._local_tuner
    local._run_config.callbacks = callbacks
    local._tune_config.scheduler = scheduler


def trial_loggers() -> list:
    """The files Tune writes in each trial's folder: ``result.json`` (``tinyray publish`` reads it) and
    ``progress.csv``, but no TensorBoard event files.

    Tune adds its CSV, JSON and TensorBoard loggers when they are missing from the callbacks; the one documented
    switch, ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``, turns all three off, so the first two are passed here.
    TensorBoard is not among tinyray's dependencies, and the same per-epoch curves are in MLflow.
    """
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    written: dict[str, int] = {}  # shared: read from result.json before the first of the two writes to it
    return [JsonOnce(written), CsvOnce(written)]


def trial_files_folder(trial: Any) -> str:
    """Where a trial's ``result.json``, ``progress.csv`` and ``params.json`` are written: its folder in the results
    folder itself when the storage is a local filesystem (tinyray's ``--storage``), else Tune's staging folder.

    Why not Tune's staging folder (Tune's default): Tune writes its loggers' files into a staging copy of the
    experiment folder and copies the whole of it into the results folder at every experiment snapshot, so the copy
    grows with the trials done (4 files a trial: O(trials) a snapshot, O(trials^2) a search; measured by
    ``tinyray bench scale``, docs/benchmarks.md, session 18). Written in place, the staging folder keeps only Tune's
    own state files, and a trial's files are current in the results folder at every epoch, not at the next snapshot.
    """
    storage = getattr(trial, "storage", None)  # Ray's StorageContext; its filesystem is a pyarrow one
    if storage is not None and getattr(storage.storage_filesystem, "type_name", None) == "local":
        return storage.trial_fs_path
    return trial.local_path


class _EachEpochOnce:
    """A Tune trial logger that writes each epoch of a trial once, in the trial's folder in the results folder
    (:func:`trial_files_folder`): a resumed trial reports the epochs that Tune's last snapshot missed again
    (:func:`tinyray.tune.trainable.run_trial`), and the trial's files may hold them.

    ``written`` (shared by the loggers of one search) maps a trial to the last epoch its ``result.json`` held when
    this driver first saw the trial; each logger then keeps its own last epoch.
    """

    def __init__(self, written: dict[str, int]) -> None:
        super().__init__()
        self._written = written
        self._last: dict[str, int] = {}

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        epoch = int(result.get("training_iteration") or 0)
        key = trial.trial_id
        if key not in self._last:
            if key not in self._written:
                self._written[key] = last_logged_epoch(Path(trial_files_folder(trial)) / EXPR_RESULT_FILE)
            self._last[key] = self._written[key]
        if epoch <= self._last[key]:
            return
        self._last[key] = epoch
        super().log_trial_result(iteration, trial, result)  # type: ignore[misc]

    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        if trial_files_folder(trial) == trial.local_path:  # remote storage: Tune's staging copy, restored by Tune
            super()._restore_from_remote(file_name, trial)  # type: ignore[misc]


def _made_trial_files_folder(trial: Any) -> Path:
    """:func:`trial_files_folder`, created if missing (Tune's loggers call ``trial.init_local_path()`` for theirs)."""
    folder = Path(trial_files_folder(trial))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class JsonOnce(_EachEpochOnce, JsonLoggerCallback):
    """Tune's ``result.json`` logger (and ``params.json``), each epoch once, in place."""

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_files:
            self._trial_files[trial].close()
        self.update_config(trial, trial.config)
        self._restore_from_remote(EXPR_RESULT_FILE, trial)
        self._trial_files[trial] = (_made_trial_files_folder(trial) / EXPR_RESULT_FILE).open("at")

    def update_config(self, trial: Any, config: dict) -> None:
        folder = _made_trial_files_folder(trial)
        self._trial_configs[trial] = config
        with (folder / EXPR_PARAM_FILE).open("w") as file:
            json.dump(config, file, indent=2, sort_keys=True, cls=SafeFallbackEncoder)
        with (folder / EXPR_PARAM_PICKLE_FILE).open("wb") as file:
            cloudpickle.dump(config, file)


class CsvOnce(_EachEpochOnce, CSVLoggerCallback):
    """Tune's ``progress.csv`` logger, each epoch once, in place."""

    def _setup_trial(self, trial: Any) -> None:
        if trial in self._trial_files:
            self._trial_files[trial].close()
        path = _made_trial_files_folder(trial) / EXPR_PROGRESS_FILE
        self._restore_from_remote(EXPR_PROGRESS_FILE, trial)
        self._trial_continue[trial] = path.exists() and path.stat().st_size > 0
        self._trial_files[trial] = path.open("at")
        self._trial_csv[trial] = None


def last_logged_epoch(path: Path) -> int:
    """The ``training_iteration`` of the last complete line of a trial's ``result.json`` (0 if none)."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 65536))
            lines = file.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("training_iteration") or 0)
        except (ValueError, AttributeError):
            continue  # a line cut short by a crash
    return 0


def trial_dirname(trial: Any) -> str:
    """A trial's folder, named by its id, so a trial that never reported is still identified. A module function,
    not a lambda: Tune keeps it in every trial's record of every experiment snapshot, and a lambda is pickled by
    value there (1.2 kB a trial, of about 22 kB), a function by name."""
    return trial_folder(trial.trial_id)


def _describe(space: Any, data: Any, config: dict[str, Any]) -> dict[str, Any]:
    """A trial's MLflow params from its Tune config (a replay's config already holds them)."""
    return described(space, data, config)


def start_ray(address: str | None) -> bool:
    """Connect to the cluster at ``--address``/``RAY_ADDRESS``, or start a local Ray; return True if we started it.

    A local Ray listens on 127.0.0.1 only. Ray binds a reachable address by default; its switch for single-machine
    clusters (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on macOS and Windows) keeps every Ray process on
    the loopback, and Ray's token authentication (on by default since 2.59) stays on.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        _keep_local_ray_on_loopback()
    if ray.is_initialized():
        return False
    logging.getLogger(RAY_TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
    # an unreachable address was refused before (run_search -> _check_address): ray.init would retry it for ever
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                                  configure_logging=True)
    if address:
        # Ray's C++ client logs every failed attempt to stderr: hold that back, for an error of one line.
        error, logged = quietly(lambda: ray.init(address=address, **kwargs))
    else:
        # not captured: the local Ray's processes inherit stderr
        error, logged = quietly(lambda: ray.init(**kwargs), capture=False)
    if error is None:
        sys.stderr.write(logged)
        return True
    where = address or "a local Ray"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    fix = "start it with 'ray start --head' or fix --address"
    if "InvalidAuthToken" in logged or "Unauthenticated" in logged:
        # Ray >= 2.59 clusters use token authentication; an explicit address never turns it on by itself.
        fix = ("the cluster wants its authentication token: set RAY_AUTH_MODE=token and the cluster's token in "
               "RAY_AUTH_TOKEN or the file ~/.ray/auth_token ('ray get-auth-token' on the head prints it)")
    raise UserError(f"cannot connect to Ray at {where} ({first[:160]}): {fix}")


def run_tasks(function: Any, calls: list[tuple], cpus: float, gpus: float,
              on_done: Any) -> None:
    """Run ``function(*call)`` for every call as a Ray task of ``cpus`` CPUs and ``gpus`` GPUs, on the Ray this
    driver joined; ``on_done(index, result)`` on the driver as each finishes, in the order they finish.

    Raises:
        UserError: with the first task's error line if a task fails (the others are cancelled).
    """
    from tinyray.tracking import error_line

    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(function)
    pending = {remote.remote(*call): index for index, call in enumerate(calls)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(done[0])
        try:
            result = ray.get(done[0])
        except ray.exceptions.RayError as exc:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise UserError(f"training task {index + 1} of {len(calls)} failed: {error_line(str(exc))[:300]}") from None
        on_done(index, result)


def stop_ray() -> None:
    """Stop the local Ray that :func:`start_ray` started."""
    ray.shutdown()


def check_resources(config: "SearchConfig") -> None:
    """Refuse a trial that no node of the Ray cluster can hold (Ray would keep it pending for ever)."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    where = "this machine" if not (config.address or os.environ.get("RAY_ADDRESS")) else "any node of the Ray cluster"
    most_cpus = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
    most_gpus = max((node.get("GPU", 0.0) for node in nodes), default=0.0)
    if config.cpus_per_trial > most_cpus:
        raise UserError(f"--cpus-per-trial {config.cpus_per_trial:g} is more than {where} has ({most_cpus:g} CPUs): "
                        f"lower it to {most_cpus:g} or less, or join a larger cluster with --address")
    if config.gpus_per_trial > 0 and most_gpus == 0:
        raise UserError(f"--gpus-per-trial {config.gpus_per_trial:g} asks for a GPU, but {where} has none that Ray "
                        f"sees: drop --gpus-per-trial, or join a cluster with GPUs with --address")
    if config.gpus_per_trial > most_gpus:
        raise UserError(f"--gpus-per-trial {config.gpus_per_trial:g} is more than {where} has ({most_gpus:g} GPUs): "
                        f"lower it to {most_gpus:g} or less")


def quietly(call: Any, capture: bool = True) -> tuple[Exception | None, str]:
    """Run ``call()``; return the connection error it raised (or None) and what it wrote to stderr (fd 2)."""
    if not capture:
        try:
            call()
            return None, ""
        except Exception as exc:  # noqa: BLE001 - Ray raises bare Exceptions too (a node that timed out starting)
            return exc, ""
    with tempfile.TemporaryFile(mode="w+b") as captured:
        sys.stderr.flush()
        stderr_fd = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            call()
            error = None
        except Exception as exc:  # noqa: BLE001 - Ray raises bare Exceptions too (a node that timed out starting)
            error = exc
        finally:
            sys.stderr.flush()
            os.dup2(stderr_fd, 2)
            os.close(stderr_fd)
        captured.seek(0)
        return error, captured.read().decode(errors="replace")


def check_ray_address(address: str) -> None:
    """Fail at once, in one line, when nothing answers at a ``host:port`` Ray address.

    Ray dials a loopback host (``127.0.0.1``, ``localhost``) at this machine's network address instead, unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; a cluster bound to loopback only is then unreachable, so the address
    Ray will really dial is checked too.
    """
    import socket

    if address == "auto" or "://" in address:
        return  # 'auto' fails fast on its own; ray:// client addresses are Ray's business
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit():
        raise UserError(f"--address {address!r} is not host:port or 'auto', e.g. --address 10.0.0.5:6379")
    port = int(port_text)

    def answers(where: str) -> bool:
        try:
            socket.create_connection((where, port), timeout=5).close()
            return True
        except OSError:
            return False

    if not answers(host):
        raise UserError(
            f"nothing answers at {address}: start the cluster ('ray start --head --port {port}', or "
            f"'ray up clusters/v100.yaml' and run tinyray on its head with --address auto) or fix --address"
        )
    dialled = _dialled_address(address)
    if dialled is None:
        return
    dialled_host = (dialled or address).rpartition(":")[0].strip("[]")
    if dialled_host != host and not answers(dialled_host):
        raise UserError(
            f"Ray answers at {address} on loopback only, but Ray dials it as {dialled}: set "
            f"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for a single-machine loopback cluster, or use the node's address"
        )


def run_tune(config: "SearchConfig", space: Any, data: Any, data_spec: Any, recipe: str, core: Any,
              tracker: Any, parent_run_id: str, resume: bool = False) -> tuple[Any, bool]:
    """Run (or continue) the Tune experiment; return its result grid and whether Ctrl-C stopped it."""
    settings = TrialSettings(
        space=str(space.source), data=data_spec, max_epochs=config.max_epochs, recipe=recipe, seed=config.seed,
        threads=max(1, int(config.cpus_per_trial)), trainer=config.trainer, replay_speed=config.replay_speed,
        precision=config.precision, workers=config.workers, channels_last=config.channels_last,
        results=str(config.results_dir),
    )
    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings), resources)
    if config.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration", max_t=config.max_epochs, grace_period=config.grace_period,
            reduction_factor=config.reduction_factor,
        )
    elif config.scheduler == "moasha":
        # Tune restores a searcher but not a scheduler: the rungs live in the results folder.
        scheduler = MOASHAScheduler(
            max_t=config.max_epochs, grace_period=config.grace_period, reduction_factor=config.reduction_factor,
            state_path=config.results_dir / "scheduler.json",
        )
    else:
        scheduler = FIFOScheduler()

    progress = Progress(budget=config.budget, max_epochs=config.max_epochs)

    def on_update(state: Progress) -> None:
        tracker.log_metrics(parent_run_id, {
            "hypervolume": state.hypervolume, "trials_done": state.done, "front_size": state.front_size,
            "trials_completed": state.completed, "trials_early_stopped": state.stopped, "trials_failed": state.failed,
            "elapsed_seconds": state.elapsed,
        }, step=state.done)

    describe, replay = partial(_describe, space, data), config.trainer == REPLAY
    tracking = TrackingCallback(tracker, parent_run_id, config.max_epochs, describe,
                                tags=trial_start_tags(config.trainer))
    # the disk guard first: a trial that ran out of disk stops the search before it is recorded as failed
    guard = StopWhenDiskFull()
    callbacks = [guard, tracking, MonitorCallback(progress, config.progress, on_update), *trial_loggers()]
    results = config.results_dir
    if resume and (results / "tuner.pkl").is_file():
        # Tune restores its trials (finished ones stay finished; unfinished ones continue from their checkpoints),
        # the searcher (TinySearcher.restore) and the callbacks' states (the trial -> MLflow run mapping). The
        # callbacks and the scheduler are rebuilt here so that they use this run's tracker and settings.
        install_legacy_aliases()  # experiments saved before tinyray.tune existed pickled other class paths
        try:
            tuner = tune.Tuner.restore(str(results), trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
        except Exception as exc:  # noqa: BLE001 - a damaged state must be refused, not replaced by a new search
            raise UserError(f"cannot resume {config.name!r}: Ray Tune's state in {results} is damaged "
                            f"({error_line(str(exc))[:200]}); its finished trials are in {results}/trial_*; "
                            f"start a new --name") from None
        replace_restored_callbacks(tuner, callbacks, scheduler)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric="top1", mode="max", search_alg=TinySearcher(core, max_epochs=config.max_epochs,
                                                                   describe=describe if replay else None),
                scheduler=scheduler, num_samples=config.trials, reuse_actors=True,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=config.name, storage_path=str(Path(config.storage).expanduser().resolve()), callbacks=callbacks,
                verbose=0, failure_config=tune.FailureConfig(max_failures=config.retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
            ),
        )
    # On Ctrl-C Tune stops the trials, saves its state and returns as if done (tinyray tells the two apart by the
    # trials' states); its advice to call Tuner.restore() is not how a tinyray search continues.
    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.addFilter(_not_tunes_restore_advice)
    quiet_when_full = QuietWhenFull(guard)  # a full disk may fail Tune's last snapshot: one line is tinyray's
    tune_log.addFilter(quiet_when_full)
    try:
        grid = tuner.fit()
    except Exception:
        if guard.reason:
            raise DiskFull(guard.reason) from None
        raise
    finally:
        tune_log.removeFilter(_not_tunes_restore_advice)
        tune_log.removeFilter(quiet_when_full)
    if guard.reason:  # Tune stopped as on Ctrl-C (StopWhenDiskFull), its last snapshot written if the disk allowed
        raise DiskFull(guard.reason)
    return grid, tracking.interrupted(config.trials)


def _not_tunes_restore_advice(record: logging.LogRecord) -> bool:
    """A logging filter: drop Tune's own lines about an interrupted experiment (tinyray says how to resume)."""
    text = record.getMessage()
    return not any(marker in text for marker in ("Tuner.restore", "Stop signal received", "Trials did not complete"))


def trials_table(grid: Any, max_epochs: int, trainer: str = "train") -> "pd.DataFrame":
    """One row a trial of Tune's result grid (columns :data:`tinyray.search.TRIAL_COLUMNS`); ``trainer`` is the
    search's, for trials that never reported."""
    import pandas as pd

    from tinyray.search import TRIAL_COLUMNS

    rows = []
    for result in grid:
        metrics = result.metrics or {}
        conf = result.config or {}
        epochs = int(metrics.get("training_iteration", 0) or 0)
        status = trial_status(epochs, max_epochs, error=result.error is not None)
        rows.append({
            "trial_id": metrics.get("trial_id") or Path(result.path).name.removeprefix(TRIAL_FOLDER_PREFIX),
            "r": conf.get("r"), "d": conf.get("d"), "w": conf.get("w"),
            "resolution": metrics.get("resolution"), "train_resolution": metrics.get("train_resolution"),
            "flops": metrics.get("flops"), "params": metrics.get("params"), "epochs": epochs,
            "top1": metrics.get("top1"), "status": status, "node_id": metrics.get("node_id"),
            "train_seconds": metrics.get("time_total_s"),
            "failure": error_line(str(result.error)) if result.error is not None else None,
            "trainer": metrics.get("trainer") or trainer,
        })
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)
