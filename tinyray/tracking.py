"""MLflow tracking: one experiment per search, a parent run for the search, one nested child run per trial.

Ray's own ``MLflowLoggerCallback`` makes no parent run and starts a fresh run for each trial after a restore, so
tinyray keeps its own Tune callback. All MLflow traffic comes from the driver (Tune callbacks run there), so
worker nodes never need to reach the tracking server. The trial -> run mapping is part of the callback's
state (``get_state``/``set_state``), which Tune saves with the experiment, so a resumed search logs into the
same runs and never duplicates one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

STATE_VERSION = 1
#: Metrics a trial reports every epoch that are logged to its child run.
EPOCH_METRICS = ("top1", "val_loss", "train_loss", "images_per_second", "epoch_seconds")
#: A trial's description that is also logged as metrics (step 0): MLflow sorts params as text, metrics as numbers,
#: so these make the runs table sort and filter numerically (``metrics.flops < 1e8``).
TRIAL_NUMBERS = ("r", "d", "w", "resolution", "flops", "params")
#: The MLflow UI's runs table as tinyray opens it: every trial flat (not folded under the search's run), most
#: accurate first, with the numbers people compare as columns. It is stored as an experiment tag, the way the
#: UI stores a shared view, and opened by :func:`experiment_page`.
RUNS_VIEW_KEY = "tinyray"
_COLUMNS = [f"metrics.`{key}`" for key in ("top1", "flops", "params", "resolution", "r", "d", "w", "epochs")]
_COLUMNS += ["tags.`status`", "tags.`on_front`"]
RUNS_VIEW = {
    "orderByKey": "metrics.`top1`", "orderByAsc": False, "searchFilter": "",
    "selectedColumns": _COLUMNS, "columnOrder": ["attributes.`Run Name`", *_COLUMNS],
}


def local_tracking_uri(storage: Path) -> str:
    """The embedded default store: a sqlite database in the results folder."""
    return f"sqlite:///{(Path(storage) / 'mlflow.db').resolve()}"


def local_artifact_root(storage: Path) -> str:
    return (Path(storage) / "mlartifacts").resolve().as_uri()


def experiment_page(base_url: str, experiment_id: str, tinyray_view: bool = True) -> str:
    """The MLflow UI address of an experiment's runs table (in tinyray's view if the experiment has it).

    Args:
        base_url: the UI's address, e.g. ``http://127.0.0.1:5000``.
        experiment_id: the search's experiment.
        tinyray_view: open :data:`RUNS_VIEW` (experiments made before it existed lack it: then sort by top-1).
    """
    # workflowType: MLflow 3 opens its GenAI pages unless told this is model training
    query = "workflowType=machine_learning&" + (
        f"viewStateShareKey={RUNS_VIEW_KEY}" if tinyray_view else "orderByKey=metrics.%60top1%60&orderByAsc=false")
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


class Tracker:
    """A search's runs in MLflow, through ``MlflowClient`` (no global active-run state).

    Args:
        tracking_uri: ``sqlite:///...`` for the embedded store, or ``http://127.0.0.1:5000`` for a server.
        experiment: experiment name (the search name).
        artifact_location: where a new experiment keeps artifacts (the embedded store's artifact folder).
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        else:
            self.experiment_id = found.experiment_id
        self.experiment = experiment

    # -- the search (parent run) -------------------------------------------------------------------------------
    def start_search(self, name: str, params: Mapping[str, Any], description: str = "") -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"tinyray.kind": "search", "mlflow.note.content": description},
        )
        self.log_params(run.info.run_id, params)
        experiment_tags = {
            "mlflow.experimentKind": "custom_model_development",  # the UI's "model training" pages, not GenAI's
            f"mlflow.sharedViewState.{RUNS_VIEW_KEY}": json.dumps(RUNS_VIEW),
        }
        if description:
            experiment_tags["mlflow.note.content"] = description  # shown above the runs table
        for key, value in experiment_tags.items():
            self.client.set_experiment_tag(self.experiment_id, key, value)
        return run.info.run_id

    def describe(self, run_id: str, description: str) -> None:
        """Replace a run's description (``mlflow.note.content``, Markdown shown on the run's page)."""
        self.set_tags(run_id, {"mlflow.note.content": description})

    def describe_experiment(self, description: str) -> None:
        """Replace the experiment's description (Markdown shown above its runs table)."""
        self.client.set_experiment_tag(self.experiment_id, "mlflow.note.content", description)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)[:6000]) for key, value in params.items() if value is not None]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(key, float(value), now, step)
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
        ]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_artifacts(self, run_id: str, paths: Iterable[Path]) -> None:
        for path in paths:
            if Path(path).exists():
                self.client.log_artifact(run_id, str(path))

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # -- trials (child runs) -----------------------------------------------------------------------------------
    def start_trial(self, parent_run_id: str, trial_id: str, run_name: str, params: Mapping[str, Any]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={"mlflow.parentRunId": parent_run_id, "tinyray.kind": "trial", "trial_id": trial_id, "status": "running"},
        )
        self.log_params(run.info.run_id, params)
        # rounded: a column to sort and filter by; the exact values are the params
        numbers = {key: round(float(params[key]), 4) for key in TRIAL_NUMBERS if key in params}
        self.log_metrics(run.info.run_id, numbers, step=0)
        return run.info.run_id

    def runs(self) -> list[Any]:
        """Every run of the experiment (parent and children)."""
        return self.client.search_runs([self.experiment_id], max_results=50000)


