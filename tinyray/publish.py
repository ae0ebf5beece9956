"""``tinyray publish RESULTS_DIR``: send a search's results folder to MLflow, adding only what is missing.

A search keeps everything in its results folder, and MLflow gets a copy as it goes. When the tracking server was
unreachable (from the start, or from some point on; see :class:`tinyray.tracking.Tracker`), the copy is partial.
Publishing compares the folder with what the server already has and sends the difference, so it can run any
number of times, after a complete search too, without duplicating anything:

* the experiment (the search name) and the parent run, found by the ``tinyray.search_id`` tag that the search
  journalled in ``tracking.json`` (a folder without a journal gets an id on its first publication);
* one child run per trial (tag ``trial_id``), created only if missing, with the parameters journalled by the
  search (or read from the trial's own ``result.json``);
* each trial's per-epoch metrics from Ray Tune's ``trial_<id>/result.json``: only steps MLflow lacks;
* ``status``, ``epochs`` and ``on_front`` tags from ``trials.csv``, and the runs' end;
* the parent's settings (tags ``setting.<name>``), files (``trials.csv``, ``front.csv``, ``front.png``,
  ``formula.json``, ``formula.png``), final front metrics, and the formula's pyfunc model with its registered
  version (described and tagged) and the experiment's ``formula_model_uri`` tag.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinyray.errors import UserError
from tinyray.files import TRIAL_FOLDER_PREFIX, read_results_csv
from tinyray.formula import MODEL_ARTIFACT
from tinyray.replay import TRAIN
from tinyray.status import FAILED
from tinyray.tracking import EPOCH_METRICS, TRIAL_PARAMS, front_tags, search_run_tags, trial_end_tags, trial_start_tags

#: Files of a results folder that are logged on the parent run.
PARENT_FILES = ("trials.csv", "front.csv", "front.png", "formula.json", "formula.png")


@dataclass
class PublishReport:
    """What one publication sent (all zeros and no files when MLflow already had everything)."""

    results_dir: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    parent_created: bool = False
    runs_created: int = 0
    runs_found: int = 0
    metric_values: int = 0
    params: int = 0
    tags: int = 0
    runs_ended: int = 0
    artifacts: list[str] = field(default_factory=list)
    model_uri: str | None = None
    model_registered: bool = False
    #: the formula's MLflow 3 logged model was created (the experiment's Models tab lacked it)
    model_logged: bool = False

    @property
    def sent(self) -> int:
        """How many things were added or changed in MLflow."""
        return (self.parent_created + self.runs_created + self.metric_values + self.params + self.tags
                + self.runs_ended + len(self.artifacts) + self.model_registered + self.model_logged)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sent": self.sent}

    def line(self) -> str:
        if not self.sent:
            return (f"{self.results_dir} is already in MLflow at {self.tracking_uri} (parent run {self.parent_run_id}, "
                    f"{self.runs_found} trial runs): nothing to send")
        return (f"published {self.results_dir} to {self.tracking_uri}: parent run {self.parent_run_id} "
                f"({'created' if self.parent_created else 'found'}), {self.runs_created} trial runs created, "
                f"{self.runs_found} found, {self.metric_values} metric values, {self.params} params, {self.tags} tags, "
                f"{len(self.artifacts)} files" + (f", model {self.model_uri}" if self.model_registered else "")
                + (", the formula's logged model" if self.model_logged else ""))


@dataclass
class _Trial:
    trial_id: str
    rows: list[dict[str, Any]]
    config: dict[str, Any]
    table: dict[str, Any] | None  # its trials.csv row, once the search finished


def default_tracking_uri(results_dir: Path, journal: dict[str, Any] | None) -> str:
    """The folder's recorded tracking URI, else ``$MLFLOW_TRACKING_URI``, else the local store of its storage root."""
    from tinyray.tracking import local_tracking_uri

    return ((journal or {}).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
            or local_tracking_uri(Path(results_dir).parent))


