"""In a real browser: the MLflow UI that ``tinyray ui`` serves lists the trials with their columns, and the report reads.

The store is made by a real search (two trials of one epoch on a small built-in dataset, a local Ray, the local
MLflow store), so the runs, the report and the tags are what users get. Headless
Chromium (Debian's ``chromium``) renders the pages; screenshots are kept in ``$TINYRAY_TEST_ARTIFACTS`` (or the
test's temporary folder) and their paths printed. Without Chromium the tests skip, unless
``TINYRAY_REQUIRE_BROWSER=1`` (as ``.ci/run`` sets), where they fail. The last tests (finding the store, the
port-forwarding hint) are fast unit tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tinyray.errors import UserError
from tinyray.search import SearchConfig, run_search
from tinyray.tracking import trial_run_name
from tinyray.ui import check_port, experiment_url, find_store, serve, start_server


NAME = "b60M"
COLUMNS = ["r", "d", "w", "top1", "flops_M", "params_M", "resolution", "epochs"]


def chromium() -> str:
    for name in (os.environ.get("TINYRAY_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return str(shutil.which(name))
    reason = "headless Chromium is not installed: apt-get install chromium (.ci/run installs it)"
    if os.environ.get("TINYRAY_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + "; TINYRAY_REQUIRE_BROWSER=1 demands it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = os.environ.get("TINYRAY_TEST_ARTIFACTS")
    path = Path(folder) / "test_ui" if folder else tmp_path_factory.mktemp("browser")
    path.mkdir(parents=True, exist_ok=True)
    return path


def browse(url: str, *, screenshot: Path | None = None, until=None, size: str = "2400,1200") -> str:
    """The DOM of ``url`` after rendering in headless Chromium (and a screenshot); retried while ``until`` fails."""
    binary = chromium()
    dom = ""
    for budget in (15000, 30000, 60000):  # virtual time: how long the page may run its scripts and requests
        with tempfile.TemporaryDirectory(prefix="tinyray-chromium-") as profile:
            command = [binary, "--headless", "--disable-gpu", f"--user-data-dir={profile}", f"--window-size={size}",
                       "--hide-scrollbars", f"--virtual-time-budget={budget}", "--no-first-run"]
            if os.geteuid() == 0:
                command.append("--no-sandbox")  # Chromium refuses to sandbox as root
            dom = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
            if screenshot is not None:
                subprocess.run([*command, f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
        if until is None or until(dom):
            break
    if screenshot is not None:
        assert screenshot.read_bytes()[:4] == b"\x89PNG"
        print(f"screenshot: {screenshot}")
    return dom


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A store and results folder holding one finished search: a real two-trial search with Ray and MLflow."""
    from tinyray.data import DataSpec
    from tinyray.tracking import trial_run_name

    root = tmp_path_factory.mktemp("ui")
    config = SearchConfig(budget=60_000_000, name=NAME, storage=root / "results", trials=2, max_epochs=1,
                          data=DataSpec(train_size=300, val_size=100, cache_dir=root / "cache"), progress="quiet")
    result = run_search(config)
    result.labels = {trial_run_name(row.trial_id, row.r, row.d, row.w) for row in result.trials.itertuples()}
    return result


def table_rows(dom: str) -> list[str]:
    """Run names of the runs table, top to bottom (the grid's DOM order is not its visual order: use row-index)."""
    row_of = {run: int(index) for index, run in re.findall(r'row-index="(\d+)" row-id="([0-9a-f]{32})"', dom)}
    name_of = dict(re.findall(r'href="#/experiments/\d+/runs/([0-9a-f]{32})"><span[^>]*>([^<]+)</span>', dom))
    return [name_of.get(run, "?") for run in sorted(row_of, key=row_of.get)]


def column_ids(dom: str) -> set[str]:
    return set(re.findall(r'role="columnheader"[^>]*col-id="([^"]+)"', dom))


def column_order(dom: str) -> list[str]:
    """The runs table's column ids, left to right (by the grid's ``aria-colindex``)."""
    found = {}
    for header in re.findall(r'<div[^>]*role="columnheader"[^>]*>', dom):
        index, column = re.search(r'aria-colindex="(\d+)"', header), re.search(r'col-id="([^"]+)"', header)
        if index and column:
            found[column.group(1)] = int(index.group(1))
    return sorted(found, key=found.get)


