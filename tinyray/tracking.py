"""MLflow tracking: one experiment per search, a parent run for the search, one nested child run per trial.

All MLflow traffic comes from the driver (the Tune callback :class:`tinyray.tune.callbacks.TrackingCallback`
runs there), so worker nodes never need to reach the tracking server. What a run records is defined here once
(:func:`trial_start_tags`, :func:`trial_end_tags`, :data:`TRIAL_PARAMS`, :func:`trial_numbers`,
:func:`settings_tags`), for the search and for ``tinyray publish`` alike.

A search must not depend on its tracking server. Every MLflow call of a :class:`Tracker` goes through one guard:
with short HTTP retries and timeouts (:data:`QUICK_HTTP`, so a dead server costs seconds), and on the first
failure the tracker goes *offline* for good: one warning, no further calls, no retry storms. What the runs need
(the search's id, run names, parameters, the trial -> run mapping) is journalled in ``tracking.json`` in the
results folder, so ``tinyray publish RESULTS_DIR`` (:mod:`tinyray.publish`) can send everything later.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, TypeVar

if TYPE_CHECKING:
    from mlflow import MlflowClient

from tinyray.files import JOURNAL_VERSION, write_json_atomic

log = logging.getLogger(__name__)
T = TypeVar("T")

JOURNAL_NAME = "tracking.json"
#: Trials journalled since ``tracking.json`` was last written whole: one JSON line a trial run made (``trial_id``,
#: ``run_name``, ``params``, ``run_id``), appended, so a search of N trials writes O(N) bytes of journal, not
#: O(N^2). :func:`read_journal` folds it in; writing ``tracking.json`` whole (:func:`write_journal`) empties it.
JOURNAL_TRIALS_NAME = "tracking.trials.jsonl"
#: Metrics a trial reports every epoch that are logged to its child run.
EPOCH_METRICS = ("top1", "val_loss", "train_loss", "images_per_second", "epoch_seconds")
#: MLflow's HTTP settings for tinyray's own calls (MLflow's defaults retry for minutes: 7 retries, backoff 2,
#: 120 s timeout). A user's own setting of any of them wins.
QUICK_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
#: The metrics of a trial's run that describe it (:func:`trial_numbers`), one point at step 0.
TRIAL_NUMBERS = ("r", "d", "w", "resolution", "flops_M", "params_M")
#: The metrics the search's own run gets (the search's progress, its findings, the formula's answer and fit).
SEARCH_RUN_METRICS = (
    "hypervolume", "trials_done", "front_size", "trials_completed", "trials_early_stopped", "trials_failed",
    "elapsed_seconds", "hypervolume_final", "front_size_final", "wall_seconds", "spearman_r", "spearman_d",
    "spearman_w", "formula_r", "formula_d", "formula_w", "formula_flops", "loo_r_rmse_gp", "loo_d_rmse_gp",
    "loo_r_rmse_linear", "loo_d_rmse_linear", "loo_r_rmse_loglinear", "loo_d_rmse_loglinear",
    # the formula's logged model's (tinyray.formula.fit_metrics), which MLflow records on the run that logs it too
    "loo_r_rmse", "loo_d_rmse", "front_points", "points_fitted", "budget_M", "flops_low_M", "flops_high_M",
)
#: A trial's child-run parameters: its multipliers and what they build (every trial result carries them too).
TRIAL_PARAMS = ("r", "d", "w", "resolution", "flops", "params", "train_resolution")
#: The prefix of the search's settings, which its parent run carries as tags (``setting.budget``), not params: the
#: UI's params picker and table then hold only the trials' r, d, w and what they build.
SETTING_PREFIX = "setting."
#: Run colours (MLflow's ``mlflow.runColor`` tag, which its UI reads): the front's trials stand out in every chart,
#: and the search's own run has a colour of its own (blue), so that it never passes for a trial.
FRONT_COLOR, OFF_FRONT_COLOR, SEARCH_COLOR = "#d62728", "#9aa5b1", "#1f77b4"
#: Every trial's run makes a logged model of its network (of this name and type; the run names the trial): MLflow's UI (3.17) opens a
#: run page in its GenAI layout (breadcrumb "Evaluations") unless the browser's workflow switch says "Model training"
#: (the address's ``workflowType=machine_learning``, else the switch's last setting, GenAI by default; the
#: experiment's ``mlflow.experimentKind`` is not consulted) or the run has a logged model as output. The weights stay
#: in the results folder (the trial's checkpoint): an *external* model in MLflow's terms.
TRIAL_MODEL_NAME, TRIAL_MODEL_TYPE = "network", "tinyray-network"  # MLflow refuses "." in a model's name
#: The MLflow UI's experiment page as tinyray opens it, stored as an experiment tag the way the UI stores a shared
#: view (``mlflow.sharedViewState.<key>``) and opened by :func:`experiment_page`: the runs table flat, most accurate
#: first, with the columns people compare first; and the charts that answer a search's questions.
RUNS_VIEW_KEY = "tinyray"
_COLUMNS = ["tags.`status`", "tags.`on_front`", *(f"metrics.`{key}`" for key in (
    "r", "d", "w", "top1", "flops_M", "params_M", "resolution", "epochs"))]


def trial_numbers(params: Mapping[str, Any]) -> dict[str, float]:
    """A trial's numbers for the runs table, logged as metrics (step 0), since MLflow sorts params as text.

    ``r``, ``d``, ``w`` to 4 decimals, ``resolution`` in pixels, ``flops_M`` and ``params_M`` in millions (2 and 3
    decimals); the exact values stay the run's params. A key whose param is missing is left out.
    """
    numbers: dict[str, float] = {}
    for key in ("r", "d", "w", "resolution"):
        if params.get(key) is not None:
            numbers[key] = round(float(params[key]), 4)
    for key, digits in (("flops", 2), ("params", 3)):
        if params.get(key) is not None:
            numbers[f"{key}_M"] = round(float(params[key]) / 1e6, digits)
    return numbers


def settings_tags(settings: Mapping[str, Any]) -> dict[str, str]:
    """The search's settings as its parent run's tags (``setting.<name>``; None values left out)."""
    return {f"{SETTING_PREFIX}{key}": str(value)[:5000] for key, value in settings.items() if value is not None}


def search_run_tags(settings: Mapping[str, Any]) -> dict[str, str]:
    """The tags that describe the search's own run: its settings (:func:`settings_tags`) and its colour."""
    return {**settings_tags(settings), "mlflow.runColor": SEARCH_COLOR}


