"""Clusters: the launcher configs pass Ray's own validation, and a real two-node Ray cluster runs a search.

The two-node cluster lives on this machine, on 127.0.0.1 only, with token authentication on. Its two raylets
come from ``ray.cluster_utils.Cluster`` in a child process rather than from two ``ray start`` commands: on Linux
``ray start --address 127.0.0.1:P`` dials this machine's network address instead of loopback (Ray's
``canonicalize_bootstrap_address``), so a second node cannot join a loopback-only head through the CLI.
The child process has its own ``RAY_TMPDIR``, so no other Ray on the machine sees or loses anything, and the test
stops exactly the processes it started (the child and its descendants, by pid; never ``ray stop``, which would
stop every Ray on the machine).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tinyray.cli import main
from tinyray.files import read_results_csv
from tinyray.simcluster import stop_cluster_process

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


@pytest.mark.parametrize("name", ["v100.yaml", "local.yaml"])
def test_cluster_config_passes_rays_validation(name):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(name)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)
    prepared = prepare_config(copy.deepcopy(raw))  # what `ray up` does before it calls the cloud
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]

    # token authentication on every node, for Ray and for every shell (drivers)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in raw[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("RAY_AUTH_MODE=token" in c for c in raw["setup_commands"])
    # tinyray and its pinned dependencies on every node; MLflow on the head, on loopback only
    assert raw["file_mounts"]["~/tinyray"] == "."
    assert any("-e ~/tinyray" in c for c in raw["setup_commands"])
    mlflow = [c for c in raw["head_start_ray_commands"] if "mlflow server" in c]
    assert len(mlflow) == 1 and "--host 127.0.0.1 --port 5000" in mlflow[0]
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in mlflow[0]  # no job runner polling on the driver's node
    assert "--dashboard-host=127.0.0.1" in " ".join(raw["head_start_ray_commands"])
    text = (CLUSTERS / name).read_text()
    assert "aws_secret" not in text.lower() and "AKIA" not in text and "BEGIN" not in text


def test_v100_cluster_opens_only_ssh_and_has_v100_workers():
    raw = _load("v100.yaml")
    rules = raw["provider"]["security_group"]["IpPermissions"]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules] == [("tcp", 22, 22)]
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["resources"] == {"CPU": 0}  # trials never run on the head
    gpus = {t["node_config"]["InstanceType"]: t["resources"]["GPU"] for t in types.values() if "GPU" in t["resources"]}
    assert gpus == {"p3.2xlarge": 1, "p3.8xlarge": 4}
    assert sum(t.get("min_workers", 0) for t in types.values()) == 0 < raw["max_workers"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_bad_address_is_one_line_and_exit_2(capfd, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYRAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    port = _free_port()  # nothing listens there
    code = main(["search", "--budget", "60M", "--address", f"127.0.0.1:{port}", "--storage", str(tmp_path / "r"),
                 "--quiet"])
    out, err = capfd.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"nothing answers at 127.0.0.1:{port}" in err


def test_storage_uri_is_refused_in_one_line(capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--budget", "60M", "--storage", "s3://bucket/tinyray"])
    _, err = capfd.readouterr()
    assert code == 2 and err.count("\n") == 1 and "shared folder" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_data_folder_on_a_node_names_the_node(tmp_path):
    from tinyray.data import FOLDER, DataSpec
    from tinyray.errors import UserError
    from tinyray.tune.trainable import _data

    spec = DataSpec(kind=FOLDER, path=tmp_path / "imagenet")  # exists on the driver, not on this "node"
    with pytest.raises(UserError, match=r"missing on Ray node .* \(host .*\): put the data on shared storage"):
        _data(spec)


# --------------------------------------------------------------------------------------------------------------
# A real two-node cluster.

_CLUSTER_SCRIPT = """
import json, sys
from ray.cluster_utils import Cluster

ports = json.loads(sys.argv[1])
cluster = Cluster(shutdown_at_exit=True)
head = cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, include_dashboard=False,
                        dashboard_port=ports[0], dashboard_agent_listen_port=ports[1])
worker = cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
print(json.dumps({"address": cluster.address, "nodes": [head.node_id, worker.node_id]}), flush=True)
sys.stdin.read()  # the test closes stdin to stop the cluster
cluster.shutdown()
"""


@pytest.fixture
def two_nodes(tmp_path):
    """A head and a second raylet on 127.0.0.1 with token authentication; yields (address, node ids, env)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="trc", dir="/tmp"))  # short: Ray's socket paths have a length limit
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {
        **os.environ,
        "RAY_TMPDIR": str(ray_tmp),  # this cluster's address file and sessions, seen by no other Ray
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 as the node and the dialled address
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "TINYRAY_CACHE": str(tmp_path / "cache"),  # every node builds the built-in data into its own cache
    }
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLUSTER_SCRIPT, json.dumps([_free_port(), _free_port()])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, "the two-node cluster did not start"
        info = json.loads(line)
        yield info["address"], info["nodes"], env
    finally:
        alive = stop_cluster_process(proc)  # by pid: the child and its descendants, never `ray stop`
        assert not alive, f"processes of the test cluster still running: {alive}"
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.integration
def test_search_runs_trials_on_both_nodes_and_tracks_them_in_one_store(two_nodes, tmp_path):
    from mlflow import MlflowClient

    address, nodes, env = two_nodes
    assert address.startswith("127.0.0.1:") and len(set(nodes)) == 2
    storage = tmp_path / "results"
    proc = subprocess.run(
        ["nice", "-n", "10", sys.executable, "-m", "tinyray", "search", "--budget", "60M", "--address", address,
         "--trials", "4", "--max-epochs", "1", "--pop-size", "4", "--scheduler", "fifo", "--name", "multi",
         "--storage", str(storage), "--json"],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])

    trials = read_results_csv(storage / "multi" / "trials.csv")
    assert len(trials) == 4 and (trials["status"] == "completed").all()
    # one CPU per node and per trial: the first two trials cannot share a node
    assert set(trials["node_id"]) == set(nodes)

    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    assert summary["tracking_uri"] == f"sqlite:///{(storage / 'mlflow.db').resolve()}"
    runs = client.search_runs([summary["experiment_id"]], max_results=100)
    children = [r for r in runs if r.data.tags.get("tinyray.kind") == "trial"]
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(trials["trial_id"])
    assert all(r.data.tags["mlflow.parentRunId"] == summary["parent_run_id"] for r in children)


@pytest.mark.slow
@pytest.mark.integration
def test_cluster_errors_are_one_line(two_nodes, tmp_path):
    from ray._private.services import canonicalize_bootstrap_address

    address, _, env = two_nodes
    cases = [
        # no token: the cluster refuses the driver (an explicit address never turns token mode on by itself)
        ({"RAY_AUTH_MODE": None, "RAY_AUTH_TOKEN_PATH": None}, "authentication token"),
    ]
    if not canonicalize_bootstrap_address(address).startswith("127.0.0.1:"):
        # without the setting, Ray dials 127.0.0.1 at this machine's network address, where the cluster is not
        cases.append(({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": None}, "on loopback only"))
    for index, (changes, message) in enumerate(cases):
        case_env = {**env, **{k: v for k, v in changes.items() if v is not None}}
        for key in [k for k, v in changes.items() if v is None]:
            case_env.pop(key, None)
        proc = subprocess.run(
            [sys.executable, "-m", "tinyray", "search", "--budget", "60M", "--address", address, "--quiet",
             "--storage", str(tmp_path / f"r{index}")],
            capture_output=True, text=True, env=case_env, timeout=600,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr[-2000:]
