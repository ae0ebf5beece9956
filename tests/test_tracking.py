"""What a real search records in MLflow: the search's own settings on its run, and one named run per trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyray.data import DataSpec
from tinyray.search import SearchConfig, run_search
from tinyray.tracking import (FRONT_COLOR, OFF_FRONT_COLOR, RUNS_VIEW, SEARCH_COLOR, TRIAL_MODEL_NAME, TRIAL_MODEL_TYPE,
                              experiment_page, front_tags, plain_text, search_run_tags, trial_numbers, trial_run_name)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    # the data spec's own seed (the generator's, 0) differs from the search's: the run must show the search's
    data = DataSpec(train_size=300, val_size=100, seed=0, cache_dir=root / "cache")
    config = SearchConfig(budget=200_000_000, name="tracked", storage=root / "results", data=data, trials=2,
                          max_epochs=1, seed=1, progress="quiet")
    return run_search(config)


@pytest.fixture(scope="module")
def client(finished):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=finished.tracking_uri)


@pytest.mark.slow
@pytest.mark.integration
def test_search_run_tags_the_search_seed_and_the_data_seed_apart(finished, client):
    parent = client.get_run(finished.parent_run_id).data
    settings = {key.removeprefix("setting."): value for key, value in parent.tags.items() if key.startswith("setting.")}
    assert settings["seed"] == "1"
    assert settings["data_seed"] == "0"
    assert settings["data_train_size"] == "300" and settings["data_val_size"] == "100"
    assert (settings["precision"], settings["channels_last"]) == ("auto", "True") and "workers" not in settings
    assert parent.tags["mlflow.runColor"] == SEARCH_COLOR
    assert not parent.params  # the params picker holds the trials' r, d, w and what they build, nothing else


@pytest.mark.slow
@pytest.mark.integration
def test_trial_runs_are_named_uniquely_by_multipliers_and_trial_id(finished, client):
    runs = client.search_runs([finished.experiment_id], filter_string="tags.`tinyray.kind` = 'trial'")
    names = {run.data.tags["trial_id"]: run.data.tags["mlflow.runName"] for run in runs}
    assert len(runs) == len(finished.trials) == 2 and len(set(names.values())) == 2
    expected = {row.trial_id: trial_run_name(row.trial_id, row.r, row.d, row.w)
                for row in finished.trials.itertuples()}
    assert names == expected
    assert all(name.startswith("r") and name.endswith(f"-{trial_id}") for trial_id, name in names.items())
    # the report shows the same trial ids as the run names
    page = (finished.results_dir / "report.html").read_text()
    assert all(trial_id in page for trial_id in names)


@pytest.mark.slow
@pytest.mark.integration
def test_each_trial_run_outputs_its_network_as_an_external_logged_model(finished, client):
    trials = [run for run in client.search_runs([finished.experiment_id]) if run.data.tags.get("tinyray.kind") == "trial"]
    assert len(trials) == 2
    for run in trials:
        (output,) = client.get_run(run.info.run_id).outputs.model_outputs  # what makes the UI's run page a training run's
        model = client.get_logged_model(output.model_id)
        assert (model.name, model.source_run_id, model.model_type) == (TRIAL_MODEL_NAME, run.info.run_id, TRIAL_MODEL_TYPE)
        assert str(model.status) == "READY" and model.tags["mlflow.model.isExternal"] == "true"
        assert model.tags["trial_id"] == run.data.tags["trial_id"] and model.params == run.data.params


def test_trial_run_name_reads_multipliers_then_trial_id():
    assert trial_run_name("3f2a1_00004", 0.4712, 0.666, 0.27) == "r0.47-d0.67-w0.27-3f2a1_00004"


def test_trial_numbers_are_readable_columns():
    numbers = trial_numbers({"r": 0.471234, "d": 1.2, "w": 0.5, "resolution": 128, "flops": 85788736,
                             "params": 1234567, "train_resolution": 64})
    assert numbers == {"r": 0.4712, "d": 1.2, "w": 0.5, "resolution": 128.0, "flops_M": 85.79, "params_M": 1.235}
    assert trial_numbers({"r": 0.5}) == {"r": 0.5}


def test_runs_view_opens_on_the_trials_columns_and_the_searchs_charts():
    order = RUNS_VIEW["columnOrder"]
    assert order[:9] == ["attributes.`Run Name`", "tags.`status`", "tags.`on_front`", "metrics.`r`", "metrics.`d`",
                         "metrics.`w`", "metrics.`top1`", "metrics.`flops_M`", "metrics.`params_M`"]
    assert RUNS_VIEW["runsHiddenMode"] == "SHOW_ALL"  # every trial in the charts, not MLflow's first 10
    shown = [chart for chart in RUNS_VIEW["compareRunCharts"] if not chart["deleted"]]
    assert [chart["type"] for chart in shown] == ["SCATTER", "PARALLEL", "LINE"]
    assert shown[0]["xaxis"]["key"] == "flops_M" and shown[0]["yaxis"]["key"] == "top1"
    assert shown[1]["selectedParams"] == ["r", "d", "w"] and shown[1]["selectedMetrics"] == ["top1"]
    assert shown[2]["metricKey"] == "top1"
    hidden = {chart["metricKey"] for chart in RUNS_VIEW["compareRunCharts"] if chart["deleted"]}
    assert {"r", "d", "w", "flops_M", "params_M", "resolution", "epochs", "hypervolume"} <= hidden
    assert "top1" not in hidden


def test_the_search_run_the_front_and_the_other_trials_have_three_colours():
    tags = search_run_tags({"budget": 200_000_000, "workers": None})
    assert tags == {"setting.budget": "200000000", "mlflow.runColor": SEARCH_COLOR}
    colours = {SEARCH_COLOR, front_tags(True)["mlflow.runColor"], front_tags(False)["mlflow.runColor"]}
    assert colours == {SEARCH_COLOR, FRONT_COLOR, OFF_FRONT_COLOR} and len(colours) == 3


def test_experiment_description_is_plain_text_for_the_list_of_experiments():
    markdown = "**tinyray search `b200M`**: 30 trials.\n\n9 completed; best `t_00004` r=0.5."
    assert plain_text(markdown) == "tinyray search b200M: 30 trials. 9 completed; best t_00004 r=0.5."


def test_experiment_page_opens_the_charts_unless_told_the_table():
    page = experiment_page("http://127.0.0.1:5000/", "7")
    assert page == ("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=tinyray"
                    "&compareRunsMode=CHART")
    assert experiment_page("http://h:1", "7", tinyray_view=False, mode="TABLE").endswith(
        "orderByKey=metrics.%60top1%60&orderByAsc=false&compareRunsMode=TABLE")


def test_a_sqlite_store_s_artifacts_go_beside_it_not_into_the_working_folder(tmp_path, monkeypatch):
    """MLflow's default artifact root for a new experiment is ./mlruns of whatever folder the process runs in: a
    tracker on a sqlite file store puts them beside the database instead, unless told where."""
    from mlflow import MlflowClient

    from tinyray.tracking import Tracker, local_artifact_root, local_tracking_uri

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    store = tmp_path / "store"
    store.mkdir()
    tracker = Tracker(local_tracking_uri(store), "beside")
    parent = tracker.start_search("beside", {"budget": 5})
    client = MlflowClient(tracking_uri=local_tracking_uri(store))
    assert client.get_experiment_by_name("beside").artifact_location == local_artifact_root(store)
    assert client.get_run(parent).info.artifact_uri.startswith(local_artifact_root(store))
    told = Tracker(local_tracking_uri(store), "told", artifact_location=(tmp_path / "elsewhere").as_uri())
    assert client.get_experiment(told.experiment_id).artifact_location == (tmp_path / "elsewhere").as_uri()
    assert not any(work.iterdir())  # nothing in the working folder


def test_the_search_s_sqlite_store_keeps_a_write_ahead_log(finished):
    """The embedded store commits into a write-ahead log (fewer syncs and files a call: docs/benchmarks.md, session
    14); the mode stays with the file, so the UI's server and a resumed search read it the same way."""
    import sqlite3

    from tinyray.tracking import sqlite_file

    database = sqlite_file(finished.tracking_uri)
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 3  # the search's run and 2 trials'


