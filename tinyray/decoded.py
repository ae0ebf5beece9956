"""A decode-once cache of an ImageFolder tree: every image decoded a single time into a uint8 array per split.

Decoding a JPEG costs more than a training step of a tiny network, and a search decodes every image once an epoch
in every trial. With ``--data decoded:PATH`` the images are decoded once per node instead: each is resized
(bicubic) so that its shorter side is :data:`DECODED_SIDE` px, centre-cropped to a square, and written into
``<split>.npy``, an ``N x side x side x 3`` uint8 array that every trial on the node then maps read-only
(``numpy.load(mmap_mode="r")``: one copy in the page cache, shared). Trials crop and resize from it with the same
timm transforms as from the files. The first trial to need it builds it, under a file lock
(``<cache>/<name>.lock``); the others wait for it, then open it; later runs on the same files reuse it. The cache
lives in ``$TINYRAY_CACHE/data/decoded/`` and is keyed by the folder's path, the side and every image's path, size
and modification time, so changed files make a new cache (delete old ones by hand).

The trade-off. The 256 px side is 1.14x the largest training resolution (224 px at r = 1), the ratio of ImageNet's
usual 256 px resize to its 224 px crop, so evaluation sees almost what it sees from the files: the centre 87.5% of
the shorter side, resampled twice instead of once. Training does not: a random resized crop of the cached square
covers at most the centre square of the original, so the parts of a non-square image beyond it (a quarter of a
4:3 ImageNet photo) are never cropped, and crops are resampled from 256 px rather than from the full-size photo.
Accuracies from the cache are therefore close to, but not the same as, those from the files; compare candidates
within one kind of data. The cache also costs disk: ``side * side * 3`` bytes an image (196 KB at 256 px; 9.8 GB
for the 50,000 training images of the paper's ImageNet-100).

Unreadable images are skipped at build time, as training from the files skips them, and their count is reported
by every trial (``skipped_images``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tinyray.errors import UserError

log = logging.getLogger(__name__)

#: Bump when the cache's layout or resizing changes, so that old caches are not reused.
DECODED_VERSION = 1
#: Shorter side of the cached images, in pixels: 1.14x the largest training resolution (224 px, r = 1).
DECODED_SIDE = 256
SPLITS = ("train", "val")
META = "meta.json"


def decoded_folder(root: Path, side: int, cache: Path) -> Path:
    """The cache folder of ``root`` at ``side`` px: ``cache/decoded/<name>-<side>-<key>``.

    The key hashes the format version, the folder's path and every image's path, size and modification time.
    """
    from torchvision.datasets import ImageFolder

    digest = hashlib.sha256(f"{DECODED_VERSION}\n{root.resolve()}\n{side}\n".encode())
    for split in SPLITS:
        for path, label in ImageFolder(str(root / split), loader=lambda p: p).samples:
            info = os.stat(path)
            digest.update(f"{split}\t{path}\t{label}\t{info.st_size}\t{info.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return cache / "decoded" / f"{root.name}-{side}-{digest.hexdigest()[:16]}"


def open_decoded(root: Path, side: int, cache: Path, workers: int = 0) -> Path:
    """The decoded cache of ``root``, built first if no process on this node has built it yet.

    Args:
        root: the ImageFolder root (with ``train/`` and ``val/``).
        side: shorter side of the cached images in pixels (:data:`DECODED_SIDE`).
        cache: tinyray's data cache folder (:func:`tinyray.data.cache_dir`).
        workers: processes decoding while it is built.

    Returns:
        The cache folder, holding ``<split>.npy`` (``N x side x side x 3`` uint8), ``<split>-labels.npy``
        (``N`` int64, ``-1`` for an unreadable image) and ``meta.json``.

    Raises:
        UserError: if the cache folder cannot be written.
    """
    from filelock import FileLock

    folder = decoded_folder(root, side, cache)
    if (folder / META).is_file():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder) + ".lock")
        with lock:
            if not (folder / META).is_file():  # another process may have built it while this one waited
                _build(root, side, folder, workers)
    except OSError as exc:
        raise UserError(f"cannot write the decoded-image cache in {folder.parent}: {exc.strerror}; set "
                        f"TINYRAY_CACHE to a writable folder with room for it") from None
    return folder


def _build(root: Path, side: int, folder: Path, workers: int) -> None:
    """Decode every image of both splits into a new folder beside ``folder``, then rename it into place."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    building = folder.with_name(folder.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    meta: dict[str, Any] = {"version": DECODED_VERSION, "root": str(root), "side": side, "images": {}, "unreadable": {}}
    for split in SPLITS:
        samples = ImageFolder(str(root / split), loader=lambda p: p).samples
        log.info("decoding %d %s images of %s at %d px into %s", len(samples), split, root, side, folder)
        images = np.lib.format.open_memmap(building / f"{split}.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(samples), side, side, 3))
        labels = np.full(len(samples), -1, dtype=np.int64)
        unreadable = []
        loader = DataLoader(_Decode(samples, side), batch_size=32, num_workers=workers, collate_fn=list)
        start = 0
        for batch in loader:
            for offset, (pixels, label, reason) in enumerate(batch):
                if reason is None:
                    images[start + offset] = pixels
                    labels[start + offset] = label
                else:
                    log.warning("skipped: %s", reason)
                    unreadable.append(reason)
            start += len(batch)
        images.flush()
        del images
        np.save(building / f"{split}-labels.npy", labels)
        meta["images"][split] = int((labels >= 0).sum())
        meta["unreadable"][split] = unreadable
    (building / META).write_text(json.dumps(meta, indent=1))  # last: its presence means the cache is complete
    os.replace(building, folder)


class _Decode:
    """The images of a split, each decoded, resized to ``side`` px on its shorter side and centre-cropped."""

    def __init__(self, samples: list[tuple[str, int]], side: int) -> None:
        self.samples, self.side = samples, side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray | None, int, str | None]:
        from PIL import Image

        from tinyray.data import open_image

        path, label = self.samples[index]
        try:
            image = open_image(path)
        except UserError as exc:
            return None, label, str(exc)
        scale = self.side / min(image.size)
        width, height = max(self.side, round(image.width * scale)), max(self.side, round(image.height * scale))
        image = image.resize((width, height), Image.BICUBIC)
        left, top = (width - self.side) // 2, (height - self.side) // 2
        return np.asarray(image.crop((left, top, left + self.side, top + self.side))), label, None


class DecodedImages:
    """One split of a decoded cache as a dataset of ``(PIL image, label)``, through ``transform``.

    The array is mapped on first use in each process (worker processes map it themselves; nothing large is
    pickled), read-only.
    """

    def __init__(self, folder: Path, split: str, transform: Any) -> None:
        self.path = folder / f"{split}.npy"
        labels = np.load(folder / f"{split}-labels.npy")
        self.rows = np.flatnonzero(labels >= 0)
        self.labels = labels[self.rows]
        self.transform = transform
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        image = Image.fromarray(np.asarray(self._images[self.rows[index]]))
        return self.transform(image), int(self.labels[index])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}


def unreadable(folder: Path, split: str) -> list[str]:
    """Why each image of ``split`` that the build skipped could not be read."""
    return list(json.loads((folder / META).read_text())["unreadable"][split])


__all__ = ["DECODED_SIDE", "DECODED_VERSION", "DecodedImages", "decoded_folder", "open_decoded", "unreadable"]
