"""Data: a built-in synthetic dataset that needs no download, and any ImageFolder dataset on disk.

Both kinds sit behind one interface, :class:`Data`, which the trainer uses without knowing which it has:

* ``synthetic`` (the default, for demos and tests): procedurally generated 64 x 64 RGB images, made with a seeded
  numpy generator (about 1 ms an image) and cached as a ``.npz`` file. Forty classes, each a pair (shape, stripe
  orientation): five solid shapes (disc, square, triangle, ring, cross), whose silhouette survives downsampling, on
  a background of stripes in one of eight directions 22.5 degrees apart. The stripe period is log-uniform over a
  decade (2.2-24 px at 64 px), so the fraction of images whose stripes survive a resize falls gradually as r
  shrinks, and telling directions 22.5 degrees apart needs more of the fine detail (and more filters) than the four
  directions of version 5, whose networks at r >= 0.8 all learned the task. Three shapes in four carry their
  shape's colour, a cue that tells the shape (never the stripes) and that every network picks up in its first
  optimizer steps. A left-right flip of a training image mirrors the stripe direction, so it takes the mirror
  class (:func:`synthetic_mirror`). How this task was chosen, and what it rewards (resolution, depth and width,
  measured by ``tinyray bench proxy``), is in ``docs/benchmarks.md``.
* ``folder``: a folder with ``train/`` and ``val/`` subfolders of class folders, read by torchvision's
  ``ImageFolder`` with timm's ImageNet transforms.

Resolution. FLOPs and budgets always refer to the deployment resolution ``floor(224 r)``
(:meth:`tinyray.space.SearchSpace.resolution`). Folder data trains at that resolution. The synthetic images are only
64 px wide, so candidates train on them at the proxy resolution ``max(8, round(64 r))``
(:func:`proxy_resolution`): the same relative scaling of the input, at a fraction of the cost.

torch and torchvision are imported inside the functions that need them; this module is imported only to train.
"""

from __future__ import annotations

import abc
import hashlib
import heapq
import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from tinyray.errors import UserError
from tinyray.space import SearchSpace

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

#: Bump when the generator changes, so that cached files of the old generator are not reused.
SYNTHETIC_VERSION = 6
SYNTHETIC = "synthetic"
FOLDER = "folder"
DEFAULT_CACHE_DIR = Path("~/.cache/tinyray/data")
CACHE_ENV = "TINYRAY_CACHE"

SHAPES = ("disc", "square", "triangle", "ring", "cross")
#: Grating orientations: the angle of the stripes to the horizontal, in degrees, counter-clockwise as displayed
#: (``"0"`` horizontal, ``"90"`` vertical, ``"45"`` from bottom left to top right).
ORIENTATIONS = ("0", "22.5", "45", "67.5", "90", "112.5", "135", "157.5")
#: Direction of each orientation's wave vector (radians, image axes, y pointing down): stripes run perpendicular to
#: it. Orientation k has stripes at 22.5 k degrees, so its wave vector points at 90 + 22.5 k degrees as displayed,
#: which in image axes (y down) is -(90 + 22.5 k) degrees.
_WAVE_DIRECTIONS = tuple(-(np.pi / 2 + k * np.pi / len(ORIENTATIONS)) for k in range(len(ORIENTATIONS)))
#: Random turn of each image's stripes, radians: a sixth of the spacing of the directions either way (+-3.75 degrees),
#: so neighbouring classes stay 15 degrees apart.
_DIRECTION_JITTER = np.pi / len(ORIENTATIONS) / 6
MAX_SYNTHETIC_CLASSES = len(SHAPES) * len(ORIENTATIONS)
MAX_SYNTHETIC_IMAGES = 100_000


@dataclass(frozen=True)
class DataSpec:
    """What to load. Small and picklable: a Ray trial receives it and calls :func:`load_data` itself.

    Attributes:
        kind: ``"synthetic"`` (built in) or ``"folder"`` (an ImageFolder tree on disk).
        path: root of the folder dataset (with ``train/`` and ``val/``); ``None`` for synthetic data.
        num_classes: synthetic classes, 2..40 (shape x grating orientation).
        train_size: synthetic training images (balanced over the classes).
        val_size: synthetic validation images.
        side: native side of the synthetic images in pixels.
        seed: seed of the synthetic generator.
        cache_dir: where the synthetic ``.npz`` (and the decoded folder cache) is cached; ``None`` means
            ``$TINYRAY_CACHE/data`` or ``~/.cache/tinyray/data``.
        decoded_side: folder data only: train from a decode-once uint8 cache of the folder whose images have this
            shorter side in pixels (:mod:`tinyray.decoded`); 0 decodes the files in every epoch.
    """

    kind: str = SYNTHETIC
    path: Path | None = None
    num_classes: int = 40
    train_size: int = 1800
    val_size: int = 400
    side: int = 64
    seed: int = 0
    cache_dir: Path | None = None
    decoded_side: int = 0


#: ``--data decoded:PATH``: the folder at PATH through its decode-once cache (:mod:`tinyray.decoded`).
DECODED_PREFIX = "decoded:"


