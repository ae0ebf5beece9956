"""Nothing leaked, nothing lost, nothing hangs: drills with real processes, real Ray and real MLflow.

A secret in the tracking URI reaches no file, stdout or stderr; Ctrl-C marks a search interrupted everywhere and
says how to resume it; a search folder has one driver at a time; a full disk stops a search in one line and
loses nothing; ``--json`` prints only JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import finished_trials

from tinyray.files import read_results_csv


SECRET = "pa55-Zq7-not-for-files"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    env["TINYRAY_CACHE"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _search(storage: Path, name: str, *extra: str, trials: int = 2, epochs: int = 1) -> list[str]:
    return [sys.executable, "-m", "tinyray", "search", "--budget", "60M", "--name", name, "--storage", str(storage),
            "--trials", str(trials), "--max-epochs", str(epochs), "--scheduler", "fifo", "--pop-size", "4",
            "--seed", "3", "--data", "synthetic:300/100", *extra]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (without authentication: it accepts and ignores basic-auth headers)."""
    from tinyray.ui import Store, start_server

    root = tmp_path_factory.mktemp("mlflow-server")
    store = Store(f"sqlite:///{root / 'db'}", (root / "art").as_uri())
    with start_server(store, port=0) as running:
        yield running


@pytest.mark.slow
@pytest.mark.integration
def test_a_password_in_the_tracking_uri_reaches_no_file_and_no_output(tmp_path, server):
    from mlflow import MlflowClient

    storage = tmp_path / "results"
    uri = server.url.replace("http://", f"http://alice:{SECRET}@")
    # and the output contracts on the way: a trial that fails (every attempt) is a line or two on stderr
    # seed 3 proposes r = 0.264 first and 0.289 second (the lowest FLOPs levels of its log-FLOPs start)
    faults = [{"kind": "raise", "epoch": 1, "param": "r", "below": 0.27}]
    env = _env(tmp_path, TINYRAY_FAULTS=json.dumps(faults))
    proc = subprocess.run(_search(storage, "secret", "--tracking-uri", uri, "--json"), env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert "View run" not in proc.stdout
    for line in proc.stdout.splitlines():  # --json: every stdout line is JSON, the last one the summary
        json.loads(line)
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["tracking_uri"] == server.url and summary["failed"] >= 1
    failures = [line for line in proc.stderr.splitlines() if " failed: " in line]
    assert failures and all("trial crashed at epoch 1" in line and "(full trace: " in line for line in failures)
    assert len(proc.stderr.splitlines()) <= 3 * len(failures) + 2, proc.stderr  # no Ray tracebacks
    assert "Traceback" not in proc.stderr and "Token authentication" not in proc.stderr

    published = subprocess.run([sys.executable, "-m", "tinyray", "publish", str(storage / "secret"), "--json",
                                "--tracking-uri", uri], env=env, capture_output=True, text=True, timeout=300)
    assert published.returncode == 0, published.stderr[-2000:]
    assert len(published.stdout.splitlines()) == 1 and json.loads(published.stdout)
    assert SECRET not in published.stdout and SECRET not in published.stderr

    files = [path for path in storage.rglob("*") if path.is_file()]
    names = {path.name for path in files}
    assert {"tracking.json", "summary.json", "report.html", "search.json", "tuner.pkl"} <= names, names
    leaked = [str(path) for path in files if SECRET.encode() in path.read_bytes()]
    assert leaked == []
    assert json.loads((storage / "secret" / "tracking.json").read_text())["tracking_uri"] == server.url

    # and MLflow did get the search: the credentials went to it, not into the files
    client = MlflowClient(tracking_uri=server.url)
    experiment = client.get_experiment_by_name("secret")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.tags.get("tinyray.kind") for run in runs) == ["search", "trial", "trial"]
    assert sorted(run.info.status for run in runs) == ["FAILED", "FINISHED", "FINISHED"]



def _wait_for(driver: subprocess.Popen, results: Path, epochs: int, count: int = 1) -> None:
    deadline = time.monotonic() + 900
    while len(finished_trials(results, epochs)) < count:
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"no {count} trial(s) finished in 15 minutes"
        time.sleep(0.5)


def _runs(storage: Path, name: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], max_results=100)


