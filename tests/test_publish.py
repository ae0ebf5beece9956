"""Tracking outages: a search goes on when MLflow is away, and ``tinyray publish`` sends what MLflow missed, once.

The slow tests run real searches against a real ``mlflow server`` subprocess that is stopped mid-search (or never
reachable) and restarted on the same store and port before publishing.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tinyray.cli import main
from tinyray.errors import UserError
from tinyray.files import read_results_csv
from tinyray.formula import Formula, fit_metrics
from tinyray.publish import publish
from tinyray.tracking import (EPOCH_METRICS, FRONT_COLOR, OFF_FRONT_COLOR, SEARCH_COLOR, Tracker, local_tracking_uri,
                              read_journal, trial_run_name)

BUDGET = 100_000_000
NUM_CLASSES = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def offline_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tinyray.tracking" and "offline" in r.getMessage()]


# -- a results folder made by hand (what a finished search leaves, without running one) -------------------------
def make_results(root: Path, space, name: str = "hand", formula: bool = True, trainer: str | None = None) -> Path:
    """A search's results folder with 6 trials (5 completed on a front, 1 early-stopped), front and formula."""
    from tinyray.cost import analytic_cost, base_flops
    from tinyray.formula import fit_formula, plot_formula
    from tinyray.front import front_table, plot_front

    results = root / name
    results.mkdir(parents=True)
    info = {"version": 1, "config": {"name": name, "budget": BUDGET, "storage": str(root), "trials": 6, "max_epochs": 2,
                                     "searcher": "random", "scheduler": "asha", "seed": 0,
                                     "formula_name": f"tinynet-formula-{name}",
                                     **({"trainer": trainer} if trainer else {})},  # None: from before --trainer
            "space_file": str(space.source), "space": space.name, "data": "synthetic", "num_classes": NUM_CLASSES,
            "base_flops": base_flops(space, NUM_CLASSES), "recipe": "proxy"}
    (results / "search.json").write_text(json.dumps(info))
    rows = []
    points = [(0.4, 0.4, 0.4), (0.5, 0.5, 0.45), (0.6, 0.6, 0.5), (0.7, 0.7, 0.55), (0.8, 0.8, 0.6), (0.5, 0.3, 0.3)]
    for index, (r, d, w) in enumerate(points):
        trial_id = f"hand{index:05d}"
        cost = analytic_cost(space, r, d, w, NUM_CLASSES)
        epochs = 1 if index == 5 else 2
        folder = results / f"trial_{trial_id}"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps({"r": r, "d": d, "w": w}))
        lines = []
        for epoch in range(1, epochs + 1):
            top1 = 0.3 + 0.1 * index + 0.02 * epoch if index < 5 else 0.2
            lines.append(json.dumps({
                "top1": top1, "val_loss": 2.0 - top1, "train_loss": 2.1 - top1, "images_per_second": 500.0 + index,
                "epoch_seconds": 1.5, "epoch": epoch, "training_iteration": epoch, "trial_id": trial_id,
                "timestamp": 1_700_000_000 + 10 * index + epoch, "r": r, "d": d, "w": w, "flops": cost.flops,
                "params": cost.params, "resolution": cost.resolution, "train_resolution": round(64 * r),
            }))
        (folder / "result.json").write_text("\n".join(lines) + "\n")
        rows.append({"trial_id": trial_id, "r": r, "d": d, "w": w, "resolution": cost.resolution,
                     "train_resolution": round(64 * r), "flops": cost.flops, "params": cost.params, "epochs": epochs,
                     "top1": json.loads(lines[-1])["top1"], "status": "completed" if epochs == 2 else "early-stopped",
                     "node_id": "n", "train_seconds": 3.0})
    trials = pd.DataFrame(rows)
    front = front_table(trials)
    trials["on_front"] = trials["trial_id"].isin(set(front["trial_id"]))
    trials.to_csv(results / "trials.csv", index=False)
    front.to_csv(results / "front.csv", index=False)
    plot_front(trials, front, BUDGET, results / "front.png")
    if formula:
        fitted = fit_formula(front, space, NUM_CLASSES, seed=0, source=str(results))
        fitted.save(results / "formula.json")
        plot_formula(fitted, results / "formula.png")
    return results


