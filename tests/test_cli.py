"""The command line: outputs people and scripts read, and one line with exit status 2 for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinyray.cli import main
from tinyray.space import SPACES_DIR


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


@pytest.mark.parametrize("command", [[], ["flops"], ["train"], ["search"], ["publish"], ["bench", "search"], ["bench", "train"], ["formula"], ["export"], ["ui"], ["report"], ["data", "imagenet100"], ["data", "verify"]])
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
    (["train", "--r", "0.5", "--d", "1", "--w", "1", "--workers", "-1"], "--workers must be at least 0"),
    (["train", "--r", "0.5", "--d", "1", "--w", "1", "--device", "gpu0"], "is not a torch device"),
    (["train", "--r", "0.5", "--d", "1", "--w", "1", "--precision", "fp8"], "invalid choice"),
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
    (["search", "--budget", "200M", "--formula-name", "my model"], "--formula-name 'my model'"),
    (["search", "--budget", "200M", "--floor", "x"], "budget 'x'"),
    (["search", "--budget", "1k"], "below the smallest network"),
    (["search", "--budget", "200M", "--data", "/no/such/folder"], "does not exist"),
    (["search", "--budget", "200M", "--quiet", "--json"], "not allowed with"),
    (["search", "--budget", "200M", "--precision", "fp8"], "invalid choice"),
    (["search", "--budget", "200M", "--workers", "-1"], "--workers must be at least 0"),
    (["search", "--budget", "200M", "--workers", "two"], "--workers must be a whole number"),
    (["search", "--budget", "200M", "--workers", "5000"], "--workers must be at most 1024"),
    (["publish"], "required: RESULTS_DIR"),
    (["publish", "/no/such/folder"], "does not exist"),
    (["publish", "."], "not the results folder of a tinyray search"),
    (["publish", ".", "--tracking-uri"], "expected one argument"),
    (["search", "--budget", "200M", "--scheduler", "hyperband"], "invalid choice"),
    (["bench", "search", "--methods", "a,x"], "--methods must be a comma-separated subset of a,b,c,d,e"),
    (["bench", "search", "--seeds", "0"], "--seeds must be at least 1"),
    (["bench", "search", "--max-epochs", "99"], "exceeds the 6 epochs recorded in the curves"),
    (["bench", "search", "--curves", "/no/such.csv"], "does not exist"),
    (["bench", "search", "--budget", "1k"], "below the smallest network"),
    (["bench"], "required: BENCHMARK"),
    (["ui", "/no/such/folder"], "does not exist"),
    (["ui", "."], "no MLflow store"),
    (["ui", ".", "--port", "x"], "--port must be a whole number"),
    (["ui", ".", "--port", "70000"], "--port must be at most 65535"),
    (["ui", ".", "--tracking-uri", "http://127.0.0.1:9"], "no MLflow server answers at http://127.0.0.1:9"),
    (["ui", "--tracking-uri", "sqlite:///no/such.db"], "no MLflow store at sqlite:///no/such.db"),
    (["report"], "required: RESULTS_DIR"),
    (["data"], "required: DATA_COMMAND"),
    (["data", "imagenet100", "--out", "x"], "required: --src"),
    (["data", "imagenet100", "--src", "/no/such/imagenet", "--out", "x"], "/no/such/imagenet does not exist"),
    (["data", "verify", "/no/such/subset"], "has no manifest.json"),
    (["report", "/no/such/folder"], "does not exist"),
    (["report", "."], "has no trials.csv"),
    (["nosuch"], "invalid choice"),
]


# Inputs that need files: {bad} is a folder of broken search spaces, data folders and results (made once below).
BAD_FILES = [
    (["search", "--budget", "200M", "--space", "{bad}/missing.yaml"], "does not exist"),
    (["search", "--budget", "200M", "--space", "{bad}/malformed.yaml"], "is not valid YAML at line"),
    (["search", "--budget", "200M", "--space", "{bad}/unknown.yaml"], "unknown key 'colour'"),
    (["search", "--budget", "200M", "--space", "{bad}/wrongtype.yaml"], "base_resolution must be an integer"),
    (["search", "--budget", "200M", "--space", "{bad}/reversed.yaml"], "bounds.r is reversed"),
    (["flops", "--r", "0.5", "--d", "0.5", "--w", "0.5", "--space", "{bad}/reversed.yaml"], "bounds.r is reversed"),
    (["search", "--budget", "5G"], "above the largest network"),
    (["search", "--budget", "200M", "--floor", "300M"], "above the budget"),
    (["search", "--budget", "200M", "--data", "{bad}/empty"], "has no train/ subfolder"),
    (["search", "--budget", "200M", "--data", "{bad}/noclasses"], "has no class folders"),
    (["search", "--budget", "200M", "--data", "{bad}/noimages"], "holds no images"),
    (["search", "--budget", "200M", "--data", "{bad}/corrupt"], "cannot read image"),
    (["search", "--budget", "200M", "--data", "{bad}/mismatch"], "different class folders"),
    (["train", "--r", "0.5", "--d", "0.5", "--w", "0.5", "--data", "{bad}/corrupt"], "cannot read image"),
    (["search", "--budget", "200M", "--storage", "{bad}/afile"], "not a writable folder"),
    (["search", "--budget", "200M", "--storage", "{bad}/results", "--name", "taken"], "already exists"),
    (["search", "--budget", "200M", "--address", "127.0.0.1:9"], "nothing answers at 127.0.0.1:9"),
    (["search", "--resume", "--name", "nosuch", "--storage", "{bad}/results"], "no search named 'nosuch'"),
    (["search", "--resume", "--storage", "{bad}/results"], "--resume needs the --name"),
    (["search", "--resume", "--name", "taken", "--storage", "{bad}/results", "--trials", "99"], "--trials 99 differs"),
    (["search", "--storage", "{bad}/results"], "--budget is required"),
    (["search", "--budget", "200M", "--retries", "-1"], "--retries must be at least 0"),
    (["search", "--budget", "200M", "--seed", "-3"], "--seed must be at least 0"),
    (["train", "--r", "0.5", "--d", "0.5", "--w", "0.5", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["train", "--r", "0.5", "--d", "0.5", "--w", "0.5", "--threads", "0"], "--threads must be at least 1"),
    (["train", "--r", "0.5", "--d", "3", "--w", "0.5"], "--d 3 is outside the space"),
    (["flops", "--r", "0.5", "--d", "0.5", "--w", "inf"], "--w must be a positive number"),
    (["formula", "--budget", "100M", "--storage", "{bad}/results"], "no formula found"),
    (["formula", "--budget", "100M", "--from", "{bad}/afile"], "lacks the column"),
    (["formula", "--budget", "100M", "--model-uri", "models:/nothing/1", "--tracking-uri", "sqlite:///{bad}/none.db"], "no MLflow store at"),
    (["formula", "--budget", "100M", "--num-classes", "0"], "--num-classes must be at least 1"),
    (["export", "--budget", "100M", "--out", "{bad}/afile", "--storage", "{bad}/results"], "not an empty folder"),
    (["export", "--budget", "x", "--out", "{bad}/new"], "not a number of FLOPs"),
    (["export", "--budget", "100M", "--out", "{bad}/new", "--train-epochs", "-1"], "--train-epochs must be at least 0"),
]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("bad")
    good = (SPACES_DIR / "efficientnet_b0.yaml").read_text()
    (root / "malformed.yaml").write_text("name: [unclosed\nblocks: 3\n")
    (root / "unknown.yaml").write_text(good + "colour: blue\n")
    (root / "wrongtype.yaml").write_text(good.replace("base_resolution: 224", "base_resolution: big"))
    (root / "reversed.yaml").write_text(good.replace("r: [0.25, 1.0]", "r: [1.0, 0.25]"))
    (root / "empty").mkdir()
    for split in ("train", "val"):
        (root / "noclasses" / split).mkdir(parents=True)
        (root / "noimages" / split / "cat").mkdir(parents=True)
        for name in ("cat", "dog") if split == "train" else ("cat", "fox"):
            folder = root / "mismatch" / split / name
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(folder / "a.png")
        (root / "corrupt" / split / "cat").mkdir(parents=True)
        (root / "corrupt" / split / "cat" / "a.jpg").write_bytes(b"not a jpeg at all")
    (root / "afile").write_text("a file, not a folder")
    (root / "results" / "taken").mkdir(parents=True)
    (root / "results" / "taken" / "search.json").write_text(json.dumps(
        {"version": 1, "config": {"budget": 200_000_000, "name": "taken", "trials": 30}}))
    return root


@pytest.mark.parametrize("argv, message", BAD_FILES, ids=[" ".join(a) for a, _ in BAD_FILES])
def test_bad_files_and_services_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, bad, argv, message):
    monkeypatch.chdir(tmp_path)
    before = sorted(str(p) for p in bad.rglob("*"))
    code, out, err = run(capsys, *[arg.replace("{bad}", str(bad)) for arg in argv])
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
    assert sorted(str(p) for p in bad.rglob("*")) == before  # nothing half-written, nothing lost


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)  # nothing may be written, even by accident, in the working folder
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_train_on_cuda_without_a_gpu_is_one_line_and_exit_2(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on the machine these tests were written on
    code, _, err = run(capsys, "train", "--r", "0.5", "--d", "1", "--w", "1", "--device", "cuda")
    assert code == 2 and "torch sees no CUDA GPU here; use --device cpu" in err and len(err.strip().splitlines()) == 1


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
