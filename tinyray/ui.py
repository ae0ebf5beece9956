"""``tinyray ui``: the MLflow UI on a search's runs, bound to 127.0.0.1, until Ctrl-C.

A search keeps its runs in the embedded store of its storage root (``<storage>/mlflow.db``, artifacts in
``<storage>/mlartifacts``) unless it was given a tracking server. This module finds that store from a results
folder (``<storage>/<name>``), starts ``mlflow server`` on it as a child process of the current Python, waits
until the server answers, and gives the address of the search's experiment. Nothing here imports MLflow: the
server is MLflow's own, and the experiment is looked up through its REST API.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tinyray.errors import UserError

DEFAULT_PORT = 5000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_STORAGE = Path("tinyray-results")
STORE_FILE = "mlflow.db"


@dataclass(frozen=True)
class Store:
    """Where a search's runs are.

    Attributes:
        tracking_uri: a database URI to serve (``sqlite:///...``, ``postgresql://...``), or the address of a
            running tracking server (``http://...``), which is used as it is.
        artifact_root: the embedded store's artifact folder (a ``file://`` URI), None for other stores.
        experiment: the experiment (search) name, or None to show every experiment of the store.
    """

    tracking_uri: str
    artifact_root: str | None = None
    experiment: str | None = None

    @property
    def is_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))


def find_store(results_dir: str | Path | None = None, tracking_uri: str | None = None) -> Store:
    """The store holding a search's runs.

    Args:
        results_dir: a search's results folder (``<storage>/<name>``), or a storage root holding ``mlflow.db``
            (every search in it). Default: ``./tinyray-results``.
        tracking_uri: the store the search logged to with ``--tracking-uri``; default ``MLFLOW_TRACKING_URI``,
            else the embedded store beside the results folder.

    Raises:
        UserError: the folder does not exist, or holds no store and no tracking URI was given.
    """
    from tinyray.tracking import local_artifact_root, local_tracking_uri, sqlite_file, use_credentials

    uri = use_credentials(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None)  # no secret printed
    database = sqlite_file(uri)
    if database is not None and not database.is_file():
        # mlflow server would quietly make an empty store there
        raise UserError(f"no MLflow store at {uri}: fix --tracking-uri (or MLFLOW_TRACKING_URI)")
    if uri and results_dir is None:
        return Store(tracking_uri=uri)
    folder = Path(results_dir).expanduser() if results_dir is not None else DEFAULT_STORAGE
    if not folder.is_dir():
        raise UserError(f"results folder {folder} does not exist: pass the folder a search printed (<storage>/<name>)")
    folder = folder.resolve()
    if (folder / STORE_FILE).is_file():  # a storage root: every search in it
        storage, experiment = folder, None
    else:
        storage, experiment = folder.parent, folder.name
    if uri:
        return Store(tracking_uri=uri, experiment=experiment)
    if not (storage / STORE_FILE).is_file():
        raise UserError(
            f"no MLflow store for {folder}: neither it nor {storage} holds {STORE_FILE}; pass a search's results "
            f"folder, or --tracking-uri if the search logged to a tracking server"
        )
    return Store(local_tracking_uri(storage), local_artifact_root(storage), experiment)


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port on ``host`` that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int) -> None:
    """Raise :class:`UserError` unless ``port`` on ``host`` can be listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will, so TIME_WAIT is no clash
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}): another program uses it; choose another --port"
            ) from None


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def server_answers(base_url: str, timeout: float = 5.0) -> bool:
    """Whether an MLflow server answers ``GET /health`` at ``base_url``."""
    try:
        status, _ = _get(base_url.rstrip("/") + "/health", timeout)
    except (OSError, ValueError):
        return False
    return status == 200


def find_experiment(base_url: str, name: str) -> dict[str, Any]:
    """Experiment ``name`` on the server at ``base_url``, as MLflow's REST API gives it (``experiment_id``, ``tags``).

    Raises:
        UserError: the store has no experiment of that name.
    """
    query = urllib.parse.urlencode({"experiment_name": name})
    try:
        # generous: a server that just started may answer its first database query slowly
        status, body = _get(f"{base_url.rstrip('/')}/ajax-api/2.0/mlflow/experiments/get-by-name?{query}", timeout=120)
    except (OSError, ValueError) as exc:
        raise UserError(f"MLflow at {base_url} did not answer when asked for experiment {name!r}: {exc}") from None
    if status == 200:
        return dict(json.loads(body)["experiment"])
    if status == 404:
        raise UserError(f"the MLflow store has no experiment {name!r}: pass the results folder of a search (<storage>/<name>)")
    raise UserError(f"MLflow at {base_url} answered {status} when asked for experiment {name!r}")


def experiment_url(base_url: str, experiment: str | None, mode: str | None = None) -> str:
    """The UI address of experiment ``experiment``'s runs (by name; ``mode`` as :func:`tinyray.tracking.experiment_page`
    takes it, default its charts), or of the experiment list for None."""
    from tinyray.tracking import RUNS_VIEW_KEY, experiment_page

    if experiment is None:
        return f"{base_url.rstrip('/')}/#/experiments"
    found = find_experiment(base_url, experiment)
    tags = {tag.get("key") for tag in found.get("tags", [])}
    viewed = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}" in tags
    if mode is None:
        return experiment_page(base_url, str(found["experiment_id"]), viewed)
    return experiment_page(base_url, str(found["experiment_id"]), viewed, mode)