def mlflow_state(client, experiment_id: str, search_id: str) -> dict:
    """Everything publish may touch, for comparing before and after."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`tinyray.search_id` = '{search_id}'",
                              max_results=1000)
    state = {}
    for run in runs:
        history = {key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
                   for key in run.data.metrics}
        state[run.info.run_id] = {"tags": dict(run.data.tags), "params": dict(run.data.params), "history": history,
                                  "status": run.info.status,
                                  "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id))}
    return state


def logged_models(client, experiment_id: str, run_id: str) -> list:
    """The MLflow 3 logged models the run made (what the experiment's Models tab lists for it)."""
    return [model for model in client.search_logged_models([experiment_id]) if model.source_run_id == run_id]


def check_published(client, results: Path) -> dict:
    """MLflow holds the results folder exactly once: one parent, one child per trial with every epoch, the files."""
    journal = read_journal(results)
    assert journal["status"] == "complete"
    experiment = client.get_experiment_by_name(journal["experiment"])
    state = mlflow_state(client, experiment.experiment_id, journal["search_id"])
    parents = [run_id for run_id, run in state.items() if run["tags"]["tinyray.kind"] == "search"]
    assert parents == [journal["parent_run_id"]]
    parent = state[parents[0]]
    trainer = json.loads((results / "search.json").read_text())["config"].get("trainer", "train")
    children = {run["tags"]["trial_id"]: run for run in state.values() if run["tags"]["tinyray.kind"] == "trial"}
    assert len(children) == len(state) - 1  # no trial has two runs
    trials = read_results_csv(results / "trials.csv")
    assert set(children) == set(trials["trial_id"])
    for row in trials.itertuples():
        child = children[row.trial_id]
        assert child["tags"]["mlflow.parentRunId"] == parents[0]
        assert child["tags"]["status"] == row.status and child["tags"]["epochs"] == str(row.epochs)
        assert child["tags"]["trainer"] == trainer  # as the search's own tracking tags its trials' runs
        assert child["tags"]["on_front"] == str(bool(row.on_front)).lower()
        assert child["tags"]["mlflow.runColor"] == (FRONT_COLOR if row.on_front else OFF_FRONT_COLOR)
        assert child["status"] == "FINISHED"
        steps = [json.loads(line)["training_iteration"]
                 for line in (results / f"trial_{row.trial_id}" / "result.json").read_text().splitlines()]
        assert steps == list(range(1, row.epochs + 1))
        for key in EPOCH_METRICS:
            assert child["history"][key] == steps, (row.trial_id, key)
        assert child["history"]["epochs"] == [row.epochs]
        assert float(child["params"]["r"]) == row.r and int(child["params"]["flops"]) == row.flops
    files = {"trials.csv", "front.csv", "front.png"}
    if (results / "formula.json").is_file():
        files |= {"formula.json", "formula.png", "formula_model"}
        assert parent["tags"]["formula_model_uri"].startswith("models:/")
    assert files <= set(parent["artifacts"])
    if (results / "formula.json").is_file():  # one logged model of the parent (the Models tab), linked to its version
        (logged,) = logged_models(client, experiment.experiment_id, parents[0])  # a second publish logs no other
        assert str(logged.status) == "READY"
        assert {metric.key for metric in logged.metrics} == set(fit_metrics(Formula.load(results / "formula.json")))
        version = parent["tags"]["formula_model_uri"].rsplit("/", 1)[1]
        # (an `mlflow server` writes the version as a number, a local store as text)
        assert [str(entry["version"]) for entry in json.loads(logged.tags["mlflow.modelVersions"])] == [version]
    assert parent["tags"]["mlflow.runColor"] == SEARCH_COLOR  # the search's own colour in every chart
    assert parent["status"] == "FINISHED"
    assert parent["tags"]["setting.budget"] == str(json.loads((results / "search.json").read_text())["config"]["budget"])
    return state


# -- fast: the tracker's guard, and publish onto a local store ---------------------------------------------------
def test_tracker_offline_from_the_start_warns_once_and_journals(tmp_path, caplog):
    uri = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="tinyray.tracking"):
        tracker = Tracker(uri, "nowhere", journal=tmp_path / "tracking.json")
        parent = tracker.start_search("nowhere", {"budget": 5})
        assert parent is None and tracker.offline
        assert tracker.start_trial(parent, "t1", "r0.5_d0.5_w0.5", {"r": 0.5}) is None
        tracker.log_metrics(parent, {"top1": 0.5}, step=1)
        tracker.log_artifacts(parent, [tmp_path / "tracking.json"])
        tracker.finish(parent)
        assert tracker.runs() == []
        assert tracker.attempt("anything", lambda: 1 / 0) is None  # not even called once offline
    [warning] = offline_warnings(caplog)
    assert uri in warning and f"tinyray publish {tmp_path}" in warning
    journal = read_journal(tmp_path)
    assert journal["status"] == "offline" and journal["parent_run_id"] is None
    assert journal["parent"]["params"] == {"budget": 5}
    assert journal["trials"] == {"t1": {"run_name": "r0.5_d0.5_w0.5", "params": {"r": 0.5}}}
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the quick settings do not leak


