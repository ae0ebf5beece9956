"""Tests of tinyray.imagenet (``tinyray data imagenet100`` and ``tinyray data verify``) on a fake ImageNet layout
the tests write: 12 wnid class folders of tiny JPEGs, 6 training and 2 validation images each."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest

from tinyray.cli import main
from tinyray.errors import UserError
from tinyray.imagenet import KAGGLE_IMAGES, MANIFEST_FILE, SubsetConfig, build_subset, draw, verify_subset

WNIDS = [f"n0{index:07d}" for index in range(1, 13)]
TRAIN_PER_CLASS, VAL_PER_CLASS = 6, 2


def write_jpeg(path: Path, colour: tuple[int, int, int], width: int = 8) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, 8), colour).save(path, format="JPEG")


def fake_imagenet(root: Path, wnids=WNIDS, train: int = TRAIN_PER_CLASS, flat_val: bool = False) -> Path:
    """ImageNet's layout: ``train/<wnid>/<wnid>_<n>.JPEG`` and ``val/<wnid>/ILSVRC2012_val_<n>.JPEG`` (or a flat
    ``val/``); widths differ, so that the files' sizes do."""
    number = 0
    for k, wnid in enumerate(wnids):
        for index in range(train):
            write_jpeg(root / "train" / wnid / f"{wnid}_{index}.JPEG", (20 * k, 30 * index, 90), 8 + index)
        for _ in range(VAL_PER_CLASS):
            number += 1
            folder = root / "val" if flat_val else root / "val" / wnid
            write_jpeg(folder / f"ILSVRC2012_val_{number:08d}.JPEG", (20 * k, 0, 200), 8 + number % 5)
    return root


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    return fake_imagenet(tmp_path_factory.mktemp("imagenet") / "ILSVRC2012")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exc:  # argparse's own exits
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def subset(capsys, src: Path, out: Path, *options: str) -> dict:
    code, stdout, err = run(capsys, "data", "imagenet100", "--src", src, "--out", out, "--classes", "5",
                            "--train-per-class", "3", *options)
    assert code == 0, err
    return json.loads((out / MANIFEST_FILE).read_text())


def tree(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.name != MANIFEST_FILE)


# ---- the draw -------------------------------------------------------------------------------------------------


def test_draw_depends_on_seed_and_names_only_and_nests():
    names = [f"n{index:08d}" for index in range(1000)]
    hundred = draw(names, 100, seed=0, salt="classes")
    assert len(hundred) == 100 and hundred == sorted(hundred)
    assert draw(list(reversed(names)), 100, seed=0, salt="classes") == hundred  # any order of the source
    assert set(draw(names, 10, seed=0, salt="classes")) <= set(hundred)  # fewer is a part of more
    assert draw(names, 100, seed=1, salt="classes") != hundred
    assert draw(names, 100, seed=0, salt="n00000001") != hundred  # each class draws its images independently


# ---- building a subset ----------------------------------------------------------------------------------------


def test_same_seed_same_subset_other_seed_another(capsys, tmp_path, imagenet):
    first = subset(capsys, imagenet, tmp_path / "a")
    again = subset(capsys, imagenet, tmp_path / "b")
    other = subset(capsys, imagenet, tmp_path / "c", "--seed", "1")
    assert first["classes"] == again["classes"] and tree(tmp_path / "a") == tree(tmp_path / "b")
    assert [entry["source"] for entry in first["files"]] == [entry["source"] for entry in again["files"]]
    assert first["classes"] != other["classes"]
    smaller = subset(capsys, imagenet, tmp_path / "d", "--classes", "3")  # overrides the 5 above
    assert set(smaller["classes"]) <= set(first["classes"])