def test_a_store_on_a_network_filesystem_keeps_mlflows_journal_mode(tmp_path, monkeypatch):
    import sqlite3

    from tinyray import tracking

    monkeypatch.setattr(tracking, "filesystem_type", lambda path: "nfs4")
    assert tracking.write_ahead_log(tmp_path / "remote.db") is False
    assert not (tmp_path / "remote.db").exists()  # not even made: MLflow makes it, in its own mode
    monkeypatch.setattr(tracking, "filesystem_type", lambda path: "ext4")
    assert tracking.write_ahead_log(tmp_path / "local.db") is True
    with sqlite3.connect(tmp_path / "local.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # a store that cannot be switched (here a folder where the file should be) keeps going, in its mode
    (tmp_path / "odd.db").mkdir()
    assert tracking.write_ahead_log(tmp_path / "odd.db") is False


def test_the_filesystem_of_a_path_is_its_longest_mount():
    from tinyray.tracking import filesystem_type

    assert filesystem_type(Path("/proc/self")) == "proc"
    assert filesystem_type(Path("/proc/self/no/such/file")) == "proc"  # the nearest existing ancestor's
    assert filesystem_type(Path("/")) != ""


def test_mlflow_request_headers_search_no_path_for_modules_this_python_lacks(monkeypatch):
    """Before each request to a server MLflow probes for Databricks by importing modules; one that is absent was
    searched for on every sys.path entry again, every request. After quiet_mlflow() (every Tracker calls it) the
    first answer is kept: no probe, the same headers, and sys.modules untouched (Ray reads it)."""
    import importlib.machinery
    import importlib.util
    import sys

    from mlflow.tracking.request_header.registry import resolve_request_headers

    from tinyray.tracking import CONTEXT_PROBES, quiet_mlflow

    from mlflow.tracking.request_header.registry import _request_header_provider_registry

    for provider in _request_header_provider_registry:  # as a fresh process has them (earlier Trackers kept answers)
        if "in_context" in vars(provider):
            monkeypatch.delattr(provider, "in_context")
    present = {name for name in CONTEXT_PROBES if importlib.util.find_spec(name) is not None}
    searches = []
    find_spec = importlib.machinery.PathFinder.find_spec

    def counted(name, path=None, target=None):
        searches.append(name)
        return find_spec(name, path, target)

    monkeypatch.setattr(importlib.machinery.PathFinder, "find_spec", counted)
    before = resolve_request_headers()
    probed = {name.partition(".")[0] for name in searches}
    assert probed & set(CONTEXT_PROBES), searches  # this test would see a probe

    quiet_mlflow()
    searches.clear()
    assert resolve_request_headers() == before
    assert not {name.partition(".")[0] for name in searches} & set(CONTEXT_PROBES), searches
    # sys.modules untouched: Ray's ray.init reads "IPython" in sys.modules as "IPython is loaded", MLflow "pyspark"
    assert not {name for name in set(CONTEXT_PROBES) - present if name in sys.modules}


def test_quick_http_hides_urllib3_retry_warnings_nested_and_leaves_logging_levels_alone(caplog):
    """Inside (nested) tracker calls urllib3's retry warnings are dropped, errors are not, and nothing outside is
    touched: no logger's level changes (changing one empties every logger's cache, which a search pays per call)."""
    import logging

    from tinyray.tracking import quick_http

    retries = logging.getLogger("urllib3.connectionpool")
    level, filters = retries.level, list(retries.filters)  # MLflow adds one of its own
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        with quick_http():
            with quick_http():
                retries.warning("retrying 1")
                assert retries.level == logging.WARNING
            retries.warning("retrying 2")
            retries.error("gave up")
        retries.warning("outside")
    assert [record.getMessage() for record in caplog.records] == ["gave up", "outside"]
    assert retries.level == level and retries.filters == filters