def test_trials_are_appended_to_the_journal_and_folded_in_when_it_is_written_whole(tmp_path):
    from tinyray.tracking import JOURNAL_NAME, JOURNAL_TRIALS_NAME

    tracker = Tracker(f"http://127.0.0.1:{free_port()}", "appended", journal=tmp_path / JOURNAL_NAME)
    tracker.start_search("appended", {"budget": 5})  # offline: runs are journalled, not made
    whole = (tmp_path / JOURNAL_NAME).read_text()
    for number in range(3):
        tracker.start_trial(None, f"t{number}", f"run {number}", {"r": 0.5 + number / 10})
    assert (tmp_path / JOURNAL_NAME).read_text() == whole  # a new trial does not rewrite the whole journal
    lines = (tmp_path / JOURNAL_TRIALS_NAME).read_text().splitlines()
    assert len(lines) == 3
    with open(tmp_path / JOURNAL_TRIALS_NAME, "a") as file:
        file.write('{"trial_id": "t9", "run_na')  # cut short by a crash: skipped
    journal = read_journal(tmp_path)
    assert set(journal["trials"]) == {"t0", "t1", "t2"} and journal["trials"]["t2"]["params"] == {"r": 0.7}
    tracker.finish(None)
    tracker._save_journal()  # the search's end writes it whole: the appended trials are folded in
    assert not (tmp_path / JOURNAL_TRIALS_NAME).exists()
    assert set(read_journal(tmp_path)["trials"]) == {"t0", "t1", "t2"}
    again = Tracker(f"http://127.0.0.1:{free_port()}", "appended", journal=tmp_path / JOURNAL_NAME)
    assert again.search_id == tracker.search_id and set(again.journal["trials"]) == {"t0", "t1", "t2"}


def test_a_driver_killed_while_making_a_trials_run_does_not_get_it_a_second_run(tmp_path):
    from tinyray.tracking import JOURNAL_NAME, JOURNAL_TRIALS_NAME

    tracker = Tracker(local_tracking_uri(tmp_path), "window", journal=tmp_path / JOURNAL_NAME)
    parent = tracker.start_search("window", {"budget": 5})
    run = tracker.start_trial(parent, "t1", "trial one", {"r": 0.5})
    journal = tmp_path / JOURNAL_TRIALS_NAME
    lines = journal.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["run_id"] is None and json.loads(lines[1])["run_id"] == run
    journal.write_text(lines[0] + "\n")  # killed after the run was made, before its id was journalled
    again = Tracker(local_tracking_uri(tmp_path), "window", journal=tmp_path / JOURNAL_NAME)
    assert "t1" in again.journal["trials"] and "t1" not in again.journal["trial_runs"]
    assert again.start_trial(parent, "t1", "trial one", {"r": 0.5}) == run  # found by its tags, reopened
    runs = [r for r in again.runs() if r.data.tags.get("tinyray.kind") == "trial"]
    assert [r.info.run_id for r in runs] == [run] and read_journal(tmp_path)["trial_runs"] == {"t1": run}


