"""Safe defaults: what tinyray starts listens on 127.0.0.1, and nothing secret is written down."""

from __future__ import annotations

import pytest

from tinyray.search import SearchConfig, _redact


def _listening_addresses() -> set[str]:
    """Addresses that this process and its children (the local Ray) listen on."""
    import os

    import psutil

    me = psutil.Process(os.getpid())
    addresses = set()
    for process in [me, *me.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        addresses |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return addresses


@pytest.mark.integration
def test_local_ray_listens_on_loopback_without_dashboard():
    import ray

    from tinyray.tune.runtime import start_ray

    started = start_ray(SearchConfig(budget=1).address)
    try:
        assert started
        node = ray._private.worker.global_worker.node
        assert node.node_ip_address == "127.0.0.1"
        assert node.gcs_address.startswith("127.0.0.1:")
        assert not ray.get_runtime_context().get_node_id() == ""
        assert node.address_info.get("webui_url") in (None, "")
        listening = _listening_addresses()
        assert listening, "found no Ray process listening"
        assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in listening), listening
    finally:
        ray.shutdown()


def test_credentials_are_redacted_from_recorded_uris():
    assert _redact("https://alice:s3cret@mlflow.example.com/") == "https://mlflow.example.com/"
    assert _redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert _redact(None) is None


def test_a_tracking_password_goes_to_mlflows_environment_not_into_the_uri(monkeypatch):
    from tinyray.tracking import use_credentials

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert use_credentials("https://alice:s%40cret@mlflow.example.com:5000/") == "https://mlflow.example.com:5000/"
    import os

    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "s@cret"
    # a database URI keeps its password (SQLAlchemy needs it); what tinyray writes down is redacted
    assert use_credentials("postgresql://bob:pw@db/mlflow") == "postgresql://bob:pw@db/mlflow"
    assert _redact("postgresql://bob:pw@db/mlflow") == "postgresql://db/mlflow"


def _fresh_environment(**extra: str) -> dict[str, str]:
    import os

    env = {key: value for key, value in os.environ.items()
           if key not in ("MLFLOW_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED", "PYTEST_CURRENT_TEST")}
    return {**env, **extra}


def test_no_telemetry_leaves_a_tinyray_process_and_a_user_s_choice_is_kept():
    """MLflow 3 would post usage telemetry from every process that logs, and Ray usage statistics from a head it
    starts: importing tinyray turns both off (outside pytest, where MLflow turns its own off), unless the user set
    them."""
    import subprocess
    import sys

    probe = ("import tinyray, os; from mlflow.telemetry.utils import is_telemetry_disabled; "
             "print(os.environ['MLFLOW_DISABLE_TELEMETRY'], os.environ['RAY_USAGE_STATS_ENABLED'], "
             "is_telemetry_disabled())")
    plain = subprocess.run([sys.executable, "-c", "from mlflow.telemetry.utils import is_telemetry_disabled; "
                            "print(is_telemetry_disabled())"], env=_fresh_environment(), capture_output=True,
                           text=True, check=True)
    default = subprocess.run([sys.executable, "-c", probe], env=_fresh_environment(), capture_output=True, text=True,
                             check=True)
    chosen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env=_fresh_environment(MLFLOW_DISABLE_TELEMETRY="false", RAY_USAGE_STATS_ENABLED="1"))
    if plain.stdout.split() == ["False"]:  # MLflow would send it here (on a CI runner it turns itself off)
        assert chosen.stdout.split()[2] == "False"
    assert default.stdout.split() == ["true", "0", "True"]
    assert chosen.stdout.split()[:2] == ["false", "1"]
