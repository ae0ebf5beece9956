"""``tinyray data imagenet100``: the paper's ImageNet-100, a seeded subset of ImageNet-1k linked into a new folder.

The paper searched on ImageNet-100: 100 classes of ImageNet-1k drawn at random, 500 training images drawn per
class, and all the validation images of those classes (50 each). It does not publish its classes, so tinyray
draws its own, reproducibly, and writes what it drew into a manifest:

* The draw is a hash order, not a random generator: every class gets the key ``sha256("<seed>/classes/<wnid>")``
  and the ``--classes`` lowest keys are taken; every training image of a chosen class gets
  ``sha256("<seed>/<wnid>/<file name>")`` and the ``--train-per-class`` lowest are taken. The same seed therefore
  gives the same subset on any copy of ImageNet-1k, on any Python or NumPy version, and a smaller subset of the
  same seed is part of the larger one.
* The source is read, never written: the subset's ``train/<wnid>/`` and ``val/<wnid>/`` hold links to the
  source's files (symbolic by default; hard links or copies with ``--link``), and ``manifest.json`` lists every
  file with its source path and size (and its SHA-256 with ``--checksums``), the classes, seed, counts, the
  command that rebuilds it and tinyray's version. :func:`verify_subset` re-checks a subset against it.
* Everything that can be wrong with the source is found before anything is written, and the subset is built in
  a hidden sibling folder that is renamed to ``--out`` at the end: a failed or interrupted build leaves nothing.

The result is an ordinary ImageFolder tree, the ``--data`` of a search (:class:`tinyray.data.FolderData`).

Source layouts read (``--src``): the ILSVRC2012 folders ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (val
sorted into class folders, as most ImageNet copies are), or the Kaggle layout (``ILSVRC/Data/CLS-LOC/`` below
``--src``) whose ``val/`` is flat, labelled by ``LOC_val_solution.csv``. Any flat ``val/`` can be labelled by a
file of ``IMAGE WNID`` lines (``--val-labels``). The devkit's ``ILSVRC2012_validation_ground_truth.txt`` holds
class numbers in the devkit's own order, not wnids, and is refused with what to do instead.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from tinyray.errors import UserError
from tinyray.files import SUBSET_MANIFEST_VERSION, read_json, write_json_atomic

#: A WordNet id, the name of an ImageNet class folder (``n01440764``).
WNID = re.compile(r"n\d{8}")
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val")
#: How a subset's files point at the source's: ``--link`` choices, the default first.
LINK_MODES = ("symlink", "hardlink", "copy")
DEFAULT_CLASSES = 100
DEFAULT_TRAIN_PER_CLASS = 500
#: The Kaggle copy of ImageNet keeps the images below this folder and LOC_val_solution.csv beside ILSVRC/.
KAGGLE_IMAGES = Path("ILSVRC", "Data", "CLS-LOC")
KAGGLE_LABELS = "LOC_val_solution.csv"
#: Problems :func:`verify_subset` lists one by one before it only counts them.
SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class SubsetConfig:
    """What ``tinyray data imagenet100`` is asked for.

    Attributes:
        src: the ImageNet-1k folder (``train/`` and ``val/``, or the Kaggle root).
        out: the subset's folder: new, or an empty folder.
        seed: seed of the class and image draws.
        classes: classes drawn (the paper: 100).
        train_per_class: training images drawn per class (the paper: 500); every validation image is kept.
        link: ``symlink`` (default), ``hardlink`` (same file system) or ``copy``.
        val_labels: labels of a flat ``val/`` (``LOC_val_solution.csv`` or ``IMAGE WNID`` lines); ``None`` looks
            for ``LOC_val_solution.csv`` in the source.
        checksums: also record each file's SHA-256 (reads every chosen file once).
    """

    src: Path
    out: Path
    seed: int = 0
    classes: int = DEFAULT_CLASSES
    train_per_class: int = DEFAULT_TRAIN_PER_CLASS
    link: str = LINK_MODES[0]
    val_labels: Path | None = None
    checksums: bool = False

    def command(self) -> str:
        """The command that builds this subset again (absolute paths, every option spelled out)."""
        words = ["tinyray", "data", "imagenet100", "--src", _absolute(self.src), "--out", _absolute(self.out),
                 "--seed", str(self.seed), "--classes", str(self.classes),
                 "--train-per-class", str(self.train_per_class), "--link", self.link]
        if self.val_labels is not None:
            words += ["--val-labels", _absolute(self.val_labels)]
        if self.checksums:
            words.append("--checksums")
        return shlex.join(words)


@dataclass
class ImageNetSource:
    """An ImageNet-1k layout on disk, read lazily: the class list at once, a class's images when asked.

    Attributes:
        root: the folder holding ``train/`` and ``val/`` (absolute: the subset's links point into it).
        wnids: the training class folders, sorted.
        val_layout: ``folders`` (``val/<wnid>/``) or the labels file of a flat ``val/``.
        val_by_class: the flat ``val/``'s image names per wnid (empty for ``folders``).
    """

    root: Path
    wnids: tuple[str, ...]
    val_layout: str
    val_by_class: dict[str, list[str]] = field(default_factory=dict)

    def train_images(self, wnid: str) -> list[str]:
        """File names of the training images of class ``wnid``, sorted."""
        return _images_in(self.root / "train" / wnid)

    def val_images(self, wnid: str) -> list[Path]:
        """Paths of the validation images of class ``wnid``, sorted by name.

        Raises:
            UserError: the class has no validation images.
        """
        if self.val_layout == "folders":
            folder = self.root / "val" / wnid
            names = _images_in(folder) if folder.is_dir() else []
        else:
            names = self.val_by_class.get(wnid, [])
        if not names:
            raise UserError(f"class {wnid} has no validation images in {self.root / 'val'}"
                            + ("" if self.val_layout == "folders" else f" (labelled by {self.val_layout})")
                            + ": give a complete ImageNet-1k val/")
        folder = self.root / "val" / wnid if self.val_layout == "folders" else self.root / "val"
        return [folder / name for name in names]


def read_source(src: str | os.PathLike, val_labels: str | os.PathLike | None = None) -> ImageNetSource:
    """Read an ImageNet-1k layout: its training classes and how its validation images are labelled.

    Args:
        src: ``train/`` and ``val/`` below it, or the Kaggle root (``ILSVRC/Data/CLS-LOC/`` below it).
        val_labels: labels of a flat ``val/``; default ``LOC_val_solution.csv`` where the Kaggle layout keeps it.

    Raises:
        UserError: a missing source, no ``train/`` or ``val/``, no wnid class folders, or a flat ``val/``
            without labels.
    """
    given = Path(_absolute(src))
    if not given.is_dir():
        raise UserError(f"ImageNet source {given} {'is not a folder' if given.exists() else 'does not exist'}: give "
                        f"--src the ImageNet-1k folder that holds train/ and val/")
    root = given
    if not (root / "train").is_dir() and (given / KAGGLE_IMAGES / "train").is_dir():
        root = given / KAGGLE_IMAGES
    train = root / "train"
    if not train.is_dir():
        raise UserError(f"{given} is not an ImageNet layout: it has no train/ folder (train/<wnid>/*.JPEG, e.g. "
                        f"train/n01440764/): give --src the ImageNet-1k folder")
    folders = _folders_in(train)
    wnids = tuple(name for name in folders if WNID.fullmatch(name))
    if not wnids:
        seen = ", ".join(folders[:3]) or "no folders"
        raise UserError(f"{train} is not an ImageNet layout: its class folders are not WordNet ids like n01440764 "
                        f"({seen}): give --src the ImageNet-1k folder")
    val = root / "val"
    if not val.is_dir():
        raise UserError(f"{given} is not an ImageNet layout: it has no val/ folder beside train/: give --src the "
                        f"ImageNet-1k folder with both splits")
    if val_labels is None and any(WNID.fullmatch(name) for name in _folders_in(val)):
        return ImageNetSource(root=root, wnids=wnids, val_layout="folders")
    labels_file = Path(val_labels).expanduser() if val_labels is not None else _find_labels(given, root)
    if labels_file is None:
        raise UserError(f"{val} has no class folders (val/<wnid>/) and no {KAGGLE_LABELS} was found beside it: give "
                        f"--val-labels FILE ({KAGGLE_LABELS}, or lines 'IMAGE WNID'), or sort val/ into class "
                        f"folders (the devkit's ILSVRC2012_validation_ground_truth.txt holds class numbers, not wnids)")
    labels = read_val_labels(labels_file)
    by_class: dict[str, list[str]] = {}
    for name in _images_in(val):
        wnid = labels.get(Path(name).stem)
        if wnid is not None:
            by_class.setdefault(wnid, []).append(name)
    if not by_class:
        raise UserError(f"none of the images in {val} is named in {labels_file}: give the labels of this val/")
    return ImageNetSource(root=root, wnids=wnids, val_layout=str(labels_file), val_by_class=by_class)


def read_val_labels(path: Path) -> dict[str, str]:
    """Validation labels: image name without suffix -> wnid.

    Reads Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``, the string's first word the wnid) or
    lines of ``IMAGE WNID`` (space, tab or comma between them).

    Raises:
        UserError: an unreadable file, one in neither form, or the devkit's ground truth (class numbers).
    """
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = [row for row in csv.reader(stream) if row]
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UserError(f"cannot read validation labels {path} ({reason}): give --val-labels a readable file") from None
    if rows and [cell.strip() for cell in rows[0][:2]] == ["ImageId", "PredictionString"]:
        rows = rows[1:]
    labels: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        words = " ".join(row).split()
        if len(words) == 1 and words[0].isdigit():
            raise UserError(f"{path} holds class numbers (the devkit's ILSVRC2012_validation_ground_truth.txt), not "
                            f"wnids: give --val-labels {KAGGLE_LABELS} or lines 'IMAGE WNID', or sort val/ into "
                            f"val/<wnid>/ folders")
        if len(words) < 2 or not WNID.fullmatch(words[1]):
            raise UserError(f"line {number} of {path} is not 'IMAGE WNID' (nor {KAGGLE_LABELS}'s 'ImageId,"
                            f"PredictionString'): {' '.join(words)[:80]!r}")
        labels[Path(words[0]).stem] = words[1]
    if not labels:
        raise UserError(f"validation labels {path} are empty: give --val-labels the labels of val/")
    return labels


def draw(names: Iterable[str], count: int, seed: int, salt: str) -> list[str]:
    """The ``count`` names with the lowest ``sha256("<seed>/<salt>/<name>")``, sorted by name.

    A name's chance depends on nothing but the seed, the salt and the name itself: the draw is the same for any
    order of ``names`` and on every platform, and drawing fewer gives a part of drawing more.
    """
    def key(name: str) -> bytes:
        return hashlib.sha256(f"{seed}/{salt}/{name}".encode("utf-8")).digest()

    return sorted(sorted(names, key=key)[:count])


@dataclass(frozen=True)
class SubsetResult:
    """A subset that was built: its folder, classes and file counts."""

    out: Path
    classes: tuple[str, ...]
    train: int
    val: int
    command: str

    def line(self) -> str:
        return (f"{self.out}: {len(self.classes)} classes, {self.train} training and {self.val} validation images "
                f"(manifest: {self.out / MANIFEST_FILE}); train on it with: tinyray search --data "
                f"{shlex.quote(str(self.out))}")

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "classes": len(self.classes), "train": self.train, "val": self.val,
                "manifest": str(self.out / MANIFEST_FILE), "command": self.command}


def build_subset(config: SubsetConfig) -> SubsetResult:
    """Draw the subset ``config`` asks for from ImageNet-1k and link it into ``config.out`` with a manifest.

    Every check (the source's layout, enough classes, enough training images in every chosen class, validation
    images for each, an empty ``out``) runs before anything is written; the files are then linked into a hidden
    sibling of ``out`` that is renamed to ``out`` last.

    Raises:
        UserError: for any of those problems, or a link the file system refuses (the message names ``--link``).
    """
    from tinyray import __version__

    if config.link not in LINK_MODES:
        raise UserError(f"--link {config.link!r} is not one of {', '.join(LINK_MODES)}")
    if config.classes < 1 or config.train_per_class < 1:
        raise UserError(f"--classes ({config.classes}) and --train-per-class ({config.train_per_class}) must be at "
                        f"least 1")
    out = Path(_absolute(config.out))
    _check_out(out)
    source = read_source(config.src, config.val_labels)
    root = source.root
    if out == root or root in out.parents:
        raise UserError(f"--out {out} is inside the source {root}: put the subset elsewhere (the source is only read)")
    if len(source.wnids) < config.classes:
        raise UserError(f"{root / 'train'} has {len(source.wnids)} class folders, fewer than the {config.classes} "
                        f"asked: lower --classes or give --src the whole ImageNet-1k")
    classes = draw(source.wnids, config.classes, config.seed, "classes")
    files: list[dict[str, Any]] = []  # what the manifest lists: path in the subset, source, size
    for wnid in classes:
        names = source.train_images(wnid)
        if len(names) < config.train_per_class:
            raise UserError(f"class {wnid} has {len(names)} training images in {root / 'train' / wnid}, fewer than "
                            f"the {config.train_per_class} asked: lower --train-per-class")
        chosen = [root / "train" / wnid / name for name in draw(names, config.train_per_class, config.seed, wnid)]
        for split, paths in (("train", chosen), ("val", source.val_images(wnid))):
            files += [_describe(f"{split}/{wnid}/{path.name}", path, config.checksums) for path in paths]
    counts = {split: sum(1 for entry in files if entry["path"].startswith(f"{split}/")) for split in SPLITS}
    manifest = {
        "version": SUBSET_MANIFEST_VERSION,
        "kind": "imagenet100",
        "tinyray_version": __version__,
        "command": config.command(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": str(root),
        "val_layout": source.val_layout,
        "source_classes": len(source.wnids),
        "seed": config.seed,
        "link": config.link,
        "counts": {"classes": len(classes), "train_per_class": config.train_per_class, **counts},
        "classes": classes,
        "files": files,
    }
    _write_tree(out, files, config.link, manifest)
    return SubsetResult(out=out, classes=tuple(classes), train=counts["train"], val=counts["val"],
                        command=config.command())


def _describe(path: str, source: Path, checksum: bool) -> dict[str, Any]:
    """A manifest entry: the file's path in the subset, its source and size (and SHA-256)."""
    try:
        entry: dict[str, Any] = {"path": path, "source": str(source), "size": source.stat().st_size}
        if checksum:
            entry["sha256"] = _sha256(source)
    except OSError as exc:
        raise UserError(f"cannot read {source} ({exc.strerror}): check the source's permissions") from None
    return entry


def _write_tree(out: Path, files: list[dict[str, Any]], link: str, manifest: dict[str, Any]) -> None:
    """Link ``files`` into a hidden sibling of ``out``, write the manifest, and rename it to ``out``."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot write in {out.parent} ({exc.strerror}): choose a writable --out") from None
    try:
        made: set[Path] = set()
        for entry in files:
            target = building / entry["path"]
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            _link(Path(entry["source"]), target, link)
        write_json_atomic(building / MANIFEST_FILE, manifest)
        os.chmod(building, 0o755)  # mkdtemp makes it private; trials may run as other users
        os.rename(building, out)  # replaces an empty out folder; refused (ENOTEMPTY) if something appeared in it
    except OSError as exc:
        raise UserError(f"cannot build {out} ({exc.strerror or exc}): check that its folder is writable and that "
                        f"--out is still empty") from None
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)


def _link(source: Path, target: Path, link: str) -> None:
    try:
        if link == "symlink":
            os.symlink(source, target)
        elif link == "hardlink":
            os.link(source, target)
        else:
            shutil.copyfile(source, target)
    except OSError as exc:
        others = " or ".join(f"--link {mode}" for mode in LINK_MODES if mode != link)
        raise UserError(f"cannot {link} {source} into {target.parent} ({exc.strerror or exc}): try {others}") from None


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_subset` found: files checked, and each difference from the manifest."""

    folder: Path
    checked: int
    classes: int
    problems: tuple[str, ...]
    checksums: bool

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        what = "sizes, SHA-256" if self.checksums else "sizes"
        if self.ok:
            return [f"{self.folder}: {self.checked} files of {self.classes} classes match {MANIFEST_FILE} ({what}, "
                    f"links)"]
        shown = list(self.problems[:SHOWN_PROBLEMS])
        if len(self.problems) > SHOWN_PROBLEMS:
            shown.append(f"... and {len(self.problems) - SHOWN_PROBLEMS} more")
        return shown + [f"{self.folder}: {len(self.problems)} differences from {MANIFEST_FILE} in {self.checked} "
                        f"files: rebuild it with the manifest's command"]

    def as_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "ok": self.ok, "checked": self.checked, "classes": self.classes,
                "checksums": self.checksums, "problems": list(self.problems)}