def test_counts_links_and_manifest(capsys, tmp_path, imagenet):
    out = tmp_path / "in5"
    code, stdout, err = run(capsys, "data", "imagenet100", "--src", imagenet, "--out", out, "--classes", "5",
                            "--train-per-class", "3", "--seed", "4", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert (summary["classes"], summary["train"], summary["val"]) == (5, 15, 10)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    from tinyray import __version__

    assert manifest["version"] == 1 and manifest["kind"] == "imagenet100"
    assert manifest["tinyray_version"] == __version__ and manifest["seed"] == 4 and manifest["link"] == "symlink"
    assert manifest["source"] == str(imagenet) and manifest["source_classes"] == 12
    assert manifest["val_layout"] == "folders"
    assert manifest["counts"] == {"classes": 5, "train_per_class": 3, "train": 15, "val": 10}
    classes = manifest["classes"]
    assert len(classes) == 5 and classes == sorted(classes) and set(classes) <= set(WNIDS)
    assert sorted(path.name for path in (out / "train").iterdir()) == classes
    assert sorted(path.name for path in (out / "val").iterdir()) == classes
    for wnid in classes:
        train = sorted((out / "train" / wnid).iterdir())
        val = sorted((out / "val" / wnid).iterdir())
        assert len(train) == 3 and len(val) == VAL_PER_CLASS  # N drawn; every validation image of the class
        assert [path.name for path in val] == sorted(path.name for path in (imagenet / "val" / wnid).iterdir())
    assert len(manifest["files"]) == 25
    for entry in manifest["files"]:
        link = out / entry["path"]
        source = Path(entry["source"])
        assert link.is_symlink() and os.readlink(link) == str(source) and source.is_absolute()
        assert source.parent.name == Path(entry["path"]).parent.name  # linked from the class's own folder
        assert entry["size"] == source.stat().st_size and "sha256" not in entry
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    # the manifest's command builds the same subset again
    words = shlex.split(manifest["command"])
    assert words[:3] == ["tinyray", "data", "imagenet100"] and "--seed" in words
    words[words.index("--out") + 1] = str(tmp_path / "rebuilt")
    assert main(words[1:]) == 0
    assert tree(tmp_path / "rebuilt") == tree(out)


def test_the_subset_loads_as_folder_data(capsys, tmp_path, imagenet):
    import torch

    from tinyray.data import FolderData, load_data

    manifest = subset(capsys, imagenet, tmp_path / "in5")
    data = load_data(str(tmp_path / "in5"))
    assert isinstance(data, FolderData) and data.classes == tuple(manifest["classes"])
    train, val = data.loaders(resolution=16, batch_size=5, seed=0)
    images, labels = next(iter(train))
    assert images.shape == (5, 3, 16, 16) and labels.dtype == torch.int64
    assert sum(len(labels) for _, labels in val) == 10 and not train.skipped


@pytest.mark.parametrize("link", ["hardlink", "copy"])
def test_hard_links_and_copies(capsys, tmp_path, imagenet, link):
    manifest = subset(capsys, imagenet, tmp_path / "out", "--link", link)
    assert manifest["link"] == link
    for entry in manifest["files"]:
        made, source = tmp_path / "out" / entry["path"], Path(entry["source"])
        assert not made.is_symlink() and made.read_bytes() == source.read_bytes()
        assert os.path.samefile(made, source) == (link == "hardlink")
    assert verify_subset(tmp_path / "out").ok


def test_kaggle_layout_with_a_flat_val_and_loc_val_solution(capsys, tmp_path):
    root = tmp_path / "kaggle"
    images = fake_imagenet(root / KAGGLE_IMAGES, flat_val=True)
    rows = ["ImageId,PredictionString"]
    number = 0
    for wnid in WNIDS:
        for _ in range(VAL_PER_CLASS):
            number += 1
            rows.append(f"ILSVRC2012_val_{number:08d},{wnid} 1 2 30 40 {wnid} 5 6 7 8")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    manifest = subset(capsys, root, tmp_path / "out")  # the Kaggle root; its CLS-LOC folder found below it
    assert manifest["source"] == str(images) and manifest["val_layout"] == str(root / "LOC_val_solution.csv")
    assert manifest["counts"]["val"] == 5 * VAL_PER_CLASS
    for entry in manifest["files"]:
        if entry["path"].startswith("val/"):
            wnid = entry["path"].split("/")[1]
            assert f"{wnid} 1 2" in next(row for row in rows if Path(entry["source"]).stem in row)
    # lines 'IMAGE WNID' label a flat val/ as well
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{row.split(',')[0]}.JPEG {row.split(',')[1].split()[0]}\n" for row in rows[1:]))
    again = subset(capsys, images, tmp_path / "again", "--val-labels", labels)
    assert tree(tmp_path / "again") == tree(tmp_path / "out")
    assert again["val_layout"] == str(labels)


# ---- verify ---------------------------------------------------------------------------------------------------


def test_verify_passes_and_finds_missing_changed_and_extra_files(capsys, tmp_path):
    source = fake_imagenet(tmp_path / "imagenet")
    out = tmp_path / "in5"
    manifest = subset(capsys, source, out)
    code, stdout, _ = run(capsys, "data", "verify", out)
    assert code == 0 and "25 files of 5 classes match manifest.json" in stdout

    train = [entry for entry in manifest["files"] if entry["path"].startswith("train/")]
    (out / train[0]["path"]).unlink()  # missing
    (out / train[1]["path"]).unlink()
    (out / train[1]["path"]).write_bytes(b"x")  # a file in place of the link
    other = next(path for path in (source / "train").rglob("*.JPEG") if str(path) != train[2]["source"])
    (out / train[2]["path"]).unlink()
    (out / train[2]["path"]).symlink_to(other)  # a link to another image
    Path(train[3]["source"]).write_bytes(b"changed")  # the source itself changed size
    Path(train[4]["source"]).unlink()  # the source is gone
    write_jpeg(out / "val" / manifest["classes"][0] / "extra.JPEG", (1, 2, 3))  # not in the manifest
    write_jpeg(out / "val" / "n09999999" / "x.JPEG", (1, 2, 3))  # a class it does not list
    code, stdout, err = run(capsys, "data", "verify", out)
    assert code == 1, err
    lines = stdout.strip().splitlines()
    assert f"{train[0]['path']}: missing" in lines
    assert f"{train[1]['path']}: not a link to its source" in lines
    assert f"{train[2]['path']}: links to {other}, the manifest says {train[2]['source']}" in lines
    assert f"{train[3]['path']}: 7 bytes, the manifest says {train[3]['size']}" in lines
    assert f"{train[4]['path']}: its source is gone" in lines
    assert f"val/{manifest['classes'][0]}/extra.JPEG: not in the manifest" in lines
    assert "val/n09999999: a class folder the manifest does not list" in lines
    assert "val/n09999999/x.JPEG: not in the manifest" in lines
    assert lines[-1].endswith("8 differences from manifest.json in 25 files: rebuild it with the manifest's command")
    code, stdout, _ = run(capsys, "data", "verify", out, "--json")
    report = json.loads(stdout)
    assert code == 1 and not report["ok"] and len(report["problems"]) == 8 and report["checked"] == 25


def test_verify_with_checksums_finds_a_change_of_the_same_size(capsys, tmp_path, imagenet):
    out = tmp_path / "copied"
    manifest = subset(capsys, imagenet, out, "--link", "copy", "--checksums")
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"])
    code, stdout, _ = run(capsys, "data", "verify", out)
    assert code == 0 and "(sizes, SHA-256, links)" in stdout
    changed = out / manifest["files"][0]["path"]
    data = bytearray(changed.read_bytes())
    data[-3] ^= 0xFF  # same size, other bytes
    changed.write_bytes(bytes(data))
    code, stdout, _ = run(capsys, "data", "verify", out)
    assert code == 1 and f"{manifest['files'][0]['path']}: its SHA-256 differs from the manifest's" in stdout
    assert run(capsys, "data", "verify", out, "--no-checksums")[0] == 0  # sizes alone cannot see it


def test_verify_errors_are_one_line_and_exit_2(capsys, tmp_path, imagenet):
    code, _, err = run(capsys, "data", "verify", tmp_path)
    assert code == 2 and f"{tmp_path} has no manifest.json" in err and len(err.strip().splitlines()) == 1
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"version": 99}))
    code, _, err = run(capsys, "data", "verify", tmp_path)
    assert code == 2 and "not a subset manifest of version 1 (version 99)" in err
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"version": 1, "files": [{"path": "../../etc/passwd", "size": 1}]}))
    code, _, err = run(capsys, "data", "verify", tmp_path)
    assert code == 2 and "is damaged" in err and "Traceback" not in err