def resolve_data(
    spec: str | Path | DataSpec | None = None,
    *,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    num_classes: int = 40,
    train_size: int = 1800,
    val_size: int = 400,
) -> DataSpec:
    """Turn a user's ``--data`` value into a :class:`DataSpec`.

    Args:
        spec: ``None`` or ``"synthetic"`` for the built-in data (``"synthetic:TRAIN/VAL"`` sets its training and
            validation sizes, e.g. ``synthetic:300/100``), otherwise the path of an ImageFolder root, which
            ``decoded:PATH`` reads through a decode-once cache (:mod:`tinyray.decoded`). A :class:`DataSpec` is
            returned unchanged.
        cache_dir: cache folder of the synthetic data (default ``$TINYRAY_CACHE/data`` or ``~/.cache/tinyray/data``).
        seed, num_classes, train_size, val_size: parameters of the synthetic data.

    Raises:
        UserError: for bad synthetic parameters or a path that does not exist.
    """
    if isinstance(spec, DataSpec):
        return spec
    sized = re.fullmatch(rf"{SYNTHETIC}:(\d+)/(\d+)", str(spec or "").strip())
    if sized:  # "synthetic:300/100": the built-in data with 300 training and 100 validation images
        train_size, val_size, spec = int(sized.group(1)), int(sized.group(2)), SYNTHETIC
    if spec is None or str(spec) in ("", SYNTHETIC):
        if not 2 <= num_classes <= MAX_SYNTHETIC_CLASSES:
            raise UserError(f"synthetic data has 2 to {MAX_SYNTHETIC_CLASSES} classes, not {num_classes}: choose one in that range")
        if train_size + val_size > MAX_SYNTHETIC_IMAGES:  # 12 KB an image, all held in memory
            raise UserError(f"synthetic data of {train_size}+{val_size} images is more than the {MAX_SYNTHETIC_IMAGES} "
                            f"tinyray generates (about 1.2 GB in memory): lower the sizes, e.g. synthetic:1800/400")
        if train_size < num_classes or val_size < num_classes:
            raise UserError(
                f"synthetic data needs at least one image per class ({num_classes}) in each split,"
                f" got train_size={train_size} and val_size={val_size}: raise them"
            )
        return DataSpec(
            kind=SYNTHETIC,
            num_classes=num_classes,
            train_size=train_size,
            val_size=val_size,
            seed=seed,
            cache_dir=Path(cache_dir).expanduser() if cache_dir is not None else None,
        )
    from tinyray.decoded import DECODED_SIDE

    decoded = str(spec).startswith(DECODED_PREFIX)
    spec = str(spec)[len(DECODED_PREFIX):] if decoded else spec
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"data path {spec} does not exist: give a folder with train/ and val/ class folders, or 'synthetic'"
        )
    return DataSpec(kind=FOLDER, path=path.resolve(), decoded_side=DECODED_SIDE if decoded else 0,
                    cache_dir=Path(cache_dir).expanduser() if cache_dir is not None else None)


def proxy_resolution(r: float, side: int = 64) -> int:
    """Input side in pixels at which a candidate trains on the synthetic data: ``max(8, round(side * r))``.

    FLOPs and budgets still refer to the deployment resolution ``floor(224 r)``; this is only the training input.
    """
    return max(8, int(round(side * r)))


#: Most DataLoader worker processes :func:`default_workers` gives one training: past this many, decoding outpaces
#: a GPU step of these small networks, and each worker holds its own copy of the file list and prefetched batches.
MAX_LOADER_WORKERS = 8


def default_workers(cpus: int | None = None) -> int:
    """DataLoader worker processes for a training with ``cpus`` CPUs: ``cpus - 1`` (the training process keeps
    one), at least 0 and at most :data:`MAX_LOADER_WORKERS`. ``None``: the CPUs this process may run on."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_LOADER_WORKERS, int(cpus) - 1))


def cache_dir(explicit: str | Path | None = None) -> Path:
    """The synthetic-data cache folder: ``explicit``, else ``$TINYRAY_CACHE/data``, else ``~/.cache/tinyray/data``.

    ``TINYRAY_CACHE`` names tinyray's cache root (default ``~/.cache/tinyray``); the data lives in its ``data/``.
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() / "data" if env else DEFAULT_CACHE_DIR.expanduser()


# --------------------------------------------------------------------------------------------------------------
# The interface the trainer uses.


class Data(abc.ABC):
    """A dataset ready to train on: class names and a way to iterate normalized batches at any resolution.

    Attributes:
        name: short name for logs and tracking (``synthetic-10c`` or the folder name).
        description: one line for humans.
        classes: class names; label ``i`` is ``classes[i]``.
        spec: the :class:`DataSpec` this was loaded from.
    """

    name: str
    description: str
    classes: tuple[str, ...]
    spec: DataSpec

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @abc.abstractmethod
    def train_resolution(self, space: SearchSpace, r: float) -> int:
        """Input side in pixels at which a candidate of resolution multiplier ``r`` trains."""

    def train_resolution_fn(self, space: SearchSpace) -> Callable[[float], int]:
        """:meth:`train_resolution` as a picklable function of ``r`` that holds no images (a searcher's FLOPs band
        keeps it, and Ray Tune pickles the searcher): two candidates that train at the same side and build the
        same blocks are the same measured network (:class:`tinyray.searchers.FlopsBand`)."""
        return space.resolution

    @abc.abstractmethod
    def loaders(
        self, resolution: int, batch_size: int, seed: int, workers: int = 0, pin_memory: bool = False
    ) -> tuple["Batches", "Batches"]:
        """Training and validation batches at ``resolution`` pixels.

        Args:
            resolution: input side in pixels.
            batch_size: images per batch.
            seed: seeds the training order and augmentation: for folder data every image's crop and flip follow
                ``(seed, epoch, index)`` alone, whatever the number of workers (:class:`_FolderBatches`).
            workers: DataLoader worker processes, kept alive across epochs (folder data only; synthetic data is
                iterated in memory). :func:`default_workers` sizes it from a training's CPUs.
            pin_memory: put batches in page-locked memory, for faster copies to a CUDA device (folder data only).

        Returns:
            ``(train, val)``. ``train`` yields ``(images, labels)`` with images ``B x 3 x resolution x resolution``
            float32 (normalized) and labels ``B`` int64, incomplete last batch dropped; call
            ``train.set_epoch(e)`` before each epoch for its order. ``val`` yields every image once, in order.
        """