@pytest.fixture(scope="module")
def server(search):
    """The MLflow UI on the search's store, as ``tinyray ui`` starts it, on a free port of 127.0.0.1."""
    with start_server(find_store(search.results_dir), port=0) as running:
        yield running


@pytest.mark.slow
@pytest.mark.integration
def test_runs_table_lists_every_trial_with_its_columns(search, server, artifacts):
    url = experiment_url(server.url, NAME, "TABLE")
    assert url.startswith(f"{server.url}/#/experiments/{search.experiment_id}/runs?")

    def ready(dom: str) -> bool:
        return all(label in dom for label in search.labels) and "tags.`on_front`" in column_ids(dom)

    dom = browse(url, screenshot=artifacts / "mlflow-runs.png", until=ready)
    for label in search.labels:
        assert label in dom, f"trial run {label} is not listed"
    columns = column_ids(dom)
    for key in COLUMNS:
        assert f"metrics.`{key}`" in columns
    assert {"tags.`status`", "tags.`on_front`", "attributes.`Run Name`"} <= columns
    # the first columns after the run's name and age: what a trial is and how it did, in readable units
    order = [column for column in column_order(dom) if column.startswith(("tags.", "metrics."))]
    assert order[:8] == ["tags.`status`", "tags.`on_front`", "metrics.`r`", "metrics.`d`", "metrics.`w`",
                         "metrics.`top1`", "metrics.`flops_M`", "metrics.`params_M`"], order
    assert not any(column.startswith("params.") for column in columns)  # the search's settings are tags
    # flat (trials not folded under the search's run), most accurate first
    trials = search.trials.sort_values("top1", ascending=False, kind="stable")
    ranked = [trial_run_name(row.trial_id, row.r, row.d, row.w) for row in trials.itertuples()]
    if trials["top1"].is_unique:  # equal top-1s may come in either order
        assert table_rows(dom)[: len(ranked)] == ranked
    assert sorted(table_rows(dom)[: len(ranked)]) == sorted(ranked)
    for status in set(search.trials["status"]):
        assert f">{status}<" in dom


@pytest.mark.slow
@pytest.mark.integration
def test_chart_view_opens_on_the_searchs_three_charts_and_no_constants(search, server, artifacts):
    url = experiment_url(server.url, NAME)  # what tinyray ui prints: the charts, not the table
    assert url.endswith("&compareRunsMode=CHART")
    titles = (">flops_M vs. top1<", ">Parallel Coordinates<", ">top1<")

    def ready(dom: str) -> bool:
        return all(title in dom for title in titles)

    dom = browse(url, screenshot=artifacts / "mlflow-charts.png", size="1600,1400", until=ready)
    for title in titles:
        assert title in dom, f"chart {title} is not shown"
    # the section holds those three charts only: no bar chart of r, d, w, FLOPs or the search run's counters
    count = re.search(r'Model metrics</div><div[^>]*>\((\d+)\)', dom)
    assert count and count.group(1) == "3", count
    assert ">resolution<" not in dom and ">hypervolume<" not in dom


@pytest.mark.slow
@pytest.mark.integration
def test_trial_run_page_is_the_training_run_page_with_params_and_metrics(search, server, artifacts):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=search.tracking_uri)
    run = next(run for run in client.search_runs([search.experiment_id]) if run.data.tags.get("tinyray.kind") == "trial")
    # the address as the runs table links it: no workflowType, in a fresh browser (whose workflow switch is GenAI)
    url = f"{server.url}/#/experiments/{search.experiment_id}/runs/{run.info.run_id}"
    dom = browse(url, screenshot=artifacts / "mlflow-trial-run.png", size="1600,1400",
                 until=lambda dom: "experiment-observatory-link-runs" in dom and "Parameters (" in dom)
    crumb = re.search(r'data-testid="experiment-observatory-link-runs" href="([^"]*)">([^<]*)<', dom)
    assert crumb and crumb.groups() == (f"#/experiments/{search.experiment_id}/runs", "Runs"), crumb
    assert "Evaluations" not in dom
    assert f"Parameters ({len(run.data.params)})" in dom and f"Metrics ({len(run.data.metrics)})" in dom
    for key in ("train_resolution", "top1", "flops_M"):
        assert f">{key}<" in dom
    assert run.info.run_name in dom