def test_tracker_goes_offline_mid_search_and_stays_offline(tmp_path, caplog):
    tracker = Tracker(local_tracking_uri(tmp_path), "midway", journal=tmp_path / "tracking.json")
    parent = tracker.start_search("midway", {"budget": 5})
    run = tracker.start_trial(parent, "t1", "trial one", {"r": 0.5})
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("server went away")

    tracker.client.log_batch = broken  # the store fails from here on
    with caplog.at_level(logging.WARNING, logger="tinyray.tracking"):
        tracker.log_metrics(run, {"top1": 0.5}, step=1)
        tracker.log_metrics(run, {"top1": 0.6}, step=2)
        tracker.set_tags(run, {"status": "completed"})
        assert tracker.start_trial(parent, "t2", "trial two", {"r": 0.6}) is None
        tracker.finish(parent)
    assert len(calls) == 1 and len(offline_warnings(caplog)) == 1
    journal = read_journal(tmp_path)
    assert journal["status"] == "offline" and journal["parent_run_id"] == parent
    assert journal["trial_runs"] == {"t1": run} and set(journal["trials"]) == {"t1", "t2"}


@pytest.mark.integration
def test_publish_onto_an_empty_local_store_then_nothing_twice(space, tmp_path, capsys):
    from mlflow import MlflowClient

    results = make_results(tmp_path / "results", space)
    uri = local_tracking_uri(tmp_path / "elsewhere")
    first = publish(results, uri)
    assert first.parent_created and first.runs_created == 6 and first.runs_found == 0
    assert first.metric_values == 5 * 2 * len(EPOCH_METRICS) + len(EPOCH_METRICS) + 6 + 2
    assert sorted(first.artifacts) == sorted(["trials.csv", "front.csv", "front.png", "formula.json", "formula.png",
                                              "formula_model"])
    assert first.model_registered and first.model_logged and first.model_uri == "models:/tinynet-formula-hand/1"
    client = MlflowClient(tracking_uri=uri)
    state = check_published(client, results)
    names = {run["tags"]["trial_id"]: run["tags"]["mlflow.runName"] for run in state.values()
             if run["tags"]["tinyray.kind"] == "trial"}
    trials = read_results_csv(results / "trials.csv")
    assert names == {row.trial_id: trial_run_name(row.trial_id, row.r, row.d, row.w) for row in trials.itertuples()}
    assert names["hand00001"] == "r0.50-d0.50-w0.45-hand00001"
    early = [run for run in state.values() if run["tags"].get("status") == "early-stopped"]
    assert len(early) == 1 and early[0]["history"]["top1"] == [1]

    second = publish(results, uri)
    assert second.sent == 0 and second.runs_found == 6 and second.parent_run_id == first.parent_run_id
    assert check_published(client, results) == state
    assert len(client.search_model_versions("name = 'tinynet-formula-hand'")) == 1
    # the command line, defaulting to the URI the folder now records
    code = main(["publish", str(results)])
    out = capsys.readouterr().out
    assert code == 0 and "nothing to send" in out
    assert check_published(client, results) == state

    # published by a tinyray before logged models: the run's artifact and the version exist, the logged model not
    (old,) = logged_models(client, first.experiment_id, first.parent_run_id)
    client.delete_logged_model(old.model_id)
    third = publish(results, uri)
    assert third.model_logged and not third.model_registered and third.artifacts == [] and third.tags == 1  # the link
    assert "the formula's logged model" in third.line()
    # MLflow records a logged model's metrics on the run that logs them too: the new model's add a point at step 0
    refit = {key: [0, 0] for key in fit_metrics(Formula.load(results / "formula.json"))}
    state[first.parent_run_id]["history"].update(refit)
    assert check_published(client, results) == state
    assert [model.model_id for model in logged_models(client, first.experiment_id, first.parent_run_id)] != [old.model_id]