def publish(results_dir: Path, tracking_uri: str | None = None) -> PublishReport:
    """Send a search's results folder to MLflow without duplicating what is already there.

    Args:
        results_dir: the folder a search wrote (``storage/name``, with ``search.json``).
        tracking_uri: the MLflow store (default: see :func:`default_tracking_uri`).

    Raises:
        UserError: the folder is not a search's results, or MLflow cannot be reached.
    """
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    from tinyray.formula import read_search_info
    from tinyray.tracking import describe_failure, quick_http, read_journal, use_credentials

    results = Path(results_dir).expanduser().resolve()
    if not results.is_dir():
        raise UserError(f"{results} does not exist: give the results folder of a tinyray search, "
                        f"e.g. tinyray-results/b200M")
    info = read_search_info(results)
    if info is None or not isinstance(info.get("config"), dict):
        raise UserError(f"{results} is not the results folder of a tinyray search (no search.json): "
                        f"give the folder 'tinyray search' wrote, e.g. tinyray-results/b200M")
    journal = read_journal(results) or {}
    uri = use_credentials(tracking_uri or default_tracking_uri(results, journal))  # no secret in what is printed
    trials = _read_trials(results)
    try:
        with quick_http():  # a dead server costs seconds
            report = _publish(results, info, journal, uri, trials)
    except (MlflowException, RequestException, ConnectionError, TimeoutError) as exc:
        raise UserError(f"cannot publish to MLflow at {uri} ({describe_failure(exc)}): start the tracking server "
                        f"or fix --tracking-uri, then run 'tinyray publish {results}' again (nothing is sent twice)"
                        ) from None
    return report


def _publish(results: Path, info: dict[str, Any], journal: dict[str, Any], uri: str,
             trials: list[_Trial]) -> PublishReport:
    """Send what MLflow lacks, in order: the parent run, the trials' runs, the parent's outputs; then the journal."""
    from tinyray.files import JOURNAL_VERSION
    from tinyray.tracking import write_journal

    config = info["config"]
    tracker, experiment, artifacts = _open_experiment(results, journal, uri, config["name"])
    runs = tracker.client.search_runs([tracker.experiment_id],
                                      filter_string=f"tags.`tinyray.search_id` = '{tracker.search_id}'",
                                      max_results=50000)
    report = PublishReport(str(results), uri, str(tracker.experiment_id), "")
    parent, params = _publish_parent(tracker, runs, results, info, journal, report)
    tags = trial_start_tags(config.get("trainer") or TRAIN)  # a folder from before --trainer: trained
    trial_runs = _publish_trials(tracker, runs, parent.info.run_id, trials, journal, report, tags)
    _publish_parent_outputs(tracker, parent, results, config, len(trials), report)
    write_journal(results, {
        **journal, "version": JOURNAL_VERSION, "search_id": tracker.search_id, "tracking_uri": uri,
        "experiment": experiment, "artifact_location": artifacts, "status": "complete", "offline_reason": "",
        "parent_run_id": parent.info.run_id, "trial_runs": trial_runs,
        "parent": journal.get("parent") or {"name": config["name"], "params": params},
        "trials": journal.get("trials") or {},
    })
    return report


def _open_experiment(results: Path, journal: dict[str, Any], uri: str, name: str) -> tuple[Any, str, str | None]:
    """A strict tracker on the search's experiment, with its search id (the journal's, or a new one).

    Returns:
        ``(tracker, experiment name, artifact location)``.
    """
    import uuid

    from tinyray.tracking import Tracker, local_artifact_root, local_tracking_uri

    experiment = journal.get("experiment") or name
    if uri == journal.get("tracking_uri"):
        artifacts = journal.get("artifact_location")
    else:
        artifacts = local_artifact_root(results.parent) if uri == local_tracking_uri(results.parent) else None
    tracker = Tracker(uri, experiment, artifact_location=artifacts, strict=True)
    tracker.search_id = journal.get("search_id") or uuid.uuid4().hex
    return tracker, experiment, artifacts


