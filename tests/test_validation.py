"""Validation before anything starts: every bad option, size, name or environment value is one line on stderr,
exit status 2, no traceback, and nothing written under --storage (nor in the working folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinyray.cli import main
from tinyray.space import SPACES_DIR

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
    (["search", "--budget", "60M", "--workers", "100000"], {}, "--workers must be at most"),
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
    from tinyray.faults import parse_faults

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


# -- space files and data folders: whatever the file holds, one line and exit 2 ------------------------------------
GOOD_SPACE = (SPACES_DIR / "efficientnet_b0.yaml").read_text()
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
SPACES = {  # file name -> content (str or bytes), message
    "huge.yaml": ("# padding\n" * 8000 + GOOD_SPACE, "larger than 64 KB"),
    "binary.yaml": (b"\x00\x01\x02\xff" * 100, "is not UTF-8 text"),
    "nul.yaml": (GOOD_SPACE + "\0\n", "is a binary file"),
    "bomb.yaml": (GOOD_SPACE + "description:\n" + "".join("  " + line + "\n" for line in BOMB.splitlines()),
                  "uses YAML aliases"),
    "aliases.yaml": (BOMB, "uses YAML aliases"),
    "deep.yaml": ("[" * 20000 + "]" * 20000 + "\n", "nested too deeply"),
    "r0.yaml": (GOOD_SPACE.replace("ir_r2_k3_s2_e6_c24", "ir_r0_k3_s2_e6_c24"), "_r0 is out of range"),
    "k0.yaml": (GOOD_SPACE.replace("ir_r2_k3_s2_e6_c24", "ir_r2_k0_s2_e6_c24"), "_k0 is out of range"),
    "k4.yaml": (GOOD_SPACE.replace("ir_r2_k3_s2_e6_c24", "ir_r2_k4_s2_e6_c24"), "must be an odd kernel"),
    "s0.yaml": (GOOD_SPACE.replace("ir_r2_k3_s2_e6_c24", "ir_r2_k3_s0_e6_c24"), "_s0 is out of range"),
    "e0.yaml": (GOOD_SPACE.replace("ir_r2_k3_s2_e6_c24", "ir_r2_k3_s2_e0_c24"), "_e0 is out of range"),
    "c0.yaml": (GOOD_SPACE.replace("ir_r2_k3_s2_e6_c24", "ir_r2_k3_s2_e6_c0"), "_c0 is out of range"),
    "chuge.yaml": (GOOD_SPACE.replace("ir_r2_k3_s2_e6_c24", "ir_r2_k3_s2_e6_c" + "9" * 40), "is out of range"),
    "se2.yaml": (GOOD_SPACE.replace("ir_r2_k3_s2_e6_c24_se0.25", "ir_r2_k3_s2_e6_c24_se2"), "_se2 is out of range"),
    "rmax.yaml": (GOOD_SPACE.replace("r: [0.25, 1.0]", "r: [0.25, 1.0e+308]"), "at most 8"),
    "rinf.yaml": (GOOD_SPACE.replace("r: [0.25, 1.0]", "r: [0.25, 1.0e+999]"), "at most 8"),
    "bigint.yaml": (GOOD_SPACE.replace("base_resolution: 224", "base_resolution: " + "9" * 400), "up to 4096"),
    "stages.yaml": (GOOD_SPACE.replace("blocks:", "blocks:\n" + "  - [ds_r1_k3_s1_e1_c16]\n" * 40, 1), "more than 32"),
}


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb as PIL sees it)."""
    import io
    import struct
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def _image_tree(root: Path, classes=("cat", "dog"), images: int = 2) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(images):
                Image.new("RGB", (16, 16), (40 * index, 80, 120)).save(folder / f"{index}.png")
    return root


def _data_folders(root: Path) -> dict[str, tuple[str, str]]:
    """Broken data folders: name -> (path, message)."""
    made = {}
    bomb = _image_tree(root / "bomb")
    for index in range(2):  # every image of the class: one alone would be skipped with a warning (issue 18)
        (bomb / "train" / "cat" / f"{index}.png").write_bytes(_png_claiming(40000, 40000))
    made["bomb"] = (str(bomb), "exceeds limit")
    loop = _image_tree(root / "loop")
    (loop / "train" / "cat" / "again").symlink_to(loop / "train" / "cat", target_is_directory=True)
    made["symlink loop"] = (str(loop), "a symlink loop")
    fifo = _image_tree(root / "fifo")
    os.mkfifo(fifo / "train" / "dog" / "2.png")
    made["fifo"] = (str(fifo), "is not a regular file")
    made["single class"] = (str(_image_tree(root / "single", classes=("cat",))), "at least two classes")
    odd = _image_tree(root / "oddclass")
    for split in ("train", "val"):
        os.rename(odd / split / "dog", os.fsencode(odd / split) + b"/d\xffg")
    made["class not utf-8"] = (str(odd), "has a name that is not UTF-8")
    raw = os.fsencode(root) + b"/r\xe9sultats"
    _image_tree(Path(os.fsdecode(raw)))
    made["root not utf-8"] = (os.fsdecode(raw), "is not UTF-8: rename it")
    return made


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    for name, (content, _) in SPACES.items():
        path = root / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return root, _data_folders(root / "data")


@pytest.mark.parametrize("name", list(SPACES))
def test_broken_space_files_are_one_line(capsys, broken, name):
    root, _ = broken
    try:
        code = main(["flops", "--r", "0.5", "--d", "0.5", "--w", "0.5", "--space", str(root / name)])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert SPACES[name][1] in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


DATA_CASES = ["bomb", "symlink loop", "fifo", "single class", "class not utf-8", "root not utf-8"]


@pytest.mark.parametrize("case", DATA_CASES)
def test_broken_data_folders_are_one_line_before_training(capsys, tmp_path, monkeypatch, broken, case):
    monkeypatch.chdir(tmp_path)
    _, folders = broken
    path, message = folders[case]
    code = main(["search", "--budget", "60M", "--data", path, "--storage", str(tmp_path / "st")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_image_during_training_is_skipped_and_counted_up_to_a_bound(tmp_path):
    from tinyray.data import MIN_SKIPPED_LIMIT, load_data
    from tinyray.errors import UserError

    root = _image_tree(tmp_path / "some", images=4)
    (root / "train" / "dog" / "3.png").write_bytes(b"not a png")  # not the first of its class: passes the check
    train, val = load_data(str(root)).loaders(resolution=16, batch_size=2, seed=0)
    for _ in range(2):  # two epochs: counted once
        seen = sum(len(labels) for _, labels in train)
    assert seen == 7 and len(train.skipped) == 1 and "3.png" in next(iter(train.skipped))
    assert sum(len(labels) for _, labels in val) == 8

    many = _image_tree(tmp_path / "many", images=MIN_SKIPPED_LIMIT + 3)
    for index in range(1, MIN_SKIPPED_LIMIT + 3):
        (many / "train" / "cat" / f"{index}.png").write_bytes(b"broken")
    # batch 2 of 26 images drops none, so all 12 broken ones are met whatever the epoch's order
    train, _ = load_data(str(many)).loaders(resolution=16, batch_size=2, seed=0)
    with pytest.raises(UserError, match=f"more than the {MIN_SKIPPED_LIMIT} tinyray skips"):
        for _ in train:
            pass