@pytest.mark.integration
def test_publish_gives_the_formulas_logged_model_its_fit_metrics_once(space, tmp_path, monkeypatch):
    import tinyray.formula
    from mlflow import MlflowClient

    results = make_results(tmp_path / "results", space)
    uri = local_tracking_uri(tmp_path / "store")
    monkeypatch.setattr(tinyray.formula, "log_fit_metrics", lambda *args: None)  # as a tinyray before them logged it
    first = publish(results, uri)
    monkeypatch.undo()
    client = MlflowClient(tracking_uri=uri)
    (logged,) = logged_models(client, first.experiment_id, first.parent_run_id)
    assert not logged.metrics
    second = publish(results, uri)
    expected = fit_metrics(Formula.load(results / "formula.json"))
    assert second.metric_values == second.sent == len(expected) and not second.model_logged
    metrics = {metric.key: metric.value for metric in client.get_logged_model(logged.model_id).metrics}
    assert metrics == pytest.approx(expected)
    assert publish(results, uri).sent == 0


def test_publish_tags_a_replayed_searchs_trial_runs(space, tmp_path):
    from mlflow import MlflowClient

    results = make_results(tmp_path / "results", space, name="replayed", formula=False, trainer="replay")
    uri = local_tracking_uri(tmp_path / "elsewhere")
    assert publish(results, uri).runs_created == 6
    state = check_published(MlflowClient(tracking_uri=uri), results)
    trials = [run for run in state.values() if run["tags"]["tinyray.kind"] == "trial"]
    assert len(trials) == 6 and all(run["tags"]["trainer"] == "replay" for run in trials)


@pytest.mark.integration
def test_publish_fills_in_a_partial_copy(space, tmp_path):
    """A run that reached MLflow with part of its epochs gets only the missing ones; a missing run is created."""
    from mlflow import MlflowClient

    results = make_results(tmp_path / "results", space)
    uri = local_tracking_uri(tmp_path)
    tracker = Tracker(uri, "hand", journal=results / "tracking.json")
    parent = tracker.start_search("hand", {"budget": BUDGET})
    run = tracker.start_trial(parent, "hand00000", "r0.4", {"r": 0.4})
    tracker.log_metrics(run, {"top1": 0.42, "val_loss": 1.58}, step=1)
    report = publish(results, uri)
    assert not report.parent_created and report.runs_found == 1 and report.runs_created == 5
    client = MlflowClient(tracking_uri=uri)
    state = check_published(client, results)
    assert state[run]["params"]["r"] == "0.4" and "flops" in state[run]["params"]  # missing params added
    history = sorted(client.get_metric_history(run, "top1"), key=lambda m: m.step)
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.42), (2, 0.34)]  # step 1 kept as MLflow had it