def _publish_parent(tracker: Any, runs: list[Any], results: Path, info: dict[str, Any], journal: dict[str, Any],
                    report: PublishReport) -> tuple[Any, dict[str, Any]]:
    """Find the parent run (the earliest of the search id) and set its settings tags where they differ, or create it.

    Returns:
        ``(parent run, its parameters)``.
    """
    config = info["config"]
    parents = sorted((r for r in runs if r.data.tags.get("tinyray.kind") == "search"), key=lambda r: r.info.start_time)
    recorded = journal.get("parent") or {}
    params = recorded.get("params") or info.get("run_params") or _legacy_search_params(info)
    if parents:
        parent = parents[0]
        report.tags += _set_changed_tags(tracker, parent, search_run_tags(params))
    else:
        description = recorded.get("description") or f"tinyray search {config['name']} (published from {results})"
        parent = tracker.client.get_run(tracker.start_search(recorded.get("name") or config["name"], params,
                                                             description))
        report.parent_created = True
    report.parent_run_id = parent.info.run_id
    return parent, params


def _publish_trials(tracker: Any, runs: list[Any], parent_id: str, trials: list[_Trial], journal: dict[str, Any],
                    report: PublishReport, tags: dict[str, str]) -> dict[str, str]:
    """One child run a trial (created if missing) with the epochs, tags and end it lacks; ``tags`` are the ones a
    search gives every trial's run when it makes it (:func:`tinyray.tracking.trial_start_tags`).

    Returns:
        The trial id -> run id mapping.
    """
    client = tracker.client
    children: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        if run.data.tags.get("tinyray.kind") == "trial" and run.data.tags.get("mlflow.parentRunId") == parent_id:
            children.setdefault(run.data.tags.get("trial_id"), run)
    trial_runs: dict[str, str] = {}
    for trial in trials:
        run_name, trial_params = _trial_params(trial, journal)
        run = children.get(trial.trial_id)
        if run is None:
            run_id = tracker.start_trial(parent_id, trial.trial_id, run_name, trial_params, tags)
            run = client.get_run(run_id)
            report.runs_created += 1
            have: dict[str, set[int]] = {}
        else:
            report.runs_found += 1
            report.params += _missing_params(tracker, run, trial_params)
            have = {key: {m.step for m in client.get_metric_history(run.info.run_id, key)}
                    for key in (*EPOCH_METRICS, "epochs") if key in run.data.metrics}
        trial_runs[trial.trial_id] = run.info.run_id
        report.metric_values += _send_epochs(tracker, run.info.run_id, trial, have)
        report.tags += _set_changed_tags(tracker, run, {**tags, **_trial_tags(trial)})
        if trial.table is not None and run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FAILED" if trial.table.get("status") == FAILED else "FINISHED")
            report.runs_ended += 1
    return trial_runs


def _publish_parent_outputs(tracker: Any, parent: Any, results: Path, config: dict[str, Any], trial_count: int,
                            report: PublishReport) -> None:
    """The parent's missing files, front metrics and formula model; its end once the search finished."""
    from tinyray.formula import DEFAULT_MODEL_NAME

    client, parent_id = tracker.client, parent.info.run_id
    present = {item.path for item in client.list_artifacts(parent_id)}
    for name in PARENT_FILES:
        if (results / name).is_file() and name not in present:
            client.log_artifact(parent_id, str(results / name))
            report.artifacts.append(name)
    report.metric_values += _send_front_metrics(tracker, parent, results, int(config["budget"]), trial_count)
    if (results / "formula.json").is_file():
        model = _publish_model(tracker, parent, results / "formula.json", MODEL_ARTIFACT not in present,
                               config.get("formula_name") or DEFAULT_MODEL_NAME, config["name"], report)
        report.model_uri, report.model_registered = model
    if (results / "trials.csv").is_file() and parent.info.status == "RUNNING":
        client.set_terminated(parent_id, "FINISHED")
        report.runs_ended += 1