def plain_text(markdown: str) -> str:
    """Markdown as one paragraph of plain text: without ``**``, ``*`` emphasis and backticks, lines joined.

    MLflow's list of experiments shows an experiment's description (``mlflow.note.content``) as raw text, and its
    experiment page renders it as Markdown; plain text reads right in both.
    """
    text = re.sub(r"\*\*|`", "", markdown)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def front_tags(on_front: bool) -> dict[str, str]:
    """A finished trial's ``on_front`` tag and its run colour in MLflow's charts."""
    return {"on_front": str(bool(on_front)).lower(), "mlflow.runColor": FRONT_COLOR if on_front else OFF_FRONT_COLOR}


def _chart(kind: str, name: str, **config: Any) -> dict[str, Any]:
    """A chart card of MLflow's experiment page (its ``RunsChartsCardConfig``), named ``tinyray-<name>``."""
    return {"type": kind, "uuid": f"tinyray-{name}", "metricSectionId": "tinyray-section", "deleted": False,
            "isGenerated": False, "runsCountToCompare": 1000, **config}


def runs_view() -> dict[str, Any]:
    """The view :data:`RUNS_VIEW_KEY` (the experiment page's search facets and UI state, as MLflow's UI saves them)."""
    # MLflow adds a bar chart for every metric that has no chart: the search run's own metrics and the trials'
    # constants get one marked deleted, so only tinyray's charts show (metric keys the UI finds later still get one)
    hidden = [*TRIAL_NUMBERS, "epochs", *(key for key in EPOCH_METRICS if key != "top1"), *SEARCH_RUN_METRICS]
    charts = [
        _chart("SCATTER", "front", xaxis={"key": "flops_M", "type": "METRIC"}, yaxis={"key": "top1", "type": "METRIC"}),
        _chart("PARALLEL", "rdw", selectedParams=["r", "d", "w"],
               selectedMetrics=["top1"], showAllRuns=True),
        _chart("LINE", "epochs", metricKey="top1", selectedMetricKeys=["top1"],
               xAxisKey="step", scaleType="linear", xAxisScaleType="linear", lineSmoothness=0,
               useGlobalXaxisKey=False, useGlobalLineSmoothing=False),
    ]
    charts += [{**_chart("BAR", f"hidden-{key}", metricKey=key), "deleted": True} for key in hidden]
    sections = [{"uuid": "tinyray-section", "name": "Model metrics", "display": True, "isReordered": True},
                {"uuid": "tinyray-system", "name": "System metrics", "display": False, "isReordered": False}]
    return {
        "orderByKey": "metrics.`top1`", "orderByAsc": False, "searchFilter": "",
        "selectedColumns": _COLUMNS, "columnOrder": ["attributes.`Run Name`", *_COLUMNS],
        # narrow columns for short values, so that the first eight fit beside the run names at 1600 px
        "columnWidths": {column: 90 if "top1" in column else 78 for column in _COLUMNS if "status" not in column},
        "runsHiddenMode": "SHOW_ALL", "hideEmptyCharts": True, "isAccordionReordered": False,
        "compareRunCharts": charts, "compareRunSections": sections,
    }


RUNS_VIEW = runs_view()


def quiet_mlflow() -> None:
    """Keep MLflow's INFO lines ("Creating initial MLflow database tables...") and progress bars off the user's
    terminal.

    ``import mlflow`` configures its logger at INFO, so the level is set after importing it.
    """
    import mlflow  # noqa: F401

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # MLflow prints "View run NAME at: URL" on stdout when a run against a server ends: it would break --json
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # and a "Downloading artifacts" progress bar on stderr for each download (tinyray formula --model-uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    skip_absent_context_probes()


