"""A simulated GPU cluster on one machine: N raylets on 127.0.0.1 that declare GPUs they do not have.

Ray counts GPUs as a resource like any other, so a raylet started with ``num_gpus=4`` on a machine without a GPU
places four 1-GPU trials (or sixteen with ``--gpus-per-trial 0.25``) exactly as a 4-GPU node would; only a trial
that really opened CUDA would notice. With the replay trainer (:mod:`tinyray.replay`) that is enough to rehearse a
search of hundreds of trials on an 8-node, 32-GPU cluster (``tinyray bench scale``).

The raylets come from ``ray.cluster_utils.Cluster`` in a child process (``python -m tinyray.simcluster``), as in
``tests/test_cluster.py``: on Linux ``ray start --address 127.0.0.1:P`` dials this machine's network address, so a
second node cannot join a loopback-only head through the CLI. The child has its own ``RAY_TMPDIR`` and token, so no
other Ray on the machine sees it, and :meth:`SimulatedCluster.stop` ends exactly the processes it started (the child
and its descendants, by pid; never ``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyray.errors import UserError

#: raylets one simulated cluster may have (each is a few processes and about 100 MB)
MAX_NODES = 64
#: object store of each simulated node, bytes: trials pass nothing big (Ray's floor is 75 MB)
OBJECT_STORE_BYTES = 80 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_cluster_process(process: subprocess.Popen) -> list[Any]:
    """End a child process that runs a Ray cluster (it shuts the cluster down when its stdin closes) and every
    process it started, by pid: wait for it, then terminate and, if need be, kill its descendants. Ray's workers
    start sessions of their own, so the cluster's processes are found as the child's descendants, not as one
    process group. Returns the processes still alive after that (empty when all ended)."""
    import psutil

    try:
        started = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    try:
        process.stdin.close()  # the child shuts the cluster down
        process.wait(timeout=90)
    except (subprocess.TimeoutExpired, OSError):
        process.kill()
        process.wait()
    for child in started:
        try:
            child.terminate()  # psutil checks that the pid still names the same process
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(started, timeout=15)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=15)
    return alive


@dataclass
class SimulatedCluster:
    """``nodes`` raylets with ``gpus_per_node`` declared GPUs and ``cpus_per_node`` declared CPUs each.

    Use as a context manager (or :meth:`start` / :meth:`stop`). While it runs, :attr:`address` is the head's
    ``127.0.0.1:port`` and :attr:`env` the environment a driver needs to join it (its token, its ``RAY_TMPDIR``).

    Args:
        nodes: raylets, the head included (every one declares the same resources).
        gpus_per_node: GPUs each raylet declares (none needs to exist).
        cpus_per_node: CPUs each raylet declares; a trial still asks for its ``--cpus-per-trial``, so give at
            least the trials a node holds times that.
        env: extra environment for the cluster's processes (and :attr:`env`), e.g. ``TINYRAY_CACHE``.
        startup_timeout: seconds to wait for the raylets.
    """

    nodes: int
    gpus_per_node: float
    cpus_per_node: float
    env_extra: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 600.0
    address: str | None = None
    node_ids: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    _process: Any = None
    _tmp: Path | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= MAX_NODES:
            raise UserError(f"--nodes must be between 1 and {MAX_NODES}, got {self.nodes}")
        if not self.gpus_per_node >= 0 or not self.cpus_per_node > 0:
            raise UserError(f"a simulated node needs CPUs and zero or more GPUs, got {self.cpus_per_node:g} CPUs "
                            f"and {self.gpus_per_node:g} GPUs")

    def start(self) -> "SimulatedCluster":
        """Start the raylets and wait until every one has joined."""
        import select
        import time

        # short: Ray's socket paths have a length limit
        self._tmp = Path(tempfile.mkdtemp(prefix="trsim", dir="/tmp"))
        token = self._tmp / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {
            **os.environ, **self.env_extra,
            "RAY_TMPDIR": str(self._tmp),  # this cluster's address file and sessions, seen by no other Ray
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 as the node and the dialled address
        }
        self.env.pop("RAY_ADDRESS", None)
        spec = {"nodes": self.nodes, "gpus": self.gpus_per_node, "cpus": self.cpus_per_node,
                "ports": [_free_port() for _ in range(2)]}
        with open(self._tmp / "cluster.log", "w") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tinyray.simcluster", json.dumps(spec)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, text=True, env=self.env, start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            ready, _, _ = select.select([self._process.stdout], [], [], 1.0)
            if ready:
                line = self._process.stdout.readline()
                break
            if self._process.poll() is not None or time.monotonic() > deadline:
                line = ""
                break
        if not line:
            tail = (self._tmp / "cluster.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            self.stop()
            raise UserError(f"the simulated cluster of {self.nodes} raylets did not start: {tail[0][:300]}")
        info = json.loads(line)
        self.address, self.node_ids = info["address"], info["nodes"]
        return self

    @property
    def pids(self) -> list[int]:
        """The cluster's processes: the child and its descendants (raylets, GCS, their workers)."""
        import psutil

        if self._process is None:
            return []
        try:
            parent = psutil.Process(self._process.pid)
            return [parent.pid] + [child.pid for child in parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """Shut the cluster down and end every process it started, by pid; remove its temporary folder."""
        if self._process is None:
            return
        stop_cluster_process(self._process)
        self._process = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "SimulatedCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _serve(spec: dict[str, Any]) -> None:
    """The child process: start the raylets, print the address and node ids, and hold them until stdin closes."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(shutdown_at_exit=True)
    common = dict(node_ip_address="127.0.0.1", num_cpus=spec["cpus"], num_gpus=spec["gpus"],
                  object_store_memory=OBJECT_STORE_BYTES)
    nodes = [cluster.add_node(include_dashboard=False, dashboard_port=spec["ports"][0],
                              dashboard_agent_listen_port=spec["ports"][1], **common)]
    nodes += [cluster.add_node(**common) for _ in range(spec["nodes"] - 1)]
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "nodes": [node.node_id for node in nodes]}), flush=True)
    sys.stdin.read()
    cluster.shutdown()


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