def _read_trials(results: Path) -> list[_Trial]:
    """A results folder's trials: ``trials.csv`` rows and Ray Tune's ``trial_<id>`` folders (either may be partial)."""

    table: dict[str, dict[str, Any]] = {}
    csv = results / "trials.csv"
    if csv.is_file():
        try:
            frame = read_results_csv(csv)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {csv} ({str(exc).splitlines()[0]}): the results folder is damaged") from None
        frame = frame.astype(object).where(frame.notna(), None)
        table = {str(row["trial_id"]): row for row in frame.to_dict(orient="records")}
    folders = {path.name.removeprefix(TRIAL_FOLDER_PREFIX): path for path in results.glob(f"{TRIAL_FOLDER_PREFIX}*")
               if path.is_dir()}
    ids = list(table) + sorted(set(folders) - set(table))
    trials = []
    for trial_id in ids:
        folder = folders.get(trial_id)
        rows = _result_rows(folder / "result.json") if folder is not None else []
        config: dict[str, Any] = {}
        if folder is not None and (folder / "params.json").is_file():
            try:
                config = json.loads((folder / "params.json").read_text())
            except (OSError, ValueError):
                config = {}
        trials.append(_Trial(trial_id, rows, config if isinstance(config, dict) else {}, table.get(trial_id)))
    return trials


def _result_rows(path: Path) -> list[dict[str, Any]]:
    """Ray Tune's ``result.json``: one JSON object a line (a killed driver may leave a torn last line: skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "training_iteration" in row:
            rows.append(row)
    return rows


def _legacy_search_params(info: dict[str, Any]) -> dict[str, Any]:
    """The parent run's parameters of a folder without a journal, from a ``search.json`` written before it held
    ``run_params`` (:func:`tinyray.search.search_params`, the one builder): the subset that file can tell."""
    config = info["config"]
    keys = ("budget", "searcher", "scheduler", "seed", "trials", "max_epochs", "grace_period", "reduction_factor",
            "pop_size", "floor", "cpus_per_trial", "gpus_per_trial")
    return {**{key: config.get(key) for key in keys}, "space": info.get("space"), "space_file": info.get("space_file"),
            "data": info.get("data"), "recipe": info.get("recipe"), "base_flops": info.get("base_flops")}


def _trial_params(trial: _Trial, journal: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A trial's run name and parameters: as the search journalled them, else from its own results."""
    from tinyray.tracking import trial_run_name

    last = trial.rows[-1] if trial.rows else {}
    source = last or trial.config or trial.table or {}
    params = {key: source.get(key) for key in TRIAL_PARAMS if source.get(key) is not None}
    recorded = (journal.get("trials") or {}).get(trial.trial_id) or {}
    params.update(recorded.get("params") or {})
    if recorded.get("run_name"):
        return recorded["run_name"], params
    if not {"r", "d", "w"} <= set(params):
        return f"{TRIAL_FOLDER_PREFIX}{trial.trial_id}", params  # named as its folder
    return trial_run_name(trial.trial_id, params["r"], params["d"], params["w"]), params


def _trial_tags(trial: _Trial) -> dict[str, str]:
    if trial.table is None:
        return {}
    row = trial.table
    tags = trial_end_tags(str(row.get("status")), int(row.get("epochs") or 0), str(row.get("failure") or ""))
    if row.get("on_front") is not None:
        tags.update(front_tags(str(row["on_front"]).lower() == "true"))
    return tags


def _missing_params(tracker: Any, run: Any, params: dict[str, Any]) -> int:
    missing = {key: value for key, value in params.items() if value is not None and key not in run.data.params}
    if missing:
        tracker.log_params(run.info.run_id, missing)
    return len(missing)


