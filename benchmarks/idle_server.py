"""CPU of an idle ``mlflow server`` as tinyray starts it (``tinyray ui``, ``tinyray bench scale``), with MLflow's job
runner on and off.

Run: PYTHONPATH=TREE python benchmarks/idle_server.py [SECONDS]   (default 20)

Starts the server on an empty sqlite store (port 0, 127.0.0.1), waits 5 s, then counts the user + system CPU
seconds of the server and all its processes over SECONDS, once with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true``
(MLflow's default) and once with ``false`` (tinyray's), and prints both with the processes each ran.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tinyray.scale import tree_cpu_seconds
from tinyray.ui import Store, start_server


def idle_cpu(seconds: float) -> tuple[float, int]:
    folder = Path(tempfile.mkdtemp(prefix="idle-server-"))
    server = start_server(Store(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()), port=0)
    try:
        time.sleep(5)
        before = tree_cpu_seconds(server.process.pid)
        time.sleep(seconds)
        used = tree_cpu_seconds(server.process.pid) - before
        processes = 1 + len(psutil.Process(server.process.pid).children(recursive=True))
        return used, processes
    finally:
        server.stop()


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    for setting in ("true", "false"):
        os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = setting
        used, processes = idle_cpu(seconds)
        print(f"job execution {setting:5}: {used:.2f} CPU s in {seconds:g} s idle ({used / seconds:.3f} of a core), "
              f"{processes} processes")


if __name__ == "__main__":
    main()