def test_publish_refuses_what_is_not_a_search(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        publish(tmp_path / "nothing")
    with pytest.raises(UserError, match="no search.json"):
        publish(tmp_path)
    (tmp_path / "search.json").write_text("{not json")
    with pytest.raises(UserError, match="damaged"):
        publish(tmp_path)


def test_publish_to_an_unreachable_server_is_one_line_and_changes_nothing(space, tmp_path, capsys):
    results = make_results(tmp_path, space, formula=False)
    before = {path: path.read_bytes() for path in results.rglob("*") if path.is_file()}
    code = main(["publish", str(results), "--tracking-uri", f"http://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot publish to MLflow" in err and "connection refused" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {path: path.read_bytes() for path in results.rglob("*") if path.is_file()} == before


# -- slow: real searches against a real MLflow server --------------------------------------------------------------
class MlflowServer:
    """``mlflow server`` in its own process group on 127.0.0.1, restartable on the same store and port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.root / 'db'}", "--artifacts-destination", str(self.root / "art"),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        log.close()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("mlflow server did not answer /health")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # uvicorn runs in a child: stop the whole group we started
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:  # stragglers of the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def small_search(root: Path, name: str, tracking_uri: str):
    from tinyray.data import DataSpec
    from tinyray.search import SearchConfig

    return SearchConfig(
        budget=60_000_000, name=name, storage=root / "results", tracking_uri=tracking_uri,
        data=DataSpec(train_size=300, val_size=100, cache_dir=root / "cache"), trials=4, max_epochs=2,
        grace_period=1, reduction_factor=2, pop_size=4, seed=1, progress="quiet",
        formula_name=f"tinynet-formula-{name}",
    )


@pytest.mark.slow
@pytest.mark.integration
def test_server_stopped_mid_search_then_published_once(server, tmp_path, caplog, monkeypatch, capsys):
    from mlflow import MlflowClient

    import tinyray.search as search

    if not server.up:
        server.start()
    config = small_search(tmp_path, "outage", server.uri)
    results = config.results_dir
    stopped = threading.Event()

    def stop_after_the_first_result() -> None:
        while not any(path.stat().st_size for path in results.glob("trial_*/result.json")):
            time.sleep(0.2)
        server.stop()
        stopped.set()

    threading.Thread(target=stop_after_the_first_result, daemon=True).start()
    finish = search._finish

    def finish_once_stopped(*args, **kwargs):  # the server is surely gone before the search's last writes
        assert stopped.wait(1800)
        return finish(*args, **kwargs)

    monkeypatch.setattr(search, "_finish", finish_once_stopped)
    with caplog.at_level(logging.WARNING, logger="tinyray.tracking"):
        result = search.run_search(config)

    # the search went on: every trial is in the results folder, and it said so once
    [warning] = offline_warnings(caplog)
    assert f"tinyray publish {results}" in warning
    trials = read_results_csv(results / "trials.csv")
    assert len(trials) == 4 and (trials["status"] != "failed").all()
    assert result.tracking_offline and f"tinyray publish {results}" in result.report()
    assert result.summary()["publish_command"] == f"tinyray publish {results}"
    journal = read_journal(results)
    assert journal["status"] == "offline" and journal["parent_run_id"] == result.parent_run_id is not None

    server.start()  # same store, same port
    client = MlflowClient(tracking_uri=server.uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "RUNNING"  # MLflow missed the end of the search
    assert "trials.csv" not in {a.path for a in client.list_artifacts(result.parent_run_id)}

    code = main(["publish", str(results)])  # the recorded tracking URI
    assert code == 0 and "published" in capsys.readouterr().out
    state = check_published(client, results)
    assert read_journal(results)["parent_run_id"] == result.parent_run_id  # the search's own run, completed

    code = main(["publish", str(results), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["sent"] == 0
    assert check_published(client, results) == state


@pytest.mark.slow
@pytest.mark.integration
def test_server_down_from_the_start_then_published(server, tmp_path, caplog, capsys):
    from mlflow import MlflowClient

    from tinyray.search import run_search

    dead = f"http://127.0.0.1:{free_port()}"
    config = small_search(tmp_path, "never-up", dead)
    with caplog.at_level(logging.WARNING, logger="tinyray.tracking"):
        result = run_search(config)
    assert len(offline_warnings(caplog)) == 1
    results = config.results_dir
    assert len(read_results_csv(results / "trials.csv")) == 4
    journal = read_journal(results)
    assert journal["status"] == "offline" and journal["parent_run_id"] is None and len(journal["trials"]) == 4
    assert result.parent_run_id is None and "tracking: offline" in result.report()

    if not server.up:
        server.start()
    code = main(["publish", str(results), "--tracking-uri", server.uri])
    assert code == 0 and "parent run" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=server.uri)
    state = check_published(client, results)
    code = main(["publish", str(results)])  # now the folder records the server it was published to
    assert code == 0 and "nothing to send" in capsys.readouterr().out
    assert check_published(client, results) == state


def test_reopen_of_a_resumed_search_tells_missing_from_offline(tmp_path, caplog):
    tracker = Tracker(local_tracking_uri(tmp_path), "again", journal=tmp_path / "tracking.json")
    parent = tracker.start_search("again", {"budget": 5})
    tracker.finish(parent)
    assert tracker.reopen(parent) and read_journal(tmp_path)["parent_run_id"] == parent
    assert not tracker.reopen("0" * 32) and not tracker.offline  # not there: a new parent run is due
    with caplog.at_level(logging.WARNING, logger="tinyray.tracking"):
        away = Tracker(f"http://127.0.0.1:{free_port()}", "again", journal=tmp_path / "tracking.json")
        assert not away.reopen(parent) and away.offline
    assert len(offline_warnings(caplog)) == 1
    assert read_journal(tmp_path)["search_id"] == tracker.search_id  # a resumed search keeps its id