def _set_changed_tags(tracker: Any, run: Any, tags: dict[str, str]) -> int:
    changed = {key: value for key, value in tags.items() if run.data.tags.get(key) != value}
    if changed:
        tracker.set_tags(run.info.run_id, changed)
    return len(changed)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _send_epochs(tracker: Any, run_id: str, trial: _Trial, have: dict[str, set[int]]) -> int:
    """Log the epochs of ``result.json`` (and the final ``epochs`` count) that the run lacks; return how many values."""
    from mlflow.entities import Metric

    metrics = []
    for row in trial.rows:
        step = int(row["training_iteration"])
        stamp = int(float(row.get("timestamp") or 0) * 1000)
        metrics += [Metric(key, float(row[key]), stamp, step) for key in EPOCH_METRICS
                    if _finite(row.get(key)) and step not in have.get(key, set())]
    if trial.table is not None:
        epochs = int(trial.table.get("epochs") or 0)
        if epochs not in have.get("epochs", set()):
            stamp = int(float(trial.rows[-1].get("timestamp") or 0) * 1000) if trial.rows else 0
            metrics.append(Metric("epochs", float(epochs), stamp, epochs))
    for start in range(0, len(metrics), 1000):
        tracker.client.log_batch(run_id, metrics=metrics[start : start + 1000])
    return len(metrics)


def _send_front_metrics(tracker: Any, parent: Any, results: Path, budget: int, trials: int) -> int:
    """The search's final front size and hypervolume, if the parent run lacks them (a search offline at its end)."""

    from tinyray.front import hypervolume

    if "hypervolume_final" in parent.data.metrics or not (results / "front.csv").is_file():
        return 0
    front = read_results_csv(results / "front.csv")
    volume = hypervolume(front["top1"].to_numpy(), front["flops"].to_numpy(), budget) if not front.empty else 0.0
    tracker.log_metrics(parent.info.run_id, {"hypervolume_final": volume, "front_size_final": len(front)}, step=trials)
    return 2


def _publish_model(tracker: Any, parent: Any, formula_json: Path, log_model: bool, model_name: str, search: str,
                   report: PublishReport) -> tuple[str, bool]:
    """The formula's pyfunc model on the parent run (a logged model, and the run's artifact folder if
    ``log_model``), its registered version with its description and tags (:func:`tinyray.formula.version_note`),
    and the links between them and to the experiment: each only if missing."""
    from tinyray.formula import Formula, find_logged_model, fit_metrics, link_version, log_fit_metrics
    from tinyray.formula import log_model as log_formula, register_model, version_note

    client = tracker.client
    run_id = parent.info.run_id
    formula = Formula.load(formula_json)
    description, tags = version_note(formula, search)
    model_id = find_logged_model(client, tracker.experiment_id, run_id)
    if model_id is None:  # published before tinyray logged models (or not at all): the Models tab lists it now
        model_id = log_formula(client, tracker.experiment_id, run_id, formula_json, tags, run_copy=log_model)
        report.model_logged = True
        if log_model:
            report.artifacts.append(MODEL_ARTIFACT)
    elif not client.get_logged_model(model_id).metrics:  # logged by a tinyray that gave it no metrics
        log_fit_metrics(client, run_id, model_id, formula)
        report.metric_values += len(fit_metrics(formula))
    # (a logged model without the run's copy, from a publication cut short, is left so: runs:/ URIs resolve to it)
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    registered = False
    if versions:
        first = min(versions, key=lambda v: int(v.version))
        version = str(first.version)
        if not first.description:  # registered by a tinyray that did not describe its versions
            client.update_model_version(model_name, version, description=description)
            report.tags += 1
        for key, value in tags.items():
            if (first.tags or {}).get(key) != value:
                client.set_model_version_tag(model_name, version, key, value)
                report.tags += 1
        if link_version(client, model_id, model_name, version):
            report.tags += 1
    else:
        version = register_model(client, model_name, run_id, parent.info.artifact_uri, description, tags, model_id)
        registered = True
    model_uri = f"models:/{model_name}/{version}"
    if parent.data.tags.get("formula_model_uri") != model_uri:
        tracker.set_tags(run_id, {"formula_model_uri": model_uri})
    experiment = client.get_experiment(tracker.experiment_id)
    if experiment.tags.get("formula_model_uri") != model_uri:
        tracker.tag_experiment({"formula_model_uri": model_uri})
        report.tags += 1
    return model_uri, registered