#: Modules MLflow tries to import on every request to a tracking server, to learn whether it runs on Databricks
#: (``DatabricksRequestHeaderProvider.in_context``: ``dbruntime`` five times, ``IPython`` four, ``pyspark``).
CONTEXT_PROBES = ("dbruntime", "IPython", "pyspark")


def skip_absent_context_probes() -> None:
    """Ask MLflow once per process, not before every request, whether it runs on Databricks.

    MLflow's Databricks request-header provider answers ``in_context()`` before every request to a tracking server
    by importing :data:`CONTEXT_PROBES`; Python does not remember a failed import, so where they are absent each
    probe searched every ``sys.path`` entry again: 0.41 ms of CPU per request here (0.04 ms with the answer kept;
    ``benchmarks/tracking_calls.py``), more where ``sys.path`` lies on a network filesystem. A process does not move
    onto or off Databricks, so the provider's first answer is kept on the provider (MLflow's registry of request
    header providers, private to it: if it moves, the probes merely come back).

    Until 2026-12-07 (session 18) this put ``None`` in ``sys.modules`` for the absent modules instead, Python's own
    "not importable"; but other libraries read ``"IPython" in sys.modules`` as "IPython is loaded" (Ray's
    ``ray.init``, racing with the search's MLflow set-up thread, then failed to import it; MLflow's datasets do the
    same with ``pyspark``), so ``sys.modules`` is left alone.
    """
    try:
        from mlflow.tracking.request_header.databricks_request_header_provider import DatabricksRequestHeaderProvider
        from mlflow.tracking.request_header.registry import _request_header_provider_registry
    except ImportError:
        return
    for provider in _request_header_provider_registry:
        if isinstance(provider, DatabricksRequestHeaderProvider) and "in_context" not in vars(provider):
            answer = bool(provider.in_context())
            provider.in_context = lambda answer=answer: answer


def redact_uri(uri: str | None) -> str | None:
    """A URI without the ``user:password@`` part, fit to be written down, printed or logged."""
    return re.sub(r"//[^/@]*@", "//", uri) if uri else uri


def use_credentials(uri: str | None) -> str | None:
    """Hand the ``user:password@`` of a tracking URI to MLflow the way it supports, and return the URI without it.

    For an ``http(s)`` server MLflow sends ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` as HTTP basic
    auth; they are set in this (the driver's) process, the only one that talks to MLflow, so the secret never
    reaches a file tinyray writes, an object Ray Tune pickles, or a line it prints.
    """
    if not uri or not uri.startswith(("http://", "https://")):
        return uri  # database URIs keep theirs (SQLAlchemy needs it); tinyray writes them down redacted
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(uri)
        username, password = parts.username, parts.password
    except ValueError:  # not a URI MLflow could use either: MLflow says so, without the secret
        return redact_uri(uri)
    if username is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(username)
    if password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return redact_uri(uri)


def local_tracking_uri(storage: Path) -> str:
    """The embedded default store: a sqlite database in the results folder."""
    return f"sqlite:///{(Path(storage) / 'mlflow.db').resolve()}"


def local_artifact_root(storage: Path) -> str:
    return (Path(storage) / "mlartifacts").resolve().as_uri()


