"""The command line: outputs people and scripts read, and one line with exit status 2 for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tinyray.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own exits (--help, usage errors)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_flops_json_has_the_documented_keys(capsys):
    code, out, _ = run(capsys, "flops", "--r", "0.84", "--d", "1.1", "--w", "0.75", "--json")
    assert code == 0
    data = json.loads(out)
    assert {"r", "d", "w", "resolution", "flops", "params"} <= set(data)
    assert data["resolution"] == 188 and data["params"] == 3_730_562
    assert 199e6 < data["flops"] < 202e6


def test_flops_measure_agrees(capsys):
    code, out, _ = run(capsys, "flops", "--r", "0.5", "--d", "0.5", "--w", "0.5", "--json", "--measure")
    data = json.loads(out)
    assert code == 0 and data["flops"] == data["measured_flops"] and data["params"] == data["measured_params"]


@pytest.mark.parametrize("command", [[], ["flops"], ["train"], ["search"], ["ui"], ["report"]])
def test_help_shows_an_example(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert "example" in out and "tinyray" in out


BAD_INPUTS = [
    (["flops", "--r", "x", "--d", "1", "--w", "1"], "--r must be a number"),
    (["flops", "--r", "-1", "--d", "1", "--w", "1"], "--r must be a positive number"),
    (["flops", "--r", "2", "--d", "1", "--w", "1"], "outside the space"),
    (["flops", "--r", "0.5", "--d", "1", "--w", "1", "--space", "nope"], "unknown search space"),
    (["flops", "--r", "0.5", "--d", "1", "--w", "1", "--space", "/no/such.yaml"], "does not exist"),
    (["flops", "--r", "0.5", "--d", "1"], "required: --w"),
    (["flops", "--r", "0.5", "--d", "1", "--w", "1", "--num-classes", "0"], "--num-classes must be at least 1"),
    (["train", "--r", "0.5", "--d", "1", "--w", "1", "--epochs", "0"], "--epochs must be at least 1"),
    (["train", "--r", "0.5", "--d", "1", "--w", "1", "--data", "/no/such/folder"], "does not exist"),
    (["train", "--r", "0.5", "--d", "1", "--w", "1", "--recipe", "fast"], "invalid choice"),
    (["search", "--budget", "200X"], "is not a number of FLOPs"),
    (["search", "--budget", "0"], "positive"),
    (["search", "--budget", "nan"], "is not a number of FLOPs"),
    (["search", "--budget", ""], "(empty)"),
    (["search", "--budget", "200M", "--trials", "0"], "--trials must be at least 1"),
    (["search", "--budget", "200M", "--max-epochs", "x"], "--max-epochs must be a whole number"),
    (["search", "--budget", "200M", "--grace-period", "9", "--max-epochs", "3"], "--grace-period 9 exceeds"),
    (["search", "--budget", "200M", "--reduction-factor", "1"], "--reduction-factor must be at least 2"),
    (["search", "--budget", "200M", "--searcher", "grid"], "invalid choice"),
    (["search", "--budget", "200M", "--scheduler", "pbt"], "invalid choice"),
    (["search", "--budget", "200M", "--pop-size", "2"], "--pop-size must be at least 4"),
    (["search", "--budget", "200M", "--cpus-per-trial", "0"], "--cpus-per-trial must be a positive"),
    (["search", "--budget", "200M", "--gpus-per-trial", "-1"], "--gpus-per-trial must be zero or"),
    (["search", "--budget", "200M", "--gpus-per-trial", "1.5"], "must be a fraction below 1"),
    (["search", "--budget", "200M", "--name", "a b"], "--name 'a b'"),
    (["search", "--budget", "200M", "--floor", "x"], "budget 'x'"),
    (["search", "--budget", "1k"], "below the smallest network"),
    (["search", "--budget", "200M", "--data", "/no/such/folder"], "does not exist"),
    (["search", "--budget", "200M", "--quiet", "--json"], "not allowed with"),
    (["ui", "/no/such/folder"], "does not exist"),
    (["ui", "."], "no MLflow store"),
    (["ui", ".", "--port", "x"], "--port must be a whole number"),
    (["ui", ".", "--port", "70000"], "--port must be at most 65535"),
    (["ui", ".", "--tracking-uri", "http://127.0.0.1:9"], "no MLflow server answers at http://127.0.0.1:9"),
    (["ui", "--tracking-uri", "sqlite:///no/such.db"], "no MLflow store at sqlite:///no/such.db"),
    (["report"], "required: RESULTS_DIR"),
    (["report", "/no/such/folder"], "does not exist"),
    (["report", "."], "has no trials.csv"),
    (["nosuch"], "invalid choice"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)  # nothing may be written, even by accident, in the working folder
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_ui_on_a_port_in_use_is_one_line_and_exit_2(capsys, tmp_path):
    import socket

    (tmp_path / "mlflow.db").touch()  # a storage root; the port is checked before any server starts
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(capsys, "ui", str(tmp_path), "--port", str(port))
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_exit_status_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "tinyray", "search", "--budget=-5M"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "200M" in proc.stderr
