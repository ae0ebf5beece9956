"""Shared fixtures and helpers: the shipped search space, what the resume drills read from a results folder, and an
ImageFolder of generated images in odd modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinyray.space import SearchSpace, load_space


@pytest.fixture(scope="session")
def space() -> SearchSpace:
    return load_space("efficientnet_b0")


def finished_trials(results: Path, epochs: int) -> dict[str, int]:
    """Trials of a results folder whose result.json holds all ``epochs`` epochs -> number of result lines.

    The resume and reliability drills compare this before and after a restart: a finished trial must be neither
    retrained nor duplicated.
    """
    done = {}
    for path in results.glob("trial_*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if lines and json.loads(lines[-1]).get("training_iteration") == epochs:
            done[path.parent.name] = len(lines)
    return done


def mixed_folder(root: Path) -> tuple[Path, Path]:
    """Two classes of generated JPEG and PNG files in odd modes, and one corrupt JPEG (returned) among them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("leaf", "sky"):
            folder = root / split / name
            folder.mkdir(parents=True)
            colour = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
            Image.fromarray(colour).save(folder / "rgb.jpg", quality=90)
            Image.fromarray(colour).save(folder / "rgb.png")
            Image.fromarray(colour[..., 0]).save(folder / "gray.png")  # mode L
            Image.fromarray(colour[..., 1]).save(folder / "gray.jpeg")
            Image.fromarray(colour).convert("P").save(folder / "palette.png")  # mode P
            Image.fromarray(colour).convert("CMYK").save(folder / "cmyk.jpg")  # a CMYK JPEG, as ImageNet has some
            Image.fromarray(colour).convert("RGBA").save(folder / "rgba.png")
    corrupt = root / "train" / "leaf" / "a-corrupt.jpg"  # first of its class by name: met at load and in training
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    return root, corrupt
