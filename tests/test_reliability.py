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

pytestmark = [pytest.mark.slow, pytest.mark.integration]

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


def test_a_password_in_the_tracking_uri_reaches_no_file_and_no_output(tmp_path, server):
    from mlflow import MlflowClient

    storage = tmp_path / "results"
    uri = server.url.replace("http://", f"http://alice:{SECRET}@")
    proc = subprocess.run(_search(storage, "secret", "--tracking-uri", uri, "--json"), env=_env(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert "View run" not in proc.stdout
    for line in proc.stdout.splitlines():  # --json: every stdout line is JSON, the last one the summary
        json.loads(line)
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["tracking_uri"] == server.url

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
    assert all(run.info.status == "FINISHED" for run in runs)