@pytest.fixture(scope="module")
def formula_experiment(search, space):
    """A second experiment in the search's store whose search run published a tiny formula (fitted on a made-up
    front: the two-trial search has too few points), as every search with a front of 3 or more does."""
    from test_formula import NUM_CLASSES, synthetic_front

    from tinyray.formula import fit_formula, publish
    from tinyray.tracking import Tracker, local_artifact_root, local_tracking_uri

    storage = search.results_dir.parent
    folder = storage / "formula-shown"
    folder.mkdir()
    formula = fit_formula(synthetic_front(), space, NUM_CLASSES, seed=0, source="synthetic", budget=100_000_000)
    tracker = Tracker(local_tracking_uri(storage), "formula-shown", artifact_location=local_artifact_root(storage))
    run_id = tracker.start_search("formula-shown", {"budget": 100_000_000})
    published = publish(formula, tracker, run_id, folder, model_name="tinynet-formula-ui", search="formula-shown")
    tracker.finish(run_id)
    return tracker.experiment_id, published


@pytest.mark.slow
@pytest.mark.integration
def test_models_tab_lists_the_formulas_logged_model_and_its_version(formula_experiment, server, artifacts):
    experiment_id, published = formula_experiment
    url = f"{server.url}/#/experiments/{experiment_id}/models?workflowType=machine_learning"
    dom = browse(url, screenshot=artifacts / "mlflow-models.png", size="1600,900",
                 until=lambda dom: "formula_model" in dom and "tinynet-formula-ui" in dom)
    assert "formula_model" in dom  # the logged model, named as its runs:/<run>/formula_model URI
    assert "tinynet-formula-ui" in dom  # and the registered version made from it
    assert published["model_uri"] == "models:/tinynet-formula-ui/1"


@pytest.mark.slow
@pytest.mark.integration
def test_experiment_list_shows_the_description_as_plain_text(search, server, artifacts):
    first = f"tinyray search {NAME}: 2 trials of (r, d, w)"
    dom = browse(f"{server.url}/#/experiments", screenshot=artifacts / "mlflow-experiments.png", size="1600,700",
                 until=lambda dom: first in dom)
    assert first in dom and "**tinyray search" not in dom


@pytest.mark.slow
@pytest.mark.integration
def test_parent_run_shows_the_search_files(search, server, artifacts):
    url = (f"{server.url}/#/experiments/{search.experiment_id}/runs/{search.parent_run_id}/artifacts"
           "?workflowType=machine_learning")
    names = ("report.html", "importance.png", "importance.csv", "trials.csv", "front.png", "summary.json")
    dom = browse(url, screenshot=artifacts / "mlflow-parent-artifacts.png", size="1600,1000",
                 until=lambda dom: all(name in dom for name in names))
    for name in names:
        assert name in dom


@pytest.mark.slow
@pytest.mark.integration
def test_report_page_renders_every_section(search, artifacts):
    page = search.results_dir / "report.html"
    dom = browse(page.as_uri(), screenshot=artifacts / "report.png", size="1100,3000")
    for heading in ("tinyray search", "Accuracy / FLOPs front", "Which of r, d, w matters", "Best trial per budget"):
        assert heading in dom
    assert 'id="importance-table"' in dom and 'id="best-table"' in dom
    assert not (search.results_dir / "formula.json").exists()  # two trials: too few front points for a formula
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) == 2  # front and importance