# ---- errors ---------------------------------------------------------------------------------------------------


def _broken_sources(root: Path) -> dict[str, Path]:
    made = {"missing": root / "nowhere"}
    made["no train"] = root / "notrain"
    (made["no train"] / "val").mkdir(parents=True)
    made["not wnids"] = root / "pets"
    for name in ("cat", "dog"):
        write_jpeg(made["not wnids"] / "train" / name / "0.JPEG", (1, 2, 3))
    made["no val"] = fake_imagenet(root / "noval", wnids=WNIDS[:6])
    shutil.rmtree(made["no val"] / "val")
    made["few images"] = fake_imagenet(root / "few", train=2)
    made["flat val"] = fake_imagenet(root / "flat", flat_val=True)
    made["devkit"] = fake_imagenet(root / "devkit", flat_val=True)
    (made["devkit"] / "ground_truth.txt").write_text("490\n361\n171\n")
    made["val class missing"] = fake_imagenet(root / "valgap")
    for wnid in WNIDS:
        shutil.rmtree(made["val class missing"] / "val" / wnid)
    (made["val class missing"] / "val" / WNIDS[0]).mkdir()  # val/ has class folders, but empty or missing ones
    return made


ERRORS = [
    ("missing", [], "does not exist: give --src the ImageNet-1k folder that holds train/ and val/"),
    ("no train", [], "is not an ImageNet layout: it has no train/ folder"),
    ("not wnids", [], "its class folders are not WordNet ids like n01440764 (cat, dog)"),
    ("no val", ["--classes", "3"], "is not an ImageNet layout: it has no val/ folder"),
    ("few images", [], "training images in"),
    ("few images", ["--train-per-class", "2", "--classes", "13"], "has 12 class folders, fewer than the 13 asked"),
    ("flat val", [], "has no class folders (val/<wnid>/) and no LOC_val_solution.csv was found"),
    ("devkit", ["--val-labels", "{src}/ground_truth.txt"], "holds class numbers (the devkit's"),
    ("val class missing", [], "has no validation images in"),
]