def verify_subset(folder: str | os.PathLike, checksums: bool = True) -> VerifyReport:
    """Check a subset against its manifest: every file there, of its size (and SHA-256 if recorded and
    ``checksums``), linked to its source, and nothing more in ``train/`` or ``val/``.

    Raises:
        UserError: ``folder`` has no readable manifest of this version (differences are the report's, not errors).
    """
    folder = Path(folder).expanduser()
    if not (folder / MANIFEST_FILE).is_file():
        raise UserError(f"{folder} has no {MANIFEST_FILE}: give the folder 'tinyray data imagenet100' wrote")
    manifest = read_json(folder / MANIFEST_FILE, "subset manifest")
    if not isinstance(manifest, dict) or manifest.get("version") != SUBSET_MANIFEST_VERSION:
        found = manifest.get("version") if isinstance(manifest, dict) else None
        raise UserError(f"{folder / MANIFEST_FILE} is not a subset manifest of version {SUBSET_MANIFEST_VERSION} "
                        f"(version {found}): rebuild the subset with this tinyray")
    entries = _manifest_files(folder, manifest)
    problems: list[str] = []
    use_checksums = checksums and any("sha256" in entry for entry in entries)
    for entry in entries:
        problem = _check_file(folder, entry, manifest.get("link"), use_checksums)
        if problem:
            problems.append(f"{entry['path']}: {problem}")
    listed = {entry["path"] for entry in entries}
    classes = set(manifest.get("classes") or ())
    for split in SPLITS:
        for current, dirs, names in os.walk(folder / split):
            relative = Path(current).relative_to(folder)
            if len(relative.parts) == 2 and relative.parts[1] not in classes:
                problems.append(f"{relative.as_posix()}: a class folder the manifest does not list")
            problems += [f"{(relative / name).as_posix()}: not in the manifest" for name in sorted(names)
                         if (relative / name).as_posix() not in listed]
            dirs.sort()
    return VerifyReport(folder=folder, checked=len(entries), classes=len(classes), problems=tuple(problems),
                        checksums=use_checksums)