class UIServer:
    """A running ``mlflow server`` child process (its own process group), stopped by :meth:`stop`.

    Use :func:`start_server` to make one; it is also a context manager that stops the server on exit.
    """

    def __init__(self, process: subprocess.Popen, url: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path

    def log_tail(self, lines: int = 1) -> str:
        """The last non-empty lines of the server's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server and its workers (SIGTERM to its process group, SIGKILL after ``timeout`` seconds)."""
        if self.process.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:
            # workers left in the group after the server itself exited
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "UIServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(store: Store, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 180.0) -> UIServer:
    """Start ``mlflow server`` on ``store`` at ``host:port`` and wait until it answers.

    Args:
        store: a database store (not a running server).
        host: interface to bind; 127.0.0.1 keeps it on this machine (reach it from elsewhere by SSH forwarding).
        port: TCP port; 0 picks a free one.
        timeout: seconds to wait for the server to answer.

    Raises:
        UserError: the port is taken, or the server exits or stays silent (with its last line of output).
    """
    assert not store.is_server, "a running tracking server needs no UI server"
    port = port or free_port(host)
    check_port(host, port)
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.tracking_uri,
        "--host", host, "--port", str(port), "--workers", "1",
    ]
    if store.artifact_root:
        # runs keep their own artifact URIs; this only matters for experiments made through the UI
        command += ["--default-artifact-root", store.artifact_root, "--no-serve-artifacts"]
    log_fd, log_name = tempfile.mkstemp(prefix="tinyray-ui-", suffix=".log")
    # MLflow's job runner (GenAI scorers and evaluations, which tinyray never runs) polls its queue from seven
    # processes: an idle server burnt 4.3 s of CPU in 20 s with it (0.22 of a core), 0.05 s without
    # (benchmarks/idle_server.py). Off unless the user's environment turns it on.
    env = {**os.environ}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # run in the temporary folder so that nothing (./mlruns, ./mlartifacts) lands in the user's folder
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT, start_new_session=True,
        cwd=tempfile.gettempdir(), preexec_fn=_die_with_parent, env=env,
    )
    os.close(log_fd)
    server = UIServer(process, f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}", Path(log_name))
    deadline = time.monotonic() + timeout
    try:
        while not server_answers(server.url, timeout=2.0):
            if not server.running():
                raise UserError(f"mlflow server could not start on {store.tracking_uri}: {server.log_tail() or 'no output'}")
            if time.monotonic() > deadline:
                raise UserError(f"mlflow server on port {port} did not answer within {timeout:.0f} s: "
                                f"{server.log_tail() or 'no output'}")
            time.sleep(0.3)
    except BaseException:  # an error, or Ctrl-C while waiting: leave no server behind
        server.stop()
        raise
    return server


def _die_with_parent() -> None:
    """In the server's process, before MLflow starts: on Linux, get SIGTERM when we die, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def forwarding_hint(port: int) -> str | None:
    """How to reach a UI bound to 127.0.0.1 on a remote machine (a Ray head node), or None on a local machine."""
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    forward = f"-N -L {port}:127.0.0.1:{port}"
    if len(ssh) == 4:  # client-ip client-port server-ip server-port: we are on the far end of an SSH session
        return f"ssh {forward} {getpass.getuser()}@{ssh[2]}  (or, with Ray's launcher: ray attach CLUSTER.yaml -p {port})"
    if os.environ.get("RAY_ADDRESS"):
        return f"ssh {forward} USER@HEAD-NODE  (or, with Ray's launcher: ray attach CLUSTER.yaml -p {port})"
    return None


def serve(results_dir: str | Path | None = None, tracking_uri: str | None = None, host: str = DEFAULT_HOST,
          port: int = DEFAULT_PORT, out: TextIO | None = None) -> int:
    """``tinyray ui``: serve a search's runs until Ctrl-C; print the experiment's address and how to reach it.

    With ``tracking_uri`` pointing to a running server (``http://...``), nothing is started: the address of the
    experiment on that server is printed. Returns the exit status.
    """
    out = out or sys.stdout
    store = find_store(results_dir, tracking_uri)
    if store.is_server:
        if not server_answers(store.tracking_uri):
            raise UserError(f"no MLflow server answers at {store.tracking_uri}: start it, or fix --tracking-uri")
        print(f"MLflow UI: {experiment_url(store.tracking_uri, store.experiment)}", file=out, flush=True)
        return 0
    server = start_server(store, host, port)
    # The server lives in its own process group, so the terminal's Ctrl-C does not reach it: we stop it. SIGINT is
    # handled explicitly too, since a process started in the background of a script inherits it ignored.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        url = experiment_url(server.url, store.experiment)
        what = f"search {store.experiment!r}" if store.experiment else "every search"
        print(f"MLflow UI for {what}: {url}", file=out)
        print(f"store: {store.tracking_uri}", file=out)
        hint = forwarding_hint(int(server.url.rsplit(":", 1)[1]))
        if hint:
            print(f"from your own machine, forward the port first: {hint}", file=out)
        print("press Ctrl-C to stop", file=out, flush=True)
        while server.running():
            time.sleep(0.5)
        print(f"mlflow server stopped by itself: {server.log_tail(3)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the MLflow UI", file=out, flush=True)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