@pytest.mark.parametrize("case, options, message", ERRORS, ids=[f"{case} {' '.join(o)}" for case, o, _ in ERRORS])
def test_bad_sources_are_one_line_exit_2_and_write_nothing(capsys, tmp_path, case, options, message):
    src = _broken_sources(tmp_path / "sources")[case]
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "data", "imagenet100", "--src", src, "--out", out, "--train-per-class", "3",
                            "--classes", "5", *[option.replace("{src}", str(src)) for option in options])
    assert code == 2, err
    assert message in err, err
    assert err.startswith("tinyray data imagenet100: error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and stdout == ""
    assert sorted(tmp_path.rglob("*")) == before  # no out, no hidden half-built folder beside it


def test_few_training_images_names_the_class_and_the_fix(capsys, tmp_path):
    src = fake_imagenet(tmp_path / "few", train=2)
    code, _, err = run(capsys, "data", "imagenet100", "--src", src, "--out", tmp_path / "out", "--classes", "5")
    assert code == 2
    assert f"has 2 training images in {src / 'train'}/n0" in err
    assert "fewer than the 500 asked: lower --train-per-class" in err


def test_out_must_be_new_or_empty_and_outside_the_source(capsys, tmp_path, imagenet):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, message in ((taken, "exists and is not an empty folder"), (afile, "exists and is not an empty folder"),
                         (imagenet / "in5", "is inside the source")):
        code, _, err = run(capsys, "data", "imagenet100", "--src", imagenet, "--out", out, "--classes", "2",
                           "--train-per-class", "2")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert (taken / "notes.txt").read_text() == "mine" and not (imagenet / "in5").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    subset(capsys, imagenet, empty)  # an empty folder is fine
    assert len(tree(empty)) == 2 + 5 * 2 + 25  # split and class folders, files


def test_bad_numbers_are_usage_errors(capsys, tmp_path, imagenet):
    for option, value, message in (("--classes", "0", "--classes must be at least 1"),
                                   ("--train-per-class", "x", "--train-per-class must be a whole number"),
                                   ("--link", "reflink", "invalid choice: 'reflink'")):
        code, _, err = run(capsys, "data", "imagenet100", "--src", imagenet, "--out", tmp_path / "o", option, value)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_a_failure_while_linking_leaves_nothing(tmp_path, imagenet, monkeypatch):
    from tinyray import imagenet as module

    made = []

    def fail_on_the_fourth(source: Path, target: Path, link: str) -> None:
        if len(made) == 3:
            raise UserError("cannot symlink it (disk full)")
        os.symlink(source, target)
        made.append(target)

    monkeypatch.setattr(module, "_link", fail_on_the_fourth)
    with pytest.raises(UserError, match="disk full"):
        build_subset(SubsetConfig(src=imagenet, out=tmp_path / "out", classes=3, train_per_class=2))
    assert list(tmp_path.iterdir()) == [] and made and not made[0].parent.exists()


def test_a_file_system_without_symlinks_names_the_other_link_modes(tmp_path, imagenet, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)
    with pytest.raises(UserError, match="Operation not permitted.*try --link hardlink or --link copy"):
        build_subset(SubsetConfig(src=imagenet, out=tmp_path / "out", classes=2, train_per_class=2))
    assert list(tmp_path.iterdir()) == []