def _manifest_files(folder: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's file entries, each a path inside ``train/`` or ``val/`` (a damaged manifest is refused)."""
    entries = manifest.get("files")
    layout = re.compile(r"(train|val)/[^/]+/[^/]+")
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("path"), str) and layout.fullmatch(entry["path"])
        and ".." not in entry["path"].split("/") and isinstance(entry.get("size"), int)
        for entry in entries
    ):
        raise UserError(f"the file list of {folder / MANIFEST_FILE} is damaged (each entry needs a path "
                        f"SPLIT/CLASS/FILE and a size): rebuild the subset")
    return entries


def _check_file(folder: Path, entry: dict[str, Any], link: str | None, checksums: bool) -> str | None:
    """What is wrong with one file of the subset, or ``None``."""
    path = folder / entry["path"]
    if link == "symlink":
        if not path.is_symlink():
            return "missing" if not path.exists() else "not a link to its source"
        target = os.readlink(path)
        if target != entry.get("source"):
            return f"links to {target}, the manifest says {entry.get('source')}"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return "its source is gone" if path.is_symlink() else f"missing ({exc.strerror})"
    if size != entry["size"]:
        return f"{size} bytes, the manifest says {entry['size']}"
    if checksums and "sha256" in entry and _sha256(path) != entry["sha256"]:
        return "its SHA-256 differs from the manifest's"
    return None


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(os.scandir(out))):
        raise UserError(f"--out {out} exists and is not an empty folder: choose a new folder")