@pytest.mark.slow
@pytest.mark.integration
def test_tinyray_ui_serves_until_interrupted_then_frees_the_port(search):
    process = subprocess.Popen(
        [sys.executable, "-m", "tinyray", "ui", str(search.results_dir), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("press Ctrl-C"):
                break
        text = "".join(lines)
        url = re.search(r"MLflow UI for search 'b60M': (http://127\.0\.0\.1:(\d+)/#/experiments/\S+)", text)
        assert url, text + process.stderr.read() if process.poll() is not None else text
        port = int(url.group(2))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=60) == 0
        check_port("127.0.0.1", port)  # the server is gone with it
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
@pytest.mark.integration
def test_an_unknown_search_in_a_real_store_is_one_line_and_stops_the_server(search, capsys):
    other = search.results_dir.parent / "no-such-search"
    other.mkdir(exist_ok=True)
    with pytest.raises(UserError, match="has no experiment 'no-such-search'"):
        serve(other, port=0)
    assert "press Ctrl-C" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.integration
def test_store_holds_what_the_table_and_the_search_run_need(search):
    from mlflow import MlflowClient

    from tinyray.tracking import FRONT_COLOR, OFF_FRONT_COLOR, RUNS_VIEW, RUNS_VIEW_KEY, SEARCH_COLOR

    client = MlflowClient(tracking_uri=search.tracking_uri)
    experiment = client.get_experiment(search.experiment_id)
    assert f"mlflow.sharedViewState.{RUNS_VIEW_KEY}" in experiment.tags
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    children = [run for run in client.search_runs([search.experiment_id]) if run.info.run_id != search.parent_run_id]
    assert len(children) == len(search.trials) == 2
    for run in children:
        assert set(COLUMNS) - {"top1"} <= set(run.data.metrics)  # numbers to sort by, even for a failed trial
        assert run.data.metrics["flops_M"] == round(int(run.data.params["flops"]) / 1e6, 2)
    for run in children:  # the front's trials are red in every chart
        on_front = run.data.tags["on_front"] == "true"
        assert run.data.tags["mlflow.runColor"] == (FRONT_COLOR if on_front else OFF_FRONT_COLOR)
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"])
    assert view == json.loads(json.dumps(RUNS_VIEW))
    parent = client.get_run(search.parent_run_id)
    assert not parent.data.params and parent.data.tags["setting.budget"] == "60000000"
    description = parent.data.tags["mlflow.note.content"]
    for name in ("report.html", "trials.csv", "importance.png", "summary.json"):
        assert name in description
    counts = search.counts()
    told = f"{counts['completed']} completed, {counts['early-stopped']} early-stopped, {counts['failed']} failed"
    assert told in description
    assert told in experiment.tags["mlflow.note.content"]
    # the list of experiments shows the description raw: plain text, no Markdown marks
    assert experiment.tags["mlflow.note.content"].startswith(f"tinyray search {NAME}: 2 trials")
    assert not re.search(r"\*\*|`|\n", experiment.tags["mlflow.note.content"])
    assert parent.data.tags["mlflow.runColor"] == SEARCH_COLOR  # the search's run apart from every trial
    # Tune's per-trial files without TensorBoard's (not a dependency; MLflow has the curves)
    assert list(search.results_dir.glob("trial_*/result.json"))
    assert not list(search.results_dir.rglob("events.out.tfevents*"))
    summary = (search.results_dir / "summary.json").read_text()
    assert '"version": 1' in summary and '"budget": 60000000' in summary


def test_forwarding_hint_names_this_machine_inside_ssh(monkeypatch):
    from tinyray.ui import forwarding_hint

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    assert forwarding_hint(5000) is None
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.9 51234 10.0.0.5 22")
    assert forwarding_hint(5001).startswith("ssh -N -L 5001:127.0.0.1:5001 ") and "@10.0.0.5" in forwarding_hint(5001)
    monkeypatch.delenv("SSH_CONNECTION")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert "HEAD-NODE" in forwarding_hint(5000) and "ray attach" in forwarding_hint(5000)


def test_find_store_from_a_search_folder_or_a_storage_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlflow.db").touch()
    (tmp_path / "b200M").mkdir()
    store = find_store(tmp_path / "b200M")
    assert store.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}" and store.experiment == "b200M"
    assert store.artifact_root == (tmp_path / "mlartifacts").as_uri()
    assert find_store(tmp_path).experiment is None  # a storage root: every search
    remote = find_store(tmp_path / "b200M", "http://127.0.0.1:5000")
    assert remote.is_server and remote.experiment == "b200M"