def sqlite_file(uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///FILE`` tracking URI (its query string dropped); ``None`` for any other
    URI and for an in-memory sqlite."""
    prefix = "sqlite:///"
    if not uri or not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


#: Filesystems on which an sqlite store keeps a write-ahead log (:func:`write_ahead_log`): local ones. WAL's index is
#: shared memory, which works only among processes of one host; SQLite says not to use it on a network filesystem.
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "bcachefs", "f2fs", "jfs", "reiserfs",
                               "tmpfs", "overlay", "apfs", "hfs"})


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (its nearest existing ancestor), as psutil reports the mount
    (``ext4``, ``nfs4``, ...); ``""`` if no mount matches."""
    import psutil

    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    path = path.resolve()
    best, kind = -1, ""
    for mount in psutil.disk_partitions(all=True):
        point = Path(mount.mountpoint)
        if (path == point or point in path.parents) and len(point.parts) > best:
            best, kind = len(point.parts), mount.fstype
    return kind


def write_ahead_log(database: Path) -> bool:
    """Put the sqlite store ``database`` in write-ahead-log mode (made if missing; the mode stays with the file, so
    every later reader, ``tinyray ui``'s server included, uses it); True if it is in that mode.

    MLflow's sqlite store commits every call in the default rollback-journal mode: a journal file made, synced and
    deleted per transaction. With a write-ahead log a commit appends to one file instead. Measured on this project's
    trial pattern (a run made, its params, two epochs' metrics, its end: ``docs/benchmarks.md``, session 14), it
    cuts the driver's CPU and wall time per trial. Durability is unchanged (``synchronous`` stays FULL: a committed
    call survives a crash of the driver or of the machine). Only on a local filesystem (:data:`LOCAL_FILESYSTEMS`);
    a store on a network filesystem keeps MLflow's mode. A store that cannot be switched (locked, read-only) keeps
    its mode too, with a debug line: the search goes on.
    """
    import contextlib
    import sqlite3

    database = Path(database)
    if filesystem_type(database.parent) not in LOCAL_FILESYSTEMS:
        return False
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=5.0)) as connection:
            return str(connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal"
    except sqlite3.Error as exc:
        log.debug("the sqlite store %s keeps its journal mode: %s", database, exc)
        return False


def _beside_sqlite(uri: str) -> str | None:
    """The artifact folder beside a ``sqlite:///FILE`` store (:func:`local_artifact_root` of its folder); ``None``
    for any other store (a server has its own default; an in-memory sqlite has no folder)."""
    database = sqlite_file(uri)
    return None if database is None else local_artifact_root(database.parent)


def trial_run_name(trial_id: str, r: float, d: float, w: float) -> str:
    """A trial's MLflow run name: its multipliers, readable, then its Tune trial id, which makes it unique.

    Two trials of a search can share rounded multipliers (``r0.47-d0.67-w0.27`` twice); the trial id is the one
    ``trials.csv``, the report and the run's ``trial_id`` tag show, e.g. ``r0.47-d0.67-w0.27-3f2a1_00004``.
    """
    from tinyray.cube import Candidate

    return f"{Candidate(float(r), float(d), float(w)).label}-{trial_id}"


def describe_trial(space: Any, data: Any, r: float, d: float, w: float) -> dict[str, Any]:
    """A trial's :data:`TRIAL_PARAMS`: the multipliers, and the resolutions, FLOPs and parameters they build.

    Args:
        space: the search space.
        data: the loaded data (its classes count in FLOPs; it knows the training resolution).
        r, d, w: the candidate's multipliers.
    """
    from tinyray.cost import analytic_cost

    r, d, w = float(r), float(d), float(w)
    cost = analytic_cost(space, r, d, w, data.num_classes)
    return {"r": r, "d": d, "w": w, "resolution": cost.resolution, "flops": cost.flops, "params": cost.params,
            "train_resolution": data.train_resolution(space, r)}


def described(space: Any, data: Any, config: dict[str, Any]) -> dict[str, Any]:
    """A trial's :data:`TRIAL_PARAMS` from its Tune config: the description a replay's driver put there (see
    :class:`tinyray.tune.searcher.TinySearcher`'s ``describe``), else :func:`describe_trial` of its multipliers.
    ``space`` and ``data`` may be callables that load them: they are called only when the config lacks it."""
    if all(key in config for key in TRIAL_PARAMS):
        return {key: config[key] for key in TRIAL_PARAMS}
    space, data = (x() if callable(x) else x for x in (space, data))
    return describe_trial(space, data, config["r"], config["d"], config["w"])


def trial_start_tags(trainer: str) -> dict[str, str]:
    """The tags a trial's run gets when it is made (the search's and ``tinyray publish``'s alike): ``trainer``,
    ``train`` or ``replay`` (:data:`tinyray.replay.TRAINERS`), so that a replayed trial's run says it was one."""
    return {"trainer": str(trainer)}


def trial_end_tags(status: str, epochs: int, reason: str = "") -> dict[str, str]:
    """The tags a trial's run gets when it ends: ``status`` (:mod:`tinyray.status`), ``epochs``, and ``failure``."""
    tags = {"status": str(status), "epochs": str(int(epochs))}
    if reason:
        tags["failure"] = reason[:4000]
    return tags


def ui_command(results_dir: Path, tracking_uri: str, experiment_id: str | None, storage: Path) -> str:
    """The command that opens the MLflow UI on a search's runs.

    Args:
        results_dir: the search's results folder where it is now (a copied folder names the copy).
        tracking_uri: the store the search logged to.
        experiment_id: the search's MLflow experiment, if known.
        storage: the results root the search ran with. Its ``mlflow.db`` is the default store, which ``tinyray ui``
            finds next to the folder by itself, so no ``--tracking-uri`` is printed for it.
    """
    import shlex

    if tracking_uri.startswith(("http://", "https://")):
        if not experiment_id:
            return f"open {tracking_uri}"
        return f"open '{experiment_page(tracking_uri, experiment_id)}'"
    command = f"tinyray ui {shlex.quote(str(results_dir))}"
    if tracking_uri != local_tracking_uri(storage):
        command += f" --tracking-uri {shlex.quote(tracking_uri)}"
    return command


def publish_command(results_dir: Path) -> str:
    """The command that sends a results folder to MLflow (see :mod:`tinyray.publish`)."""
    return f"tinyray publish {results_dir}"


@contextmanager
def quick_http() -> Iterator[None]:
    """Short MLflow HTTP retries and timeouts for the calls inside (restored afterwards; the user's own win)."""
    added = [key for key in QUICK_HTTP if key not in os.environ]
    os.environ.update({key: QUICK_HTTP[key] for key in added})
    # urllib3 logs every retry as a warning; tinyray says it once, in its own words. A filter, not a level: setting
    # a logger's level empties the cache of every logger of the process (about 750 with Ray and MLflow), which cost
    # the search's driver half a millisecond an MLflow call.
    retries, errors_only = logging.getLogger("urllib3.connectionpool"), _ErrorsOnly()  # one a call: they nest
    retries.addFilter(errors_only)
    try:
        yield
    finally:
        retries.removeFilter(errors_only)
        for key in added:
            os.environ.pop(key, None)


class _ErrorsOnly(logging.Filter):
    """A logging filter that lets only errors through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def describe_failure(exc: BaseException) -> str:
    """A short reason for an MLflow failure (MLflow's messages embed whole urllib3 reprs)."""
    text = " ".join(str(exc).split())
    for marker, short in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                          ("Name or service not known", "unknown host"), ("Max retries exceeded", "no answer")):
        if marker in text:
            return short
    return (text or type(exc).__name__)[:160]


def read_journal(results_dir: Path) -> dict[str, Any] | None:
    """The ``tracking.json`` of a results folder with the trials appended since (:data:`JOURNAL_TRIALS_NAME`), or
    None if it has none (or one of another version)."""
    path = Path(results_dir) / JOURNAL_NAME
    if not path.is_file():
        return None
    try:
        journal = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(journal, dict) or journal.get("version") != JOURNAL_VERSION:
        return None
    trials, runs = journal.setdefault("trials", {}), journal.setdefault("trial_runs", {})
    try:
        lines = (Path(results_dir) / JOURNAL_TRIALS_NAME).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            entry = json.loads(line)
            trial_id = str(entry["trial_id"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash: its trial is journalled again when its run is made
        trials.setdefault(trial_id, {"run_name": entry.get("run_name"), "params": entry.get("params") or {}})
        if entry.get("run_id"):
            runs.setdefault(trial_id, entry["run_id"])
    return journal


def write_journal(results_dir: Path, journal: Mapping[str, Any]) -> None:
    """Write ``tracking.json`` whole (atomically), the appended trials folded in (they must be in ``journal``)."""
    write_json_atomic(Path(results_dir) / JOURNAL_NAME, journal)
    (Path(results_dir) / JOURNAL_TRIALS_NAME).unlink(missing_ok=True)


#: The tab of the experiment page tinyray's addresses open: the charts (``compareRunsMode``, MLflow's URL parameter
#: of the runs page's *Table view* / *Chart view* switch, which is TABLE when absent). MLflow keeps that mode in the
#: address only: neither an experiment tag nor a shared view can set it, so MLflow's own link to an experiment (its
#: name in the list of experiments) opens the table.
OPEN_MODE = "CHART"


def experiment_page(base_url: str, experiment_id: str, tinyray_view: bool = True, mode: str = OPEN_MODE) -> str:
    """The MLflow UI address of an experiment's runs (in tinyray's view if the experiment has it).

    Args:
        base_url: the UI's address, e.g. ``http://127.0.0.1:5000``.
        experiment_id: the search's experiment.
        tinyray_view: open :data:`RUNS_VIEW` (experiments made before it existed lack it: then sort by top-1).
        mode: ``CHART`` (default, :data:`OPEN_MODE`: the view's charts) or ``TABLE`` (the runs table).
    """
    # workflowType: MLflow 3 opens its GenAI pages unless told this is model training
    query = "workflowType=machine_learning&" + (
        f"viewStateShareKey={RUNS_VIEW_KEY}" if tinyray_view else "orderByKey=metrics.%60top1%60&orderByAsc=false")
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}&compareRunsMode={mode}"


class Tracker:
    """A search's runs in MLflow, through ``MlflowClient`` (no global active-run state).

    Unless ``strict``, a tracker never raises on an MLflow failure: it warns once, goes offline and turns every
    later call into a no-op (run ids are then ``None``). With ``journal``, it records in that file what
    ``tinyray publish`` needs to send the search later.

    Args:
        tracking_uri: ``sqlite:///...`` for the embedded store, or ``http://127.0.0.1:5000`` for a server.
        experiment: experiment name (the search name).
        artifact_location: where a new experiment keeps artifacts (the embedded store's artifact folder). Default:
            for a sqlite file store, its ``mlartifacts`` folder beside the database (MLflow's own default,
            ``./mlruns``, is relative to whichever folder the process runs in); else the server's default.
        journal: the results folder's ``tracking.json`` (read back if it exists, so a resumed search keeps its id).
        strict: raise MLflow errors instead of going offline (``tinyray publish`` wants to know).
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None, *,
                 journal: Path | None = None, strict: bool = False) -> None:
        from mlflow import MlflowClient

        quiet_mlflow()

        connect = use_credentials(tracking_uri)
        if artifact_location is None:
            artifact_location = _beside_sqlite(connect)
        # what is journalled, printed and logged; only the client (never pickled, see __getstate__) has a secret
        tracking_uri = redact_uri(connect)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.strict = strict
        self.offline_reason = ""
        self.journal_path = Path(journal) if journal is not None else None
        previous = read_journal(self.journal_path.parent) if self.journal_path is not None else None
        self.journal: dict[str, Any] = {
            "version": JOURNAL_VERSION, "search_id": uuid.uuid4().hex, "tracking_uri": tracking_uri,
            "experiment": experiment, "artifact_location": artifact_location, "status": "running",
            "offline_reason": "", "parent_run_id": None, "parent": None, "trial_runs": {}, "trials": {},
            **(previous or {}),
        }
        self.journal.update(tracking_uri=tracking_uri, status="running", offline_reason="")
        self.search_id: str = self.journal["search_id"]
        database = sqlite_file(connect)
        if database is not None and database.parent.is_dir():
            write_ahead_log(database)  # before MLflow's first connection
        self.client: MlflowClient = MlflowClient(tracking_uri=connect)
        self.experiment_id: str | None = self._call(f"reaching {tracking_uri}", self._experiment, artifact_location)
        self._save_journal()

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its callbacks (and so this tracker) into tuner.pkl: leave out the client, whose store
        # may hold a database password. A resumed search builds a new tracker and callbacks (tinyray.tune.runtime.run_tune).
        return {key: value for key, value in self.__dict__.items() if key != "client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from mlflow import MlflowClient

        self.__dict__.update(state)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)

    def _experiment(self, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            return self.client.create_experiment(self.experiment, artifact_location=artifact_location)
        return found.experiment_id

    # -- the guard -------------------------------------------------------------------------------------------------
    @property
    def offline(self) -> bool:
        """True once an MLflow call failed: the rest of the search is kept in the results folder only."""
        return bool(self.offline_reason)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``fn(*args, **kwargs)`` with quick HTTP settings; offline (None) on any failure unless strict."""
        if self.offline:
            return None
        with quick_http():
            if self.strict:
                return fn(*args, **kwargs)
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure of the tracking store must not stop a search
                self._go_offline(what, exc)
                return None

    def attempt(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Run an MLflow step made of several calls (``fn`` may use :attr:`client`) under the same guard."""
        return self._call(what, fn, *args, **kwargs)

    def _go_offline(self, what: str, exc: BaseException) -> None:
        if self.offline:  # a step of :meth:`attempt` already failed inside: warn once
            return
        self.offline_reason = f"{what}: {describe_failure(exc)}"
        self.journal.update(status="offline", offline_reason=self.offline_reason)
        self._save_journal()
        where = self.journal_path.parent if self.journal_path is not None else None
        later = f"; send them later with: {publish_command(where)}" if where is not None else ""
        log.warning("MLflow tracking at %s is offline (%s): the search goes on and keeps its results in %s%s",
                    self.tracking_uri, self.offline_reason, where or "the results folder", later)

    def _save_journal(self) -> None:
        if self.journal_path is None:
            return
        try:
            write_json_atomic(self.journal_path, self.journal)
            (self.journal_path.parent / JOURNAL_TRIALS_NAME).unlink(missing_ok=True)  # folded in just now
        except OSError as exc:  # the results folder was checked writable; never let bookkeeping stop a search
            log.warning("cannot write %s: %s", self.journal_path, exc)

    def _journal_trial(self, trial_id: str) -> None:
        """Append one trial's journal entry (the whole journal is written at the search's start and end only)."""
        if self.journal_path is None:
            return
        entry = {"trial_id": trial_id, **self.journal["trials"].get(trial_id, {}),
                 "run_id": self.journal["trial_runs"].get(trial_id)}
        try:
            with open(self.journal_path.parent / JOURNAL_TRIALS_NAME, "a", encoding="utf-8") as file:
                file.write(json.dumps(entry, default=str, separators=(",", ":")) + "\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", self.journal_path.parent / JOURNAL_TRIALS_NAME, exc)

    # -- the search (parent run) -------------------------------------------------------------------------------
    def start_search(self, name: str, settings: Mapping[str, Any], description: str = "") -> str | None:
        """Create the search's parent run (tagged ``tinyray.kind=search``, ``tinyray.search_id`` and its
        ``settings`` and colour as :func:`search_run_tags`), and give the experiment tinyray's view (:data:`RUNS_VIEW`)."""
        # the journal keeps its "params" key (the format of tracking.json); MLflow gets them as tags
        self.journal["parent"] = {"name": name, "params": dict(settings), "description": description}
        run_id = self._call("creating the search's run", self._create_run, name, {
            "tinyray.kind": "search", "tinyray.search_id": self.search_id, "mlflow.note.content": description,
            **search_run_tags(settings),
        }, {})
        self.journal["parent_run_id"] = run_id
        self._save_journal()
        if run_id is not None:
            experiment_tags = {
                "mlflow.experimentKind": "custom_model_development",  # the UI's "model training" pages, not GenAI's
                f"mlflow.sharedViewState.{RUNS_VIEW_KEY}": json.dumps(RUNS_VIEW, separators=(",", ":")),
            }
            if description:
                experiment_tags["mlflow.note.content"] = description  # shown above the runs table
            for key, value in experiment_tags.items():
                self._call("tagging the experiment", self.client.set_experiment_tag, self.experiment_id, key, value)
        return run_id

    def start_run(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any], description: str = "") -> str | None:
        """Create a run of this experiment that is not a search's (``tinyray compare``'s parent and its children,
        nested by a ``mlflow.parentRunId`` tag); tagged with the tracker's ``tinyray.search_id``. None if offline."""
        tags = {"tinyray.search_id": self.search_id, **tags}
        if description:
            tags["mlflow.note.content"] = description
        return self._call("creating a run", self._create_run, name, tags, params)

    def describe(self, run_id: str | None, description: str) -> None:
        """Replace a run's description (``mlflow.note.content``, Markdown shown on the run's page)."""
        self.set_tags(run_id, {"mlflow.note.content": description})

    def describe_experiment(self, description: str) -> None:
        """Replace the experiment's description: shown as Markdown above its runs table, but as raw text in MLflow's
        list of experiments, so give it plain text (:func:`plain_text`)."""
        self.tag_experiment({"mlflow.note.content": description})

    def tag_experiment(self, tags: Mapping[str, str]) -> None:
        """Set tags of the experiment (e.g. ``formula_model_uri``, the model its search registered)."""
        if self.experiment_id is None or self.offline:
            return
        for key, value in tags.items():
            self._call("tagging the experiment", self.client.set_experiment_tag, self.experiment_id, key, str(value))

    def _create_run(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any],
                    metrics: Mapping[str, float] | None = None) -> str | None:
        if self.experiment_id is None:
            return None
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))
        self._log_params(run.info.run_id, params, _metrics(metrics or {}, int(time.time() * 1000), 0))
        return run.info.run_id

    def log_params(self, run_id: str | None, params: Mapping[str, Any]) -> None:
        if run_id is not None:
            self._call("logging parameters", self._log_params, run_id, params)

    def _log_params(self, run_id: str, params: Mapping[str, Any], metrics: list | None = None) -> None:
        """Log ``params`` (and ``metrics``, MLflow ``Metric`` entities) in as few calls as MLflow allows (100
        params a call): each call is a transaction of the store, the driver's main cost per trial on sqlite."""
        from mlflow.entities import Param

        items = [Param(key, str(value)[:6000]) for key, value in params.items() if value is not None]
        for start in range(0, max(1, len(items)), 100):
            batch = items[start : start + 100]
            extra = (metrics or []) if start == 0 else []
            if batch or extra:
                self.client.log_batch(run_id, params=batch, metrics=extra)

    def log_metrics(self, run_id: str | None, metrics: Mapping[str, float], step: int = 0,
                    timestamp_ms: int | None = None) -> None:
        """Log finite numbers among ``metrics`` at ``step`` (non-numbers and NaN/inf are skipped)."""
        if run_id is None or self.offline:
            return
        items = _metrics(metrics, timestamp_ms if timestamp_ms is not None else int(time.time() * 1000), step)
        if items:
            self._call("logging metrics", self.client.log_batch, run_id, metrics=items)

    def set_tags(self, run_id: str | None, tags: Mapping[str, Any]) -> None:
        if run_id is None or self.offline:
            return
        from mlflow.entities import RunTag

        self._call("setting tags", self.client.log_batch, run_id,
                   tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_artifacts(self, run_id: str | None, paths: Iterable[Path]) -> None:
        if run_id is None:
            return
        for path in paths:
            if Path(path).exists():
                self._call("uploading artifacts", self.client.log_artifact, run_id, str(path))

    def reopen(self, run_id: str) -> bool:
        """Mark an existing run of this experiment as running again (a resumed search); False if it is not there
        or tracking is offline (the journal keeps the search's id, so ``tinyray publish`` still finds the run)."""
        from mlflow.exceptions import MlflowException

        def reopen() -> bool:
            try:
                run = self.client.get_run(run_id)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return False
                raise  # the server is away: the guard takes the tracker offline
            if run.info.experiment_id != self.experiment_id:
                return False
            self.client.update_run(run_id, status="RUNNING")
            return True

        if not self._call("reopening the search's run", reopen):
            return False
        self.journal["parent_run_id"] = run_id
        self._save_journal()
        return True

    def end_trial(self, run_id: str | None, tags: Mapping[str, Any], metrics: Mapping[str, float], step: int,
                  status: str = "FINISHED") -> None:
        """End a trial's run: its end ``tags`` and ``metrics`` at ``step`` in one call, then its status."""
        if run_id is None or self.offline:
            return
        from mlflow.entities import RunTag

        self._call("ending a trial's run", self.client.log_batch, run_id,
                   metrics=_metrics(metrics, int(time.time() * 1000), step),
                   tags=[RunTag(key, str(value)) for key, value in tags.items()])
        self.finish(run_id, status)

    def finish(self, run_id: str | None, status: str = "FINISHED") -> None:
        """End a run; ending the parent run marks the journal ``complete`` unless tracking went offline."""
        if run_id is not None:
            self._call("ending a run", self.client.set_terminated, run_id, status=status)
        if run_id is not None and run_id == self.journal.get("parent_run_id") and not self.offline:
            self.journal["status"] = "complete" if status == "FINISHED" else "interrupted"
            self._save_journal()

    def interrupt(self, parent_run_id: str | None) -> None:
        """Mark the search interrupted (Ctrl-C): its trial runs still RUNNING and its parent run end as KILLED
        (tagged ``status=interrupted``), and the journal says ``interrupted``. A resume reopens them."""
        for run in self.runs():
            tags = run.data.tags
            if (tags.get("tinyray.search_id") == self.search_id and tags.get("tinyray.kind") == "trial"
                    and run.info.status == "RUNNING"):
                self.set_tags(run.info.run_id, {"status": "interrupted"})
                self._call("ending a run", self.client.set_terminated, run.info.run_id, status="KILLED")
        self.set_tags(parent_run_id, {"status": "interrupted"})
        if parent_run_id is not None:
            self._call("ending a run", self.client.set_terminated, parent_run_id, status="KILLED")
        self.journal["status"] = "interrupted"
        self._save_journal()

    # -- trials (child runs) -----------------------------------------------------------------------------------
    def start_trial(self, parent_run_id: str | None, trial_id: str, run_name: str,
                    params: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> str | None:
        """Create a trial's child run (tagged ``trial_id`` and ``tags``); journalled even when offline.

        A trial that already has a run gets that run back: after a crash, Ray Tune may restore a trial whose run
        was made after Tune's last snapshot (so the callback's saved mapping lacks it). The journal says so: the
        trial is journalled before its run is made and the run's id once it is, so a driver killed in between
        leaves a journalled trial without a run id, whose run (if it was made) is then found by its tags.
        """
        known = self.journal["trial_runs"].get(trial_id)
        if known is None and trial_id in self.journal["trials"] and parent_run_id is not None:
            known = self._find_trial_run(trial_id)
        if known is not None and parent_run_id is not None and self.reopen_trial(known):
            if self.journal["trial_runs"].get(trial_id) != known:
                self.journal["trial_runs"][trial_id] = known
                self._journal_trial(trial_id)
            return known
        if trial_id not in self.journal["trials"]:
            self.journal["trials"][trial_id] = {"run_name": run_name, "params": dict(params)}
            self._journal_trial(trial_id)
        run_id = None
        if parent_run_id is not None:
            # trial_numbers: metrics at step 0, columns to sort by (the exact values are the params)
            run_id = self._call("creating a trial's run", self._create_run, run_name, {
                "mlflow.parentRunId": parent_run_id, "tinyray.kind": "trial", "tinyray.search_id": self.search_id,
                "trial_id": trial_id, "status": "running", **(tags or {}),
            }, params, trial_numbers(params))
        if run_id is not None:
            self.journal["trial_runs"][trial_id] = run_id
            self._journal_trial(trial_id)
            self._call("logging a trial's network", self._log_network, run_id, trial_id, params)
        return run_id

    def _find_trial_run(self, trial_id: str) -> str | None:
        """The run this search made for ``trial_id``, found by its tags (None if there is none, or offline)."""
        if self.experiment_id is None:
            return None
        found = self._call("finding a trial's run", self.client.search_runs, [self.experiment_id],
                           filter_string=f"tags.`tinyray.search_id` = '{self.search_id}' and tags.trial_id = "
                                         f"'{trial_id}'", max_results=1)
        return found[0].info.run_id if found else None

    def _log_network(self, run_id: str, trial_id: str, params: Mapping[str, Any]) -> str:
        """Log the trial's network as an external logged model (:data:`TRIAL_MODEL_TYPE`) output by its run."""
        from mlflow.entities import LoggedModelOutput
        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL

        model = self.client.create_logged_model(
            self.experiment_id, name=TRIAL_MODEL_NAME, source_run_id=run_id, model_type=TRIAL_MODEL_TYPE,
            params={key: str(value) for key, value in params.items() if value is not None},
            tags={"trial_id": trial_id, MLFLOW_MODEL_IS_EXTERNAL: "true"})
        self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        self.client.finalize_logged_model(model.model_id, "READY")
        return model.model_id

    def last_step(self, run_id: str | None) -> int | None:
        """The last epoch logged in a trial's run (its ``top1``'s highest step; 0 if none, None offline)."""
        if run_id is None or self.offline:
            return None

        def last() -> int:
            return max((metric.step for metric in self.client.get_metric_history(run_id, "top1")), default=0)

        return self._call("reading a trial's run", last)

    def reopen_trial(self, run_id: str) -> bool:
        """Mark a trial's existing run as running again; False if it is gone (or tracking is offline)."""
        from mlflow.exceptions import MlflowException

        def reopen() -> bool:
            try:
                self.client.get_run(run_id)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return False
                raise
            self.client.update_run(run_id, status="RUNNING")
            return True

        return bool(self._call("reopening a trial's run", reopen))

    def runs(self) -> list[Any]:
        """Every run of the experiment (parent and children); none when offline."""
        if self.experiment_id is None:
            return []
        return self._call("listing runs", self.client.search_runs, [self.experiment_id], max_results=50000) or []


def _metrics(metrics: Mapping[str, Any], timestamp_ms: int, step: int) -> list:
    """MLflow ``Metric`` entities of the finite numbers among ``metrics`` (non-numbers and NaN/inf are skipped)."""
    from mlflow.entities import Metric

    return [
        Metric(key, float(value), timestamp_ms, step)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    ]


def error_line(text: str) -> str:
    """The exception line of an error report or traceback (e.g. ``TrainingDiverged: training loss became nan``)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception|Diverged)\b[^:]*: ", line):
            return line[:1000]
    return lines[-1][:1000] if lines else "unknown error"


def failure_reason(trial: Any) -> str:
    """The exception line of a failed Tune trial, read from its error file."""
    path = getattr(trial, "error_file", None)
    try:
        return error_line(Path(path).read_text(errors="replace")) if path else "unknown error (no error file)"
    except OSError:
        return "unknown error (error file unreadable)"