def _folders_in(folder: Path) -> list[str]:
    """Names of the sub-folders of ``folder`` (hidden ones left out), sorted."""
    try:
        return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    except OSError as exc:
        raise UserError(f"cannot list {folder} ({exc.strerror}): check its permissions") from None


def _images_in(folder: Path) -> list[str]:
    """Names of the image files directly in ``folder`` that an ImageFolder loads (hidden ones left out), sorted."""
    from tinyray.data import image_suffixes

    suffixes = image_suffixes()
    names = []
    try:
        for entry in os.scandir(folder):
            if entry.name.startswith(".") or not entry.name.lower().endswith(suffixes) or not entry.is_file():
                continue
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"{entry.path.encode('utf-8', 'backslashreplace').decode()} has a name that is not "
                                f"UTF-8: rename it") from None
            names.append(entry.name)
    except OSError as exc:
        raise UserError(f"cannot list {folder} ({exc.strerror}): check its permissions") from None
    return sorted(names)


def _find_labels(given: Path, root: Path) -> Path | None:
    """``LOC_val_solution.csv`` where the Kaggle layout keeps it (beside ``ILSVRC/``), or beside ``val/``."""
    candidates = [given / KAGGLE_LABELS, root / KAGGLE_LABELS]
    if root.parts[-3:] == KAGGLE_IMAGES.parts:
        candidates.append(root.parents[2] / KAGGLE_LABELS)
    return next((path for path in candidates if path.is_file()), None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _absolute(path: str | os.PathLike) -> str:
    """An absolute path without resolving links (a mount reached through a link keeps the name users know)."""
    return os.path.abspath(os.path.expanduser(path))


__all__ = [
    "SubsetConfig",
    "SubsetResult",
    "ImageNetSource",
    "VerifyReport",
    "read_source",
    "read_val_labels",
    "draw",
    "build_subset",
    "verify_subset",
    "LINK_MODES",
    "MANIFEST_FILE",
]