@pytest.mark.slow
@pytest.mark.integration
def test_ctrl_c_marks_the_search_interrupted_everywhere_and_says_how_to_resume(tmp_path):
    import shlex


    storage = tmp_path / "results"
    results = storage / "ctrlc"
    env = _env(tmp_path)
    driver = subprocess.Popen(_search(storage, "ctrlc", "--quiet", trials=3, epochs=2), env=env,
                              start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(driver, results, 2)
        # a second driver on the same search, while the first runs: refused, and the first is not disturbed
        second = subprocess.run(_search(storage, "ctrlc", "--quiet", "--resume", trials=3, epochs=2), env=env,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and f"(pid {driver.pid})" in second.stderr, second.stderr
        assert second.stderr.count("\n") == 1
        driver.send_signal(signal.SIGINT)  # Ctrl-C, to the driver
        out, err = driver.communicate(timeout=600)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # whatever of the group is left (the local Ray)
        except ProcessLookupError:
            pass
    err = err.decode()
    assert driver.returncode == 130, err[-3000:]
    command = f"tinyray search --resume --name ctrlc --storage {storage.resolve()}"
    assert command in err, err[-3000:]
    assert "Traceback" not in err and "Tuner.restore" not in err, err[-3000:]
    assert json.loads((results / "tracking.json").read_text())["status"] == "interrupted"
    assert json.loads((results / "search.json").read_text())["status"] == "interrupted"
    assert not (results / "summary.json").exists() and not (results / "trials.csv").exists()
    runs = _runs(storage, "ctrlc")
    parent = [run for run in runs if run.data.tags.get("tinyray.kind") == "search"]
    assert len(parent) == 1 and parent[0].info.status == "KILLED"
    assert all(run.info.status != "RUNNING" for run in runs), [(r.data.tags, r.info.status) for r in runs]
    before = finished_trials(results, 2)

    # the printed command continues it to the end, keeping what was finished
    resumed = subprocess.run([sys.executable, "-m", "tinyray", *shlex.split(command)[1:], "--quiet"], env=env,
                             capture_output=True, text=True, timeout=2400)  # generous: the machine may be shared
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = read_results_csv(results / "trials.csv")
    assert len(trials) == 3 and trials["trial_id"].is_unique and (trials["status"] == "completed").all()
    after = finished_trials(results, 2)
    assert all(after[name] == lines for name, lines in before.items())  # nothing trained twice
    assert json.loads((results / "tracking.json").read_text())["status"] == "complete"
    runs = _runs(storage, "ctrlc")
    assert all(run.info.status == "FINISHED" for run in runs if run.data.tags.get("status") != "lost")
    children = [run for run in runs if run.data.tags.get("tinyray.kind") == "trial"
                and run.data.tags.get("status") != "lost"]
    assert sorted(run.data.tags["trial_id"] for run in children) == sorted(trials["trial_id"])

    # a finished search: --resume says so and changes nothing (files, runs, metrics, model versions)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage.resolve() / 'mlflow.db'}")
    def state() -> tuple:
        runs = _runs(storage, "ctrlc")
        metrics = {run.info.run_id: (run.info.status, run.info.end_time, sorted(run.data.metrics.items()),
                                     len(client.get_metric_history(run.info.run_id, "top1"))) for run in runs}
        versions = [v.version for v in client.search_model_versions("name='tinynet-formula'")]
        return _files(storage), metrics, versions

    before = state()
    again = subprocess.run([sys.executable, "-m", "tinyray", *shlex.split(command)[1:], "--quiet"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already finished" in again.stderr and again.stderr.count("\n") == 1
    assert state() == before


# -- one driver a search folder; a finished search stays as it is (fast: refused before Ray starts) -------------
def _stored_search(storage: Path, name: str, **extra) -> Path:
    folder = storage / name
    folder.mkdir(parents=True)
    (folder / "search.json").write_text(json.dumps({"version": 1, "config": {
        "budget": 60_000_000, "name": name, "trials": 3, "max_epochs": 2, "data": "synthetic:300/100"}, **extra}))
    return folder


def _files(root: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def test_a_second_driver_on_a_search_folder_is_one_line_and_exit_2(tmp_path, capsys):
    from tinyray.cli import main
    from tinyray.search import _own

    folder = _stored_search(tmp_path / "results", "owned")
    held = _own(folder)  # what the first driver holds while it runs
    try:
        code = main(["search", "--resume", "--name", "owned", "--storage", str(tmp_path / "results")])
    finally:
        held.close()
    err = capsys.readouterr().err
    assert code == 2 and f"being run by another tinyray process (pid {os.getpid()})" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    again = _own(folder)  # released by the first: free again
    again.close()


def test_the_lock_dies_with_its_driver(tmp_path):
    from tinyray.search import _own

    folder = tmp_path / "s"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; h = open(sys.argv[1], 'a+'); "
                               "fcntl.flock(h, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)",
                               str(folder / "driver.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match="being run by another"):
            _own(folder)
    finally:
        holder.kill()  # like SIGKILL of a driver
        holder.wait()
    _own(folder).close()


def test_results_tables_keep_trial_ids_that_look_like_numbers_as_text(tmp_path):
    # Tune's ids are 8 hex digits: about 2% are all decimal digits, some are digits around one "e" (a float)
    ids = ["00123456", "12345678", "1234e567"]
    path = tmp_path / "front.csv"
    path.write_text("trial_id,top1,flops\n" + "".join(f"{trial_id},0.5,1000\n" for trial_id in ids))
    for table in (read_results_csv(path), read_results_csv(path).head(1)):
        assert list(table["trial_id"]) == ids[:len(table)]
    assert read_results_csv(path)["flops"].dtype.kind == "i"  # the other columns keep their types


@pytest.mark.parametrize("marker", ["status", "summary"])
def test_resume_of_a_finished_search_says_so_and_changes_nothing(tmp_path, capsys, marker):
    from tinyray.cli import main

    storage = tmp_path / "results"
    folder = _stored_search(storage, "done", **({"status": "finished"} if marker == "status" else {}))
    if marker == "summary":  # a search finished before search.json recorded its status
        (folder / "summary.json").write_text("{}")
    before = _files(storage)
    code = main(["search", "--resume", "--name", "done", "--storage", str(storage)])
    err = capsys.readouterr().err
    assert code == 2 and "is already finished: nothing to resume" in err
    assert len(err.strip().splitlines()) == 1
    assert _files(storage) == before


# -- a full disk ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.integration
def test_disk_full_stops_in_one_line_keeps_finished_trials_and_resumes(tmp_path):
    import shlex


    storage = tmp_path / "results"
    results = storage / "full"
    # the third trial (seed 3 proposes r = 0.399 third; the first two have r < 0.3) runs out of disk at its first
    # epoch, which starts when a trial has finished: the driver must stop in one line and keep that trial
    faults = [{"kind": "enospc", "epoch": 1, "param": "r", "above": 0.35, "once": True}]
    env = _env(tmp_path, TINYRAY_FAULTS=json.dumps(faults), TINYRAY_FAULTS_DIR=str(tmp_path / "faults"))
    proc = subprocess.run(_search(storage, "full", "--quiet", trials=3, epochs=1), env=env, capture_output=True,
                          text=True, timeout=2400)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "no space left on device" in lines[0] and "No space left on device" in lines[0]
    command = f"tinyray search --resume --name full --storage {storage.resolve()}"
    assert command in lines[0]
    before = finished_trials(results, 1)
    assert before, "no trial had finished before the disk filled up"
    assert json.loads((results / "search.json").read_text())["status"] == "interrupted"
    assert json.loads((results / "tracking.json").read_text())["status"] == "interrupted"
    assert all(run.info.status != "RUNNING" for run in _runs(storage, "full"))

    # space again (the fault fires once): the resume restores the search and loses nothing
    resumed = subprocess.run([sys.executable, "-m", "tinyray", *shlex.split(command)[1:], "--quiet"], env=env,
                             capture_output=True, text=True, timeout=2400)  # generous: the machine may be shared
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = read_results_csv(results / "trials.csv")
    assert len(trials) == 3 and trials["trial_id"].is_unique and (trials["status"] == "completed").all()
    after = finished_trials(results, 1)
    assert all(after[name] == lines for name, lines in before.items())  # kept, not trained again


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_resume_without_tunes_state_refuses_instead_of_starting_over(tmp_path, capsys, damage):
    from tinyray.cli import main

    storage = tmp_path / "results"
    folder = _stored_search(storage, "lost", status="interrupted")
    (folder / "trial_0a1b2c3d").mkdir()
    (folder / "trial_0a1b2c3d" / "result.json").write_text('{"training_iteration": 2, "top1": 0.5}\n')
    if damage == "empty":  # what a full disk leaves: the file made, nothing written
        (folder / "tuner.pkl").write_bytes(b"")
    before = _files(storage)
    code = main(["search", "--resume", "--name", "lost", "--storage", str(storage)])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot resume 'lost': Ray Tune's state" in err and "start a new --name" in err
    assert len(err.strip().splitlines()) == 1
    assert _files(storage) == before  # refused before Ray, MLflow or any write


def test_the_mlflow_server_tinyray_starts_runs_no_job_runner(server):
    # MLflow's job runner (seven polling processes, about 0.2 of a core when idle) is off in tinyray's servers
    import psutil

    commands = [" ".join(p.cmdline()) for p in psutil.Process(server.process.pid).children(recursive=True)]
    assert commands and not any("huey" in c or "_job_runner" in c for c in commands), commands