class Batches(abc.ABC):
    """Training batches whose order depends only on ``(seed, epoch)``, so a resumed run sees the same order."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.epoch = 0
        #: one line for each unreadable image skipped so far, over every epoch (folder data; always empty in memory)
        self.skipped: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling of epoch ``epoch`` (0-based)."""
        self.epoch = epoch

    def _generator(self) -> "torch.Generator":
        import torch

        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return generator

    @abc.abstractmethod
    def __len__(self) -> int:
        """Batches per epoch."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        """``(images, labels)`` batches: ``B x 3 x H x W`` float32 and ``B`` int64."""


def load_data(spec: DataSpec | str | Path | None = None, *, classes: tuple[str, ...] | None = None) -> Data:
    """Load the dataset ``spec`` describes (see :func:`resolve_data`); cheap after the first call.

    Args:
        spec: what to load.
        classes: for folder data, the class names :func:`check_image_folder` returned for this folder a moment ago
            (a search checks the folder before Ray starts and loads it beside Ray's start); the tree is not walked
            and probed again. ``None`` checks it.

    Raises:
        UserError: for a folder that is not a readable ImageFolder tree.
    """
    spec = resolve_data(spec)
    if spec.kind == SYNTHETIC:
        return SyntheticData(spec)
    if spec.kind == FOLDER:
        return FolderData(spec, classes=classes)
    raise UserError(f"unknown data kind {spec.kind!r}: use {SYNTHETIC!r} or {FOLDER!r}")


# --------------------------------------------------------------------------------------------------------------
# Synthetic data.


def synthetic_classes(num_classes: int = 40) -> tuple[str, ...]:
    """Names of the synthetic classes: label ``k`` is shape ``k // 8`` on stripes of orientation ``k % 8``
    (``disc-0``, ``disc-22.5``, ...: the stripes' angle to the horizontal in degrees)."""
    if TASK == "counts":  # family-count: polygon-3 ... dots-10
        return tuple(f"{COUNT_FAMILIES[k // len(COUNTS)]}-{COUNTS[k % len(COUNTS)]}" for k in range(num_classes))
    return tuple(f"{SHAPES[k // len(ORIENTATIONS)]}-{ORIENTATIONS[k % len(ORIENTATIONS)]}" for k in range(num_classes))


def synthetic_mirror(num_classes: int = 40) -> np.ndarray:
    """The label of each synthetic class's left-right mirror image, ``-1`` where that is not one of the classes.

    A mirror keeps the shape (every shape is symmetric about the vertical axis, and its rotation jitter is symmetric)
    and the horizontal and vertical stripes, but turns stripes at angle a into stripes at 180 - a degrees: a flipped
    image must change its label, or the two classes cannot be told apart. (Data versions 1-4 flipped without this.)
    """
    if TASK == "counts":  # a mirror keeps the family and the count
        return np.arange(num_classes, dtype=np.int64)
    n = len(ORIENTATIONS)
    partner = [(k // n) * n + (n - k % n) % n for k in range(num_classes)]
    return np.array([p if p < num_classes else -1 for p in partner], dtype=np.int64)


def generate_synthetic(
    count: int, *, num_classes: int = 40, side: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` synthetic images, the classes balanced (counts differ by at most one) and shuffled.

    Each image: a light background with a colour gradient, covered by a grating whose stripes run in one of eight
    directions 22.5 degrees apart (+-3.75 degrees) with a log-uniform period of 2.2-24 px at 64 px; one darker,
    solid shape whose size is log-uniform (radius 22-48% of the side, random position, rotation within +-20
    degrees); three shapes in four take their shape's own colour (a cue every network picks up in its first steps;
    it tells the shape, never the stripes), the others a random one; a small solid distractor blob; pixel noise.
    Fine stripes fade as the image shrinks and coarse ones survive, so the information left falls gradually with
    resolution instead of at one threshold.

    Args:
        count: number of images.
        num_classes: 2..40.
        side: image side in pixels; the grating period and all sizes scale with it.
        seed: generator seed; the same arguments give identical arrays.

    Returns:
        ``(images, labels)``: ``count x 3 x side x side`` uint8 and ``count`` int64 in ``[0, num_classes)``.
    """
    rng = np.random.default_rng([SYNTHETIC_VERSION, seed, count, num_classes, side])
    labels = rng.permutation(np.arange(count) % num_classes).astype(np.int64)
    images = np.empty((count, 3, side, side), dtype=np.uint8)
    scale = side / 64.0
    coords = (np.arange(side, dtype=np.float32) + 0.5)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    for index, label in enumerate(labels):
        images[index] = _draw(rng, int(label), x, y, side, scale)
    return images, labels


#: The colour a shape takes when it carries its colour cue (RGB in [0, 1], before darkening).
SHAPE_COLOURS = np.array([[0.85, 0.15, 0.15], [0.15, 0.7, 0.2], [0.2, 0.3, 0.9], [0.85, 0.75, 0.1], [0.7, 0.2, 0.8]])
#: Chance that a shape carries its colour cue.
COLOUR_CUE = 0.75


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


#: Object radius as a fraction of the image side (log-uniform).
OBJECT_RADIUS = (0.22, 0.48)
#: Stripe period in pixels at 64 px (log-uniform, scaled with the side): from near the Nyquist limit to coarse
#: stripes that survive a 4x downsampling. Which fraction of the images keeps its stripes falls gradually with r.
STRIPE_PERIOD = (2.2, 24.0)
#: Stripe amplitude (per channel, around the background's colour).
STRIPE_CONTRAST = (0.2, 0.35)
#: Where the stripes are: ``"background"`` (version 6) or inside the object (``"object"``, version 5; kept so that
#: ``benchmarks/data_variants.py`` can redraw the older task by patching these constants).
STRIPES_ON = "background"
#: Standard deviation of the pixel noise (per image, uniform in this range).
PIXEL_NOISE = (0.02, 0.06)
#: Share of the images whose stripes are second-order: a fine binary texture whose contrast the grating modulates,
#: so that the mean brightness is the same on every stripe and only a filter-rectify-filter cascade (two nonlinear
#: stages at one scale) sees the direction. 0 in version 6 (no extra random draw, so its images are unchanged); an
#: experiment of ``benchmarks/data_variants.py`` (``{"second_order": 0.5}``) looking for a task on which depth matters.
SECOND_ORDER = 0.0
#: Grain of that texture in pixels at 64 px (log-uniform): a coarser grain survives a lower resolution.
CARRIER_GRAIN = (1.0, 4.0)
#: Which task the generator draws: ``"stripes"`` (version 6: shape x stripe direction) or ``"counts"`` (an
#: experiment of ``benchmarks/data_variants.py``, ``{"task": "counts"}``: shape family x a count of 3-10 parts, the
#: fine cue carried by the object's outline instead of a grating; see :func:`_draw_counts`).
TASK = "stripes"
#: ``"counts"`` task: the shape families (each a pair of outline and count) and the counts.
COUNT_FAMILIES = ("polygon", "star", "gear", "flower", "dots")
COUNTS = tuple(range(3, 11))
#: ``"counts"`` task: largest rotation of the object either way, degrees.
COUNT_ROTATION = 20.0


def _draw(rng: np.random.Generator, label: int, x: np.ndarray, y: np.ndarray, side: int, scale: float) -> np.ndarray:
    if TASK == "counts":
        return _draw_counts(rng, label, x, y, side)
    shape_index = label // len(ORIENTATIONS)
    shape = SHAPES[shape_index]
    orientation = label % len(ORIENTATIONS)

    # Background: a light colour with a gentle gradient (and the stripes, below). The object is solid and darker
    # than the background's mean, so that its silhouette (the shape) stays visible at any resolution. (Random polarity and free rotation made the shapes too slow to learn
    # for a tiny EfficientNet in a few CPU epochs: measured, not guessed.)
    image = _background(rng, x, y, side)

    # The object: shape mask in its own rotated (+-20 degrees), radius-normalised frame; log-uniform size.
    radius = _log_uniform(rng, *OBJECT_RADIUS) * side
    cx, cy = rng.uniform(radius * 0.9, side - radius * 0.9, size=2)
    angle = rng.uniform(-np.pi / 9, np.pi / 9)
    u = ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) / radius
    v = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / radius
    mask = _shape_mask(shape, u, v)

    # The stripes: over the whole background, in one of eight directions 22.5 degrees apart, jittered by +-3.75
    # degrees, with a log-uniform period over a decade (the carrier of the fine detail that a lower resolution
    # loses). On the background rather than inside the object (version 5), so that an image holds enough periods of
    # coarse stripes for a low resolution to learn their direction (measured: docs/benchmarks.md, session 7).
    direction = _WAVE_DIRECTIONS[orientation] + rng.uniform(-_DIRECTION_JITTER, _DIRECTION_JITTER)
    period = _log_uniform(rng, *STRIPE_PERIOD) * scale
    phase = rng.uniform(0.0, 2.0 * np.pi)
    wave = _grating(rng, x, y, direction, period, phase, side, scale)
    object_colour = _object_colour(rng, shape_index)
    contrast = rng.uniform(*STRIPE_CONTRAST) * (1.0 + rng.uniform(-0.2, 0.2, size=3))
    stripes = contrast[:, None, None] * wave[None]
    if STRIPES_ON == "background":
        image = np.where(mask[None], object_colour[:, None, None], image + stripes)
    else:
        image = np.where(mask[None], object_colour[:, None, None] + stripes, image)

    return _distractor_and_noise(rng, image, x, y, side)


def _background(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, side: int) -> np.ndarray:
    """A light background colour with a gentle gradient, ``3 x side x side``."""
    background = rng.uniform(0.6, 0.85) + rng.uniform(-0.12, 0.12, size=3)
    gradient = rng.normal(0.0, 0.1, size=2) / side
    return background[:, None, None] + (gradient[0] * (x - side / 2) + gradient[1] * (y - side / 2))[None]


def _object_colour(rng: np.random.Generator, cue: int) -> np.ndarray:
    """The object's colour: with chance ``COLOUR_CUE`` near ``SHAPE_COLOURS[cue]`` (a cue to the shape or family),
    otherwise a random one; darkened so that the object stands out from the light background."""
    if rng.uniform() < COLOUR_CUE:
        hue = SHAPE_COLOURS[cue] + rng.uniform(-0.1, 0.1, size=3)
    else:
        hue = rng.uniform(0.05, 0.95, size=3)
    return 0.05 + 0.45 * hue


def _distractor_and_noise(rng: np.random.Generator, image: np.ndarray, x: np.ndarray, y: np.ndarray,
                          side: int) -> np.ndarray:
    """Add a distractor (a small solid ellipse of a random colour, anywhere: it may overlap the object) and pixel
    noise, and quantise to uint8."""
    dx, dy = rng.uniform(0, side, size=2)
    a, b = rng.uniform(0.05, 0.12, size=2) * side
    blob = ((x - dx) / a) ** 2 + ((y - dy) / b) ** 2 <= 1.0
    image = np.where(blob[None], rng.uniform(0.0, 1.0, size=3)[:, None, None], image)
    image = image + rng.normal(0.0, rng.uniform(*PIXEL_NOISE), size=image.shape)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _grating(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, direction: float, period: float, phase: float,
             side: int, scale: float) -> np.ndarray:
    """The stripes' wave in [-1, 1]: a sine grating, or (a share ``SECOND_ORDER`` of the images) a binary texture
    whose contrast the grating modulates, so that every stripe has the same mean brightness."""
    wave = np.sin(2.0 * np.pi * (x * np.cos(direction) + y * np.sin(direction)) / period + phase)
    if SECOND_ORDER and rng.uniform() < SECOND_ORDER:
        grain = _log_uniform(rng, *CARRIER_GRAIN) * scale
        cells = int(np.ceil(side / grain)) + 1
        carrier = rng.choice(np.array([-1.0, 1.0]), size=(cells, cells))
        index = np.minimum((np.arange(side) / grain).astype(int), cells - 1)
        wave = carrier[np.ix_(index, index)] * (1.0 + wave) / 2.0
    return wave


def _draw_counts(rng: np.random.Generator, label: int, x: np.ndarray, y: np.ndarray, side: int) -> np.ndarray:
    """One image of the ``"counts"`` task: label ``k`` is family ``k // len(COUNTS)`` with ``COUNTS[k % len(COUNTS)]`` parts (sides of a
    regular polygon, points of a star, teeth of a gear, petals of a flower, dots on a circle), on a light background
    with a gradient, a distractor blob and pixel noise. Which count it is lives in the outline's detail, which a
    lower resolution blurs gradually (a 10-gon's corners go before a triangle's), and which needs the outline read
    around the object. Three objects in four carry their family's colour (the family, never the count)."""
    family_index = label // len(COUNTS)
    family = COUNT_FAMILIES[family_index]
    n = COUNTS[label % len(COUNTS)]
    image = _background(rng, x, y, side)

    radius = _log_uniform(rng, *OBJECT_RADIUS) * side
    cx, cy = rng.uniform(radius * 0.9, side - radius * 0.9, size=2)
    turn = np.radians(COUNT_ROTATION)
    angle = rng.uniform(-turn, turn) - np.pi / 2  # a corner / point / dot up, then turned
    dx, dy = x - cx, y - cy
    coverage = count_coverage(family, n, np.sqrt(dx * dx + dy * dy), np.arctan2(dy, dx) - angle, radius)

    object_colour = _object_colour(rng, family_index)
    image = image * (1.0 - coverage[None]) + object_colour[:, None, None] * coverage[None]
    return _distractor_and_noise(rng, image, x, y, side)


def count_coverage(family: str, n: int, distance: np.ndarray, theta: np.ndarray, radius: float) -> np.ndarray:
    """How much of each pixel the ``"counts"`` task's object covers (0..1, a soft edge one pixel wide), given the
    pixels' distance from its centre (px) and angle from its first part (radians): a regular ``n``-gon, a star of
    ``n`` points (inner radius half the outer), a gear of ``n`` square teeth (72% deep), a flower of ``n`` petals,
    or ``n`` dots on a circle, all of outer radius ``radius`` px."""
    theta = np.mod(theta, 2.0 * np.pi)
    sector = 2.0 * np.pi / n
    folded = np.mod(theta, sector)
    folded = np.minimum(folded, sector - folded)  # in [0, sector / 2]: every family is symmetric about its parts
    if family == "dots":
        ring = 0.72
        dot = min(0.26, 0.8 * ring * np.sin(sector / 2))
        gap = np.hypot(distance * np.cos(folded) - ring * radius, distance * np.sin(folded))  # to the nearest dot
        return np.clip(dot * radius - gap + 0.5, 0.0, 1.0)
    if family in ("polygon", "star"):
        # The outline runs straight from the point (1, 0) to the inner vertex at half a sector (for a polygon, the
        # middle of its edge): in polar form p / cos(angle - normal) for the line's distance p and normal's angle.
        inner = np.cos(sector / 2) if family == "polygon" else 0.5
        bx, by = inner * np.cos(sector / 2), inner * np.sin(sector / 2)
        normal = np.arctan2(1.0 - bx, by)  # perpendicular to (b - (1, 0)), pointing away from the centre
        outline = np.cos(normal) / np.cos(folded - normal)
    elif family == "gear":
        outline = np.where(folded < sector / 4, 1.0, 0.72)
    elif family == "flower":
        outline = 0.68 + 0.32 * np.cos(n * folded)
    else:
        raise AssertionError(f"unknown family {family}")
    return np.clip(outline * radius - distance + 0.5, 0.0, 1.0)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    radial = np.sqrt(u * u + v * v)
    if shape == "disc":
        return radial <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":  # equilateral, vertices on the unit circle
        return (v >= -0.5) & (v <= 1.0 - np.sqrt(3.0) * np.abs(u))
    if shape == "ring":
        return (radial <= 1.0) & (radial >= 0.55)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    raise AssertionError(f"unknown shape {shape}")


def _generator_constants() -> dict[str, Any]:
    """The generator's module constants, read when called: part of the cache key, so that an edit of one (or a
    patch by ``benchmarks/data_variants.py``) never reuses images drawn before it, even without a version bump."""
    extra = {"second_order": SECOND_ORDER, "grain": list(CARRIER_GRAIN)} if SECOND_ORDER else {}  # v6's keys unchanged
    if TASK != "stripes":
        extra.update(task=TASK, families=list(COUNT_FAMILIES), counts=list(COUNTS), rotation=COUNT_ROTATION)
    return {**extra, "orientations": list(ORIENTATIONS), "jitter": float(_DIRECTION_JITTER), "radius": list(OBJECT_RADIUS),
            "period": list(STRIPE_PERIOD), "contrast": list(STRIPE_CONTRAST), "stripes_on": STRIPES_ON,
            "noise": list(PIXEL_NOISE), "cue": COLOUR_CUE, "colours": SHAPE_COLOURS.tolist(), "shapes": list(SHAPES)}


def synthetic_cache_path(spec: DataSpec) -> Path:
    """Cache file of the synthetic data ``spec``, named by the generator version and every parameter (the digest
    covers the generator's constants too)."""
    key = {
        "version": SYNTHETIC_VERSION,
        "generator": _generator_constants(),
        "num_classes": spec.num_classes,
        "train_size": spec.train_size,
        "val_size": spec.val_size,
        "side": spec.side,
        "seed": spec.seed,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    name = (
        f"synthetic-v{SYNTHETIC_VERSION}-c{spec.num_classes}-n{spec.train_size}+{spec.val_size}"
        f"-s{spec.side}-seed{spec.seed}-{digest}.npz"
    )
    return cache_dir(spec.cache_dir) / name


def synthetic_arrays(spec: DataSpec) -> dict[str, np.ndarray]:
    """The synthetic arrays of ``spec``, from the cache, or generated and cached (written atomically).

    Returns:
        ``train_images`` / ``val_images`` (``N x 3 x side x side`` uint8), ``train_labels`` / ``val_labels``
        (``N`` int64), and ``mean`` / ``std`` (``3`` float64: per-channel statistics of the training images in
        [0, 1], for normalization).
    """
    path = synthetic_cache_path(spec)
    if path.is_file():
        try:
            with np.load(path) as stored:
                return {key: stored[key] for key in _ARRAYS}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is regenerated and replaced below
    # Distinct seeds per split so that the validation images are not a prefix of the training images.
    train_images, train_labels = generate_synthetic(
        spec.train_size, num_classes=spec.num_classes, side=spec.side, seed=2 * spec.seed
    )
    val_images, val_labels = generate_synthetic(
        spec.val_size, num_classes=spec.num_classes, side=spec.side, seed=2 * spec.seed + 1
    )
    pixels = train_images.transpose(1, 0, 2, 3).reshape(3, -1)
    arrays = {
        "train_images": train_images,
        "train_labels": train_labels,
        "val_images": val_images,
        "val_labels": val_labels,
        "mean": pixels.mean(axis=1, dtype=np.float64) / 255.0,
        "std": pixels.std(axis=1, dtype=np.float64) / 255.0,
    }
    _write_atomically(path, arrays)
    return arrays


_ARRAYS = ("train_images", "train_labels", "val_images", "val_labels", "mean", "std")


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError as exc:
        raise UserError(
            f"cannot write the synthetic data cache in {path.parent}: {exc.strerror};"
            f" set {CACHE_ENV} to a writable folder"
        )
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the cache is shared by every trial process
        os.replace(temporary, path)  # concurrent trials may race here; each writes identical content
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


class SyntheticData(Data):
    """The built-in synthetic dataset, held in memory (uint8) and resized once per resolution."""

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        self.classes = synthetic_classes(spec.num_classes)
        self.name = f"synthetic-{spec.num_classes}c"
        self.description = (
            f"built-in synthetic shapes x gratings, {spec.num_classes} classes, {spec.train_size} train /"
            f" {spec.val_size} val images of {spec.side} px (seed {spec.seed})"
        )
        self.arrays = synthetic_arrays(spec)
        self.mean = tuple(float(m) for m in self.arrays["mean"])
        self.std = tuple(float(s) for s in self.arrays["std"])
        self._resized: dict[tuple[str, int], "torch.Tensor"] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Pickled without its images (Ray Tune pickles the search's callbacks, which describe trials with the data,
        # into tuner.pkl: 27 MB with them); unpickling reads them back from the cache.
        return {key: value for key, value in self.__dict__.items() if key not in ("arrays", "_resized")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _resized={})
        self.arrays = synthetic_arrays(self.spec)

    def train_resolution(self, space: SearchSpace, r: float) -> int:
        return proxy_resolution(r, self.spec.side)

    def train_resolution_fn(self, space: SearchSpace) -> Callable[[float], int]:
        return partial(proxy_resolution, side=self.spec.side)

    def tensors(self, split: str, resolution: int) -> tuple["torch.Tensor", "torch.Tensor"]:
        """All images of ``split`` (``"train"`` or ``"val"``) at ``resolution`` px, normalized.

        Returns:
            ``N x 3 x resolution x resolution`` float32 and ``N`` int64 labels.
        """
        import torch
        import torch.nn.functional as F

        key = (split, resolution)
        if key not in self._resized:
            # Keep only the current resolution: a trial trains at one resolution, and 64 px floats take ~50 MB.
            self._resized = {k: v for k, v in self._resized.items() if k[1] == resolution}
            images = torch.from_numpy(self.arrays[f"{split}_images"])
            if resolution != self.spec.side:
                # resized as 8-bit images, as an image pipeline stores them (torch's uint8 path, 6-10x faster on
                # one thread than resizing floats: 0.02-0.05 s for 1800 images, against 0.35-0.56 s)
                images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True,
                                       align_corners=False)
            images = images.float().div_(255.0)
            mean = torch.tensor(self.mean).view(1, 3, 1, 1)
            std = torch.tensor(self.std).view(1, 3, 1, 1)
            self._resized[key] = ((images - mean) / std).contiguous()
        return self._resized[key], torch.from_numpy(self.arrays[f"{split}_labels"])

    def loaders(
        self, resolution: int, batch_size: int, seed: int, workers: int = 0, pin_memory: bool = False
    ) -> tuple[Batches, Batches]:
        if resolution < 1 or batch_size < 1:
            raise UserError(f"resolution ({resolution}) and batch size ({batch_size}) must be positive")
        train_images, train_labels = self.tensors("train", resolution)
        val_images, val_labels = self.tensors("val", resolution)
        import torch

        mirror = torch.from_numpy(synthetic_mirror(self.spec.num_classes))
        train = _TensorBatches(train_images, train_labels, batch_size, seed, shuffle=True, mirror=mirror)
        val = _TensorBatches(val_images, val_labels, batch_size, seed, shuffle=False)
        return train, val


class _TensorBatches(Batches):
    """Batches of in-memory tensors; training batches are shuffled and randomly flipped left-right.

    ``mirror[k]`` is the label of a flipped image of class ``k`` (``-1``: never flip class ``k``); ``None`` flips
    without changing labels.
    """

    def __init__(self, images: "torch.Tensor", labels: "torch.Tensor", batch_size: int, seed: int, shuffle: bool,
                 mirror: "torch.Tensor | None" = None) -> None:
        super().__init__(seed)
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.mirror = mirror

    def __len__(self) -> int:
        count = len(self.labels)
        if self.shuffle:
            return max(1, count // self.batch_size)
        return -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        import torch

        count = len(self.labels)
        if not self.shuffle:
            for start in range(0, count, self.batch_size):
                yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            return
        generator = self._generator()
        order = torch.randperm(count, generator=generator)
        flips = torch.rand(count, generator=generator) < 0.5
        labels = self.labels
        if self.mirror is not None:  # a flip turns diagonal stripes into antidiagonal ones: relabel, or do not flip
            flips &= self.mirror[labels] >= 0
            labels = torch.where(flips, self.mirror[labels], labels)
        batch = min(self.batch_size, count)
        for start in range(0, len(self) * batch, batch):
            index = order[start : start + batch]
            images = self.images[index]
            flip = flips[index]
            images[flip] = images[flip].flip(-1)
            yield images, labels[index]


# --------------------------------------------------------------------------------------------------------------
# ImageFolder data.


class FolderData(Data):
    """An ImageFolder dataset: ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``.

    The tree is checked when loaded: both splits exist, have the same class folders, every class folder holds
    at least one image, and one of the first images of every class opens. An image that cannot be read (corrupt,
    truncated, a decompression bomb) is skipped with a warning, at load and in training, and counted: each
    :class:`Batches` keeps the skipped ones in ``skipped`` and the trainer reports their number every epoch
    (``skipped_images``). Grayscale, palette and CMYK images are converted to RGB.
    """

    def __init__(self, spec: DataSpec, *, classes: tuple[str, ...] | None = None) -> None:
        assert spec.path is not None
        self.spec = spec
        root = Path(spec.path)
        self.root = root
        self.classes = check_image_folder(root) if classes is None else tuple(classes)
        self.name = root.name
        self.description = f"ImageFolder {root} ({len(self.classes)} classes)"
        self.decoded: Path | None = None
        if spec.decoded_side:
            from tinyray.decoded import open_decoded

            self.decoded = open_decoded(root, spec.decoded_side, cache_dir(spec.cache_dir), default_workers())
            self.description += f", decoded once at {spec.decoded_side} px into {self.decoded}"

    def train_resolution(self, space: SearchSpace, r: float) -> int:
        return space.resolution(r)

    def loaders(
        self, resolution: int, batch_size: int, seed: int, workers: int = 0, pin_memory: bool = False
    ) -> tuple[Batches, Batches]:
        from torchvision.datasets import ImageFolder

        if workers < 0:
            raise UserError(f"loader workers must be 0 or more, got {workers}")

        if resolution < 1 or batch_size < 1:
            raise UserError(f"resolution ({resolution}) and batch size ({batch_size}) must be positive")
        train_transform, val_transform = folder_transforms(resolution)
        if self.decoded is not None:
            from tinyray.decoded import DecodedImages, unreadable

            batches = []
            for split, transform, shuffle in (("train", train_transform, True), ("val", val_transform, False)):
                dataset = DecodedImages(self.decoded, split, transform)
                batches.append(_FolderBatches(dataset, batch_size, seed, workers, shuffle=shuffle, pin_memory=pin_memory))
                batches[-1].skipped.update(unreadable(self.decoded, split))  # skipped when the cache was built
            return batches[0], batches[1]
        # an image that cannot be read during training is skipped and counted (see _FolderBatches), not a crash
        train_set = ImageFolder(str(self.root / "train"), transform=_Readable(train_transform), loader=_open_or_skip)
        val_set = ImageFolder(str(self.root / "val"), transform=_Readable(val_transform), loader=_open_or_skip)
        train = _FolderBatches(train_set, batch_size, seed, workers, shuffle=True, pin_memory=pin_memory)
        val = _FolderBatches(val_set, batch_size, seed, workers, shuffle=False, pin_memory=pin_memory)
        return train, val


def folder_transforms(resolution: int) -> tuple[Any, Any]:
    """timm's ImageNet transforms at ``resolution`` px (``timm.data.create_transform``).

    Returns:
        ``(train, val)``: a random resized crop (scale 0.08-1, aspect 3/4-4/3, bicubic) and a horizontal flip
        (p 0.5), no colour jitter; and a bicubic resize of the shorter side to ``floor(resolution / 0.875)``
        followed by a centre crop. Both end with ToTensor and ImageNet mean/std normalization.

    Against the torchvision pipeline tinyray built by hand before (same steps and parameters): the resize side
    is ``floor`` rather than ``round`` of ``resolution / 0.875`` (timm's ``DEFAULT_CROP_PCT``; at most 1 px less,
    the same 256 px at 224), and timm's random crop draws from Python's ``random`` rather than torch's generator,
    so :class:`_FolderBatches` seeds ``random`` (and torch, for the flip) by ``(seed, epoch, index)`` for every
    image it loads (a resumed run crops alike, with any number of workers).
    """
    from timm.data import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

    # the exported model's pretrained_cfg (tinyray.cube.build_model) names the same interpolation, mean, std, crop
    common = dict(input_size=resolution, interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    # color_jitter=None: timm's training default is 0.4 brightness/contrast/saturation, which tinyray never used
    train = create_transform(is_training=True, color_jitter=None, hflip=0.5, **common)
    val = create_transform(is_training=False, crop_pct=DEFAULT_CROP_PCT, **common)
    return train, val


#: Largest image tinyray decodes, in pixels (PIL's guard against decompression bombs, set as an error: PIL by
#: default only warns up to twice its own limit).
MAX_IMAGE_PIXELS = 8192 * 8192
#: Unreadable images a training run skips (counted once each) before it stops: this share of a split, at least
#: MIN_SKIPPED_LIMIT of them.
MAX_SKIPPED_SHARE = 0.01
MIN_SKIPPED_LIMIT = 10
#: Images of a class folder tried, in path order, when a folder is loaded: unreadable ones are skipped, but if none
#: of these opens the folder is refused (a tree of non-images fails at once rather than in every trial).
PROBED_IMAGES = 5


def _shown(text: str) -> str:
    """A path fit to print: a name that is not UTF-8 (surrogate escapes) would break the terminal's encoding."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def open_image(path: str) -> Any:
    """Open an image file as RGB, or raise :class:`UserError` naming the file (also for a decompression bomb, or
    a FIFO or device, which would block or never end)."""
    import stat
    import warnings

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UserError(f"image {_shown(path)} is not a regular file (a FIFO, socket or device): remove it")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(path, "rb") as stream:
                image = Image.open(stream)
                return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"cannot read image {_shown(path)} ({_shown(str(exc))[:200]}): replace or delete the file")


class _Unreadable:
    """What :func:`_open_or_skip` gives for an image that cannot be read (its path, for the count)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason


def _open_or_skip(path: str) -> Any:
    try:
        return open_image(path)
    except UserError as exc:
        return _Unreadable(path, str(exc))


class _Readable:
    """A transform that passes :class:`_Unreadable` through (picklable, for DataLoader workers)."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> Any:
        return image if isinstance(image, _Unreadable) else self.transform(image)


def _collate_readable(batch: list) -> tuple[Any, Any, list[str]]:
    """Collate the readable samples of a batch; return the unreadable ones' paths beside them."""
    from torch.utils.data import default_collate

    good = [sample for sample in batch if not isinstance(sample[0], _Unreadable)]
    bad = [sample[0].reason for sample in batch if isinstance(sample[0], _Unreadable)]
    images, labels = default_collate(good) if good else (None, None)
    return images, labels, bad


def check_image_folder(root: Path) -> tuple[str, ...]:
    """Check an ImageFolder tree and return its class names (sorted, as ImageFolder labels them).

    Raises:
        UserError: a missing root, ``train/`` or ``val/``; no class folders; different classes in the two
            splits; a class folder without images; a class none of whose first :data:`PROBED_IMAGES` images
            opens.
    """
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"data path {_shown(str(root))} is not UTF-8: rename it (Ray, MLflow and JSON files need "
                        f"UTF-8 names)") from None
    if not root.is_dir():
        raise UserError(f"data path {root} is not a folder: give a folder with train/ and val/ class folders")
    classes: dict[str, list[str]] = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise UserError(
                f"data folder {root} has no {split}/ subfolder: put the images in {folder}/<class>/<image>"
            )
        names = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
        if not names:
            raise UserError(f"{folder} has no class folders: put each class's images in {folder}/<class>/")
        classes[split] = names
        for name in names:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"class folder {_shown(str(folder / name))} has a name that is not UTF-8: rename "
                                f"it") from None
            _check_class_opens(folder / name)
    if len(classes["train"]) < 2:
        raise UserError(f"{root / 'train'} has one class folder ({_shown(classes['train'][0])}): a classifier needs at "
                        f"least two classes; add another class folder to train/ and val/")
    if classes["train"] != classes["val"]:
        only_train = sorted(set(classes["train"]) - set(classes["val"]))
        only_val = sorted(set(classes["val"]) - set(classes["train"]))
        raise UserError(
            f"train/ and val/ of {root} have different class folders (only in train: {only_train or 'none'},"
            f" only in val: {only_val or 'none'}): give both splits the same classes"
        )
    return tuple(classes["train"])


def _check_class_opens(folder: Path) -> None:
    """Open the first images of a class folder until one opens; an unreadable one is skipped with a warning (as
    training skips it), but a class none of whose first :data:`PROBED_IMAGES` images opens is not image data.

    Raises:
        UserError: no images in the folder, or none of the first ones opens.
    """
    candidates = _first_images(folder, PROBED_IMAGES)
    if not candidates:
        raise UserError(f"class folder {_shown(str(folder))} holds no images ({', '.join(image_suffixes())}): add "
                        f"images or remove it")
    reasons = []
    for path in candidates:
        try:
            open_image(str(path))
            return
        except UserError as exc:
            log.warning("skipped: %s", exc)
            reasons.append(str(exc))
    raise UserError(f"no image of class folder {_shown(str(folder))} opens (the first {len(candidates)} tried; "
                    f"{reasons[0]})")


def image_suffixes() -> tuple[str, ...]:
    """The file suffixes ImageFolder loads (torchvision's ``IMG_EXTENSIONS``)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(IMG_EXTENSIONS)


def _first_images(folder: Path, count: int) -> list[Path]:
    """The first ``count`` images of a class folder (by path), after checking the whole folder as torchvision
    will walk it.

    Raises:
        UserError: a symlink loop (torchvision follows links and would walk it for ever), an image name that is
            a FIFO, socket or device (opening it blocks), or a name that is not UTF-8.
    """
    suffixes = image_suffixes()
    images: list[Path] = []
    seen: set[tuple[int, int]] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        info = current.stat()
        if (info.st_dev, info.st_ino) in seen:
            raise UserError(f"{_shown(str(current))} leads back to a folder already seen (a symlink loop): remove "
                            f"the link")
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(current), key=lambda entry: entry.name)
        except OSError as exc:
            raise UserError(f"cannot list {_shown(str(current))} ({exc.strerror}): check its permissions") from None
        for entry in entries:
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"{_shown(entry.path)} has a name that is not UTF-8: rename it") from None
            try:
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError:  # a symlink loop on itself, or a dangling link
                is_dir = is_file = False
            if is_dir:
                pending.append(Path(entry.path))
            elif entry.name.lower().endswith(suffixes):
                if not is_file:
                    raise UserError(f"{_shown(entry.path)} is not a regular file (a FIFO, socket, device or broken "
                                    f"link): remove it")
                images.append(Path(entry.path))
    return heapq.nsmallest(count, images)


class _FolderBatches(Batches):
    """A DataLoader over an ImageFolder split, seeded by ``(seed, epoch)``.

    Every image's augmentation is seeded by ``(seed, epoch, index)`` where it is loaded (:class:`_SeededSamples`),
    so batches do not depend on how many worker processes load them nor on what those processes did before: a run
    resumed at epoch ``e`` (new workers) sees what an unbroken one (workers alive since epoch 0) sees. The loader
    and its workers are made at the first iteration and kept (``persistent_workers``): each epoch re-reads only
    the sampler, which yields the epoch's order.
    """

    def __init__(self, dataset: Any, batch_size: int, seed: int, workers: int, shuffle: bool,
                 pin_memory: bool = False) -> None:
        super().__init__(seed)
        self.dataset = dataset
        self.batch_size = batch_size
        self.workers = workers
        self.shuffle = shuffle
        self.pin_memory = pin_memory
        self.skip_limit = max(MIN_SKIPPED_LIMIT, int(MAX_SKIPPED_SHARE * len(dataset)))
        self._loader: Any = None

    def __len__(self) -> int:
        count = len(self.dataset)
        if self.shuffle:
            return max(1, count // self.batch_size)
        return -(-count // self.batch_size)

    def samples(self) -> list[tuple[int, int]]:
        """The epoch's ``(index, sample_seed)`` pairs in loading order (a permutation when shuffling)."""
        import torch

        count = len(self.dataset)
        order = torch.randperm(count, generator=self._generator()).tolist() if self.shuffle else range(count)
        base = (self.seed * 1_000_003 + self.epoch) * 1_000_000_007
        return [(index, (base + index) % 2**63) for index in order]

    def _data_loader(self) -> Any:
        from torch.utils.data import DataLoader

        if self._loader is None:
            generator = self._generator()  # only seeds the workers, whose draws the per-image seeds replace
            self._loader = DataLoader(
                _SeededSamples(self.dataset),
                batch_size=self.batch_size,
                sampler=_EpochSampler(self),
                drop_last=self.shuffle and len(self.dataset) >= self.batch_size,
                num_workers=self.workers,
                generator=generator,
                persistent_workers=self.workers > 0,
                pin_memory=self.pin_memory,
                collate_fn=_collate_readable,
            )
        return self._loader

    def __iter__(self) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        iterator = iter(self._data_loader())
        while True:
            try:
                images, labels, bad = next(iterator)
            except StopIteration:
                return
            except UserError as exc:
                # From a worker process the message arrives wrapped in a traceback; keep only our line.
                text = str(exc)
                raise UserError(text.rsplit("UserError: ", 1)[-1]) from None
            for reason in bad:
                if reason not in self.skipped:
                    log.warning("skipped: %s", reason)
                self.skipped.add(reason)
            if len(self.skipped) > self.skip_limit:
                raise UserError(f"{len(self.skipped)} images of {len(self.dataset)} cannot be read, more than the "
                                f"{self.skip_limit} tinyray skips (e.g. {sorted(self.skipped)[0]})")
            if images is not None:
                yield images, labels


class _EpochSampler:
    """The sampler of a :class:`_FolderBatches` loader: the current epoch's ``(index, sample_seed)`` pairs.

    Read in the training process at the start of every epoch, so persistent workers need not know the epoch.
    """

    def __init__(self, batches: _FolderBatches) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.batches.samples())

    def __len__(self) -> int:
        return len(self.batches.dataset)


class _SeededSamples:
    """A dataset read by ``(index, sample_seed)``: seeds Python's ``random`` (timm's crop) and torch (the flip)
    with ``sample_seed`` around loading one image, and restores both afterwards, so that loading in the training
    process (no workers) leaves the trainer's random streams untouched. Picklable, for worker processes."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        import random

        import torch

        index, sample_seed = key
        python_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(sample_seed)
                torch.manual_seed(sample_seed)
                return self.dataset[index]
        finally:
            random.setstate(python_state)


def spec_summary(spec: DataSpec) -> dict[str, Any]:
    """The spec as JSON-able values (for tracking)."""
    values = asdict(spec)
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in values.items()}


__all__ = [
    "DataSpec",
    "Data",
    "Batches",
    "SyntheticData",
    "FolderData",
    "resolve_data",
    "load_data",
    "proxy_resolution",
    "cache_dir",
    "default_workers",
    "MAX_LOADER_WORKERS",
    "generate_synthetic",
    "synthetic_classes",
    "synthetic_arrays",
    "synthetic_cache_path",
    "folder_transforms",
    "check_image_folder",
    "image_suffixes",
    "open_image",
    "spec_summary",
]
