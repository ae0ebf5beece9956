"""Validation before anything starts: every bad option, size, name or environment value is one line on stderr,
exit status 2, no traceback, and nothing written under --storage (nor in the working folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinyray.cli import main

FAULTS_FIX = "TINYRAY_FAULTS"
# (argv, environment, message): {st} is the --storage folder, which must stay absent
BEFORE_ANYTHING = [
    (["search", "--budget", "60M", "--floor", "60M"], {}, "equal to the budget"),
    (["search", "--budget", "60M", "--name", ""], {}, "--name is empty"),
    (["search", "--budget", "60M", "--name", "b60\n"], {}, "--name 'b60\\n' must be"),
    (["search", "--budget", "60M", "--name", "b\x1b[31m"], {}, "must be letters"),
    (["search", "--budget", "60M", "--name", "../up"], {}, "must be letters"),
    (["search", "--resume", "--name", "../up"], {}, "must be letters"),
    (["search", "--budget", "60M", "--storage", ""], {}, "--storage is empty"),
    (["search", "--budget", "60M", "--storage", "{st}\tx"], {}, "holds control characters"),
    (["search", "--budget", "60M"], {"TINYRAY_FAULTS": "[{"}, "TINYRAY_FAULTS is not JSON"),
    (["search", "--budget", "60M"], {"TINYRAY_FAULTS": '{"kind": "raise"}'}, "must be a list of objects"),
    (["search", "--budget", "60M"], {"TINYRAY_FAULTS": '[{"kind": "explode"}]'}, "kind 'explode' is not one of"),
    (["search", "--budget", "60M"], {"TINYRAY_FAULTS": '[{"kind": "nan", "epochs": 1}]'}, "unknown key 'epochs'"),
    (["search", "--budget", "60M"], {"TINYRAY_FAULTS": '[{"kind": "nan", "epoch": "1"}]'}, "epoch '1' has the wrong"),
    (["search", "--budget", "60M"], {"TINYRAY_FAULTS": '[{"kind": "nan", "param": "x"}]'}, "param 'x' is not r, d or w"),
    (["search", "--budget", "60M", "--data", "synthetic:2000000000/10"], {}, "more than the 100000"),
    (["search", "--budget", "60M", "--trials", "1000000000"], {}, "--trials must be at most 100000"),
    (["search", "--budget", "60M", "--pop-size", "99999999"], {}, "--pop-size must be at most"),
    (["search", "--budget", "60M", "--max-epochs", "1" + "0" * 30], {}, "--max-epochs must be at most"),
    (["search", "--budget", "60M", "--gpus-per-trial", "0.00001"], {}, "below Ray's precision of 0.0001"),
    (["search", "--budget", "60M", "--cpus-per-trial", "0.00001"], {}, "below Ray's precision of 0.0001"),
    (["search", "--budget", "60M", "--cpus-per-trial", "1e9"], {}, "more than any machine has"),
    (["flops", "--r", "0.5", "--d", "0.5", "--w", "0.5", "--num-classes", "1000000000"], {}, "--num-classes must be at most"),
    (["formula", "--budget", "100M", "--num-classes", "1000000000"], {}, "--num-classes must be at most"),
    (["train", "--r", "0.5", "--d", "0.5", "--w", "0.5", "--threads", "100000000"], {}, "--threads must be at most"),
    (["train", "--r", "0.5", "--d", "0.5", "--w", "0.5", "--threads", "1000"], {}, "CPUs of this machine"),
    (["train", "--r", "0.5", "--d", "0.5", "--w", "0.5", "--data", "synthetic:900000/900000"], {}, "more than the 100000"),
    (["bench", "search", "--levels", "1000000000"], {}, "--levels must be at most"),
    (["bench", "search", "--workers", "1000000000"], {}, "--workers must be at most"),
    (["bench", "search", "--seeds", "1000000"], {}, "--seeds must be at most"),
]


def _argv(argv: list[str], storage: Path) -> list[str]:
    argv = [arg.replace("{st}", str(storage)) for arg in argv]
    if argv[0] == "search" and "--storage" not in argv:
        argv += ["--storage", str(storage)]
    return argv


@pytest.mark.parametrize("argv, env, message", BEFORE_ANYTHING,
                         ids=[" ".join(a + [f"{k}={v}" for k, v in e.items()]) for a, e, _ in BEFORE_ANYTHING])
def test_refused_before_anything_is_made(capsys, tmp_path, monkeypatch, argv, env, message):
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    storage = tmp_path / "st"
    try:
        code = main(_argv(argv, storage))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no --storage folder, nothing in the working folder


def test_bad_faults_are_refused_by_the_parser_and_good_ones_pass():
    from tinyray.errors import UserError
    from tinyray.trial import parse_faults

    good = '[{"kind": "enospc", "epoch": 2, "param": "w", "above": 0.1, "below": 0.9, "once": true}]'
    assert parse_faults(good) == [{"kind": "enospc", "epoch": 2, "param": "w", "above": 0.1, "below": 0.9,
                                   "once": True}]
    assert parse_faults(None) == [] and parse_faults("  ") == []
    with pytest.raises(UserError, match="once 'True' has the wrong type"):
        parse_faults('[{"kind": "nan", "once": "True"}]')


# Requests Ray cannot give: found with ray.nodes() right after Ray starts, before any file or MLflow run.
IMPOSSIBLE = [
    (["--cpus-per-trial", str((os.cpu_count() or 1) + 1)], "is more than this machine has"),
    (["--gpus-per-trial", "0.5"], "--gpus-per-trial 0.5"),
]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("extra, message", IMPOSSIBLE, ids=[" ".join(e) for e, _ in IMPOSSIBLE])
def test_resources_ray_cannot_give_are_one_line(tmp_path, extra, message):
    import torch

    if "--gpus-per-trial" in extra:
        assert not torch.cuda.is_available(), "this drill expects a machine without a GPU"
    storage = tmp_path / "st"
    env = {**os.environ, "TINYRAY_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "tinyray", "search", "--budget", "60M", "--storage", str(storage),
                           "--data", "synthetic:300/100", *extra], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # no Ray notice before it, no traceback
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not storage.exists()