def make_tracking_callback(tracker: Tracker, parent_run_id: str, max_epochs: int, trial_params: Any) -> Any:
    """A Ray Tune callback that mirrors trials into nested MLflow runs.

    Args:
        tracker: the search's :class:`Tracker`.
        parent_run_id: the search's parent run.
        max_epochs: full fidelity; a trial that ends with fewer epochs was early-stopped.
        trial_params: ``callable(config) -> (run_name, params)`` describing a trial for its child run.
    """
    from ray.tune import Callback

    class TrackingCallback(Callback):
        def __init__(self) -> None:
            self.runs: dict[str, str] = {}
            self.finished: dict[str, str] = {}

        def _run(self, trial: Any) -> str:
            run_id = self.runs.get(trial.trial_id)
            if run_id is None:
                run_name, params = trial_params(trial.config)
                run_id = tracker.start_trial(parent_run_id, trial.trial_id, run_name, params)
                self.runs[trial.trial_id] = run_id
            return run_id

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._run(trial)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            step = int(result.get("training_iteration", 0))
            tracker.log_metrics(self._run(trial), {k: result[k] for k in EPOCH_METRICS if k in result}, step=step)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            epochs = int((trial.last_result or {}).get("training_iteration", 0))
            self._close(trial, "completed" if epochs >= max_epochs else "early-stopped", epochs)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            epochs = int((trial.last_result or {}).get("training_iteration", 0))
            reason = str(getattr(trial, "error_file", "") or "")
            self._close(trial, "failed", epochs, reason)

        def _close(self, trial: Any, status: str, epochs: int, reason: str = "") -> None:
            run_id = self._run(trial)
            tags = {"status": status, "epochs": epochs}
            if reason:
                tags["failure"] = reason[:4000]
            tracker.set_tags(run_id, tags)
            tracker.log_metrics(run_id, {"epochs": epochs}, step=epochs)
            tracker.finish(run_id, "FAILED" if status == "failed" else "FINISHED")
            self.finished[trial.trial_id] = status

        def get_state(self) -> dict:
            return {"version": STATE_VERSION, "parent_run_id": parent_run_id, "runs": dict(self.runs),
                    "finished": dict(self.finished)}

        def set_state(self, state: dict) -> None:
            if state.get("version") != STATE_VERSION:
                log.warning("ignoring tracking state of version %s", state.get("version"))
                return
            self.runs = dict(state.get("runs", {}))
            self.finished = dict(state.get("finished", {}))

    return TrackingCallback()
