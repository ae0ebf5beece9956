"""Tests of tinyray.data: the synthetic dataset (determinism, cache, balance) and ImageFolder loading and errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyray.data import (
    DataSpec,
    FolderData,
    SyntheticData,
    cache_dir,
    generate_synthetic,
    load_data,
    proxy_resolution,
    resolve_data,
    synthetic_mirror,
    synthetic_cache_path,
    synthetic_classes,
)
from conftest import mixed_folder
from tinyray.errors import UserError
from tinyray.space import load_space


def small_spec(tmp_path: Path, **changes) -> DataSpec:
    values = dict(train_size=60, val_size=20, num_classes=10, cache_dir=tmp_path / "cache")
    values.update(changes)
    return resolve_data(None, **values)


# ---- synthetic data ------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_arrays_and_other_seed_differs():
    images_a, labels_a = generate_synthetic(40, seed=3)
    images_b, labels_b = generate_synthetic(40, seed=3)
    images_c, labels_c = generate_synthetic(40, seed=4)
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert not np.array_equal(images_a, images_c)


def test_shapes_dtypes_and_balanced_labels():
    images, labels = generate_synthetic(53, num_classes=10, side=64, seed=0)
    assert images.shape == (53, 3, 64, 64) and images.dtype == np.uint8
    assert labels.shape == (53,) and labels.dtype == np.int64
    counts = np.bincount(labels, minlength=10)
    assert counts.min() >= 5 and counts.max() <= 6
    assert 40 < images.mean() < 220 and images.std() > 20  # real pictures, not a constant


def test_synthetic_classes_pair_shapes_with_orientations():
    names = synthetic_classes(40)
    assert len(set(names)) == 40
    assert names[:3] == ("disc-0", "disc-22.5", "disc-45") and names[7:9] == ("disc-157.5", "square-0")


def test_stripes_run_in_the_direction_the_label_says():
    """The label's grating orientation is in the pixels: the strongest spatial frequency of the image points along
    the label's wave direction (of eight, 22.5 degrees apart) in most images; at 16 px most of that is gone."""
    from tinyray import data as data_module

    images, labels = generate_synthetic(200, num_classes=40, side=64, seed=5)
    directions = np.array(data_module._WAVE_DIRECTIONS)

    def recovered(pictures: np.ndarray) -> float:
        grey = pictures.astype(np.float64).mean(axis=1)
        grey -= grey.mean(axis=(1, 2), keepdims=True)
        power = np.abs(np.fft.fftshift(np.fft.fft2(grey), axes=(1, 2))) ** 2
        side = grey.shape[-1]
        fy, fx = np.meshgrid(np.arange(side) - side // 2, np.arange(side) - side // 2, indexing="ij")
        power[:, np.hypot(fx, fy) < side / 16] = 0  # drop the low frequencies of the shape's silhouette
        peaks = power.reshape(len(grey), -1).argmax(axis=1)
        angles = np.arctan2(fy.ravel()[peaks], fx.ravel()[peaks]) % np.pi
        gap = (angles[:, None] - directions[None] + np.pi / 2) % np.pi - np.pi / 2
        return float(np.mean(np.abs(gap).argmin(axis=1) == labels % len(directions)))

    full = recovered(images)  # 0.94 on these 200 images; chance is 0.125
    small = recovered(images.reshape(200, 3, 16, 4, 16, 4).mean(axis=(3, 5)))  # 0.345
    assert full > 0.45 and small < full - 0.2


def _diagonality(pictures: np.ndarray) -> np.ndarray:
    """Per image, the normalised mixed moment of the grey gradient, sum(gx gy) / sum(gx^2 + gy^2): positive for
    stripes whose wave vector points along +x+y (the ``diagonal`` class), negative along -x+y (``antidiagonal``)."""
    grey = pictures.astype(np.float64).mean(axis=1)
    gy, gx = np.gradient(grey, axis=(1, 2))
    return (gx * gy).sum(axis=(1, 2)) / (gx * gx + gy * gy).sum(axis=(1, 2))


def test_mirror_swaps_the_slanted_directions_and_keeps_the_rest():
    images, labels = generate_synthetic(800, num_classes=40, side=64, seed=3)
    orientation = labels % 8
    diagonality = _diagonality(images)
    mirrored = _diagonality(images[..., ::-1])
    for wanted, sign in ((2, 1.0), (6, -1.0)):  # stripes at 45 degrees ("/": gradient along +x+y, y down) and 135
        assert sign * diagonality[orientation == wanted].mean() > 0.1  # measured 0.31 and -0.31
        assert -sign * mirrored[orientation == wanted].mean() > 0.1  # a mirror image carries the other class
    assert abs(diagonality[orientation % 4 == 0].mean()) < 0.03  # horizontal and vertical: no slant either way
    n = 8
    assert synthetic_mirror(40).tolist() == [(k // n) * n + (n - k % n) % n for k in range(40)]
    assert synthetic_mirror(40)[:8].tolist() == [0, 7, 6, 5, 4, 3, 2, 1]
    assert synthetic_mirror(7).tolist() == [0, -1, 6, 5, 4, 3, 2]  # class 1 (22.5) lacks its partner 7: never flipped


def test_flipped_training_images_carry_their_mirror_label(tmp_path):
    data = load_data(small_spec(tmp_path))
    stored, stored_labels = data.tensors("train", 64)
    train, _ = data.loaders(resolution=64, batch_size=20, seed=0)
    mirror = synthetic_mirror(10)
    flipped = kept = 0
    for images, labels in train:
        for image, label in zip(images, labels):
            same = (stored == image).flatten(1).all(dim=1).nonzero()
            mirrored = (stored.flip(-1) == image).flatten(1).all(dim=1).nonzero()
            if len(same):
                kept += 1
                assert int(label) == int(stored_labels[same[0, 0]])
            else:
                flipped += 1
                assert int(label) == mirror[int(stored_labels[mirrored[0, 0]])]
    assert flipped > 10 and kept > 10


def test_cache_is_written_once_and_reused(tmp_path):
    spec = small_spec(tmp_path)
    path = synthetic_cache_path(spec)
    assert not path.exists()
    first = load_data(spec)
    assert path.is_file()
    assert list(path.parent.glob("*.tmp")) == []  # atomic write left no temporary behind
    stamp = path.stat().st_mtime_ns
    second = load_data(spec)
    assert path.stat().st_mtime_ns == stamp  # read, not rewritten
    np.testing.assert_array_equal(first.arrays["train_images"], second.arrays["train_images"])
    # A different parameter is a different file; so is a different seed.
    assert synthetic_cache_path(small_spec(tmp_path, seed=1)) != path
    assert synthetic_cache_path(small_spec(tmp_path, train_size=61)) != path


def test_cache_key_covers_the_generator_s_constants(tmp_path, monkeypatch):
    """An edited generator constant (or one patched by benchmarks/data_variants.py) draws new images, even when
    SYNTHETIC_VERSION was not bumped: a stale cache once fed a re-recording the images of the previous draft."""
    from tinyray import data as data_module

    spec = small_spec(tmp_path)
    path = synthetic_cache_path(spec)
    monkeypatch.setattr(data_module, "OBJECT_RADIUS", (0.1, 0.2))
    assert synthetic_cache_path(spec) != path
    monkeypatch.undo()
    monkeypatch.setattr(data_module, "_DIRECTION_JITTER", 0.0)
    assert synthetic_cache_path(spec) != path
    monkeypatch.undo()
    monkeypatch.setattr(data_module, "SECOND_ORDER", 0.5)
    assert synthetic_cache_path(spec) != path
    monkeypatch.undo()
    monkeypatch.setattr(data_module, "TASK", "counts")
    assert synthetic_cache_path(spec) != path
    monkeypatch.undo()
    assert synthetic_cache_path(spec) == path


@pytest.mark.parametrize("family", ["polygon", "star", "gear", "flower", "dots"])
def test_a_counts_object_has_as_many_parts_as_its_label_says(family):
    """The "counts" task (an experiment of benchmarks/data_variants.py): walking once around the object on a circle
    between its inner and outer outline crosses as many covered arcs (corners, points, teeth, petals, dots) as the
    count in its label, whatever the turn."""
    from tinyray import data as data_module

    assert data_module.COUNT_FAMILIES == ("polygon", "star", "gear", "flower", "dots")
    theta = np.linspace(0.0, 2.0 * np.pi, 3600, endpoint=False)
    for n in data_module.COUNTS:
        probe = {"polygon": (1.0 + np.cos(np.pi / n)) / 2, "dots": 0.72}.get(family, 0.86)
        for turn in (0.0, 0.3):
            covered = data_module.count_coverage(family, n, np.full_like(theta, probe * 40.0), theta - turn, 40.0) > 0.5
            starts = np.count_nonzero(covered & ~np.roll(covered, 1))  # arcs, counted around the circle
            assert starts == n, (family, n, turn, starts)


def test_the_counts_task_is_off_by_default_and_names_its_classes(monkeypatch):
    """Version 6 draws stripes; the "counts" task, switched on, labels family x count, keeps the label under a
    left-right flip (a mirrored star has as many points) and draws objects darker than the background."""
    from tinyray import data as data_module

    assert data_module.TASK == "stripes"
    monkeypatch.setattr(data_module, "TASK", "counts")
    names = data_module.synthetic_classes(40)
    assert names[:3] == ("polygon-3", "polygon-4", "polygon-5") and names[-1] == "dots-10" and len(set(names)) == 40
    np.testing.assert_array_equal(data_module.synthetic_mirror(40), np.arange(40))
    images, labels = generate_synthetic(40, num_classes=40, seed=2)
    assert sorted(labels.tolist()) == list(range(40))
    again, _ = generate_synthetic(40, num_classes=40, seed=2)
    np.testing.assert_array_equal(images, again)
    brightness = images.astype(float).mean(axis=1)  # per pixel; the object is the darkest part of every image
    assert (np.percentile(brightness, 2, axis=(1, 2)) < np.percentile(brightness, 90, axis=(1, 2)) - 40).all()


def test_second_order_stripes_are_off_by_default_and_keep_the_brightness(monkeypatch):
    """Version 6 draws no second-order stripes (and no extra random number: its images are unchanged). Switched on
    (an experiment of benchmarks/data_variants.py), the stripes modulate a binary texture's contrast: every row of
    horizontal stripes has the same mean (a first-order grating's rows swing from -1 to 1), but not the same spread."""
    from tinyray import data as data_module

    plain, _ = generate_synthetic(6, num_classes=8, seed=5)
    coords = np.arange(64, dtype=np.float32) + 0.5
    y, x = np.meshgrid(coords, coords, indexing="ij")
    horizontal = -np.pi / 2  # the wave vector of horizontal stripes (image axes, y down)
    first = data_module._grating(np.random.default_rng(0), x, y, horizontal, 16.0, 0.0, 64, 1.0)
    assert np.ptp(first.mean(axis=1)) > 1.9
    monkeypatch.setattr(data_module, "SECOND_ORDER", 1.0)
    monkeypatch.setattr(data_module, "CARRIER_GRAIN", (1.0, 1.0))
    second = data_module._grating(np.random.default_rng(0), x, y, horizontal, 16.0, 0.0, 64, 1.0)
    assert np.abs(second.mean(axis=1)).max() < 0.5  # a row of 64 random +-e has mean sd e / 8 <= 0.125
    spread = second.std(axis=1)
    assert spread.max() > 0.95 and spread.min() < 0.05  # textured in a stripe, flat between two
    monkeypatch.undo()
    again, _ = generate_synthetic(6, num_classes=8, seed=5)
    np.testing.assert_array_equal(plain, again)


def test_damaged_cache_file_is_regenerated(tmp_path):
    spec = small_spec(tmp_path)
    path = synthetic_cache_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    data = load_data(spec)
    assert data.arrays["train_images"].shape == (60, 3, 64, 64)


def test_cache_dir_env_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYRAY_CACHE", str(tmp_path / "root"))
    assert cache_dir() == tmp_path / "root" / "data"
    assert cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("TINYRAY_CACHE")
    assert cache_dir() == Path("~/.cache/tinyray/data").expanduser()


def test_train_and_val_splits_differ(tmp_path):
    data = load_data(small_spec(tmp_path))
    assert data.arrays["train_images"].shape == (60, 3, 64, 64)
    assert data.arrays["val_images"].shape == (20, 3, 64, 64)
    assert not np.array_equal(data.arrays["train_images"][:20], data.arrays["val_images"])


def test_synthetic_loaders_shapes_order_and_normalization(tmp_path):
    data = load_data(small_spec(tmp_path))
    assert isinstance(data, SyntheticData) and data.num_classes == 10
    train, val = data.loaders(resolution=24, batch_size=16, seed=0)
    assert len(train) == 3  # 60 // 16, incomplete batch dropped
    batches = list(train)
    assert len(batches) == 3
    images, labels = batches[0]
    assert images.shape == (16, 3, 24, 24) and images.dtype == torch.float32
    assert labels.shape == (16,) and labels.dtype == torch.int64
    val_batches = list(val)
    assert sum(len(labels) for _, labels in val_batches) == 20
    all_val = torch.cat([images for images, _ in val_batches])
    assert abs(all_val.mean().item()) < 0.5 and 0.5 < all_val.std().item() < 1.5
    # The order depends only on (seed, epoch).
    again, _ = data.loaders(resolution=24, batch_size=16, seed=0)
    assert torch.equal(next(iter(again))[1], labels)
    train.set_epoch(1)
    assert not torch.equal(next(iter(train))[1], labels)


def test_synthetic_images_are_resized_as_8_bit_images(tmp_path):
    import torch.nn.functional as F

    data = load_data(small_spec(tmp_path))
    images, _ = data.tensors("train", 24)
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    levels = (images * std + mean) * 255.0
    # whole 8-bit levels, as an image pipeline stores a resized image (torch's uint8 path), antialiased
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    expected = F.interpolate(torch.from_numpy(data.arrays["train_images"]), size=(24, 24), mode="bilinear",
                             antialias=True, align_corners=False)
    assert torch.equal(levels.round().to(torch.uint8), expected)
    # at the native side nothing is resized
    native, _ = data.tensors("train", 64)
    assert torch.equal(((native * std + mean) * 255.0).round().to(torch.uint8), torch.from_numpy(data.arrays["train_images"]))


def test_proxy_and_deployment_resolution(tmp_path):
    space = load_space()
    data = load_data(small_spec(tmp_path))
    assert proxy_resolution(1.0) == 64 and proxy_resolution(0.5) == 32 and proxy_resolution(0.1) == 8
    assert data.train_resolution(space, 0.75) == 48
    assert space.resolution(0.75) == 168  # FLOPs refer to this one


def test_resolve_data_rejects_bad_synthetic_parameters():
    with pytest.raises(UserError, match="2 to 40 classes"):
        resolve_data(None, num_classes=41)
    with pytest.raises(UserError, match="at least one image per class"):
        resolve_data("synthetic", train_size=5)


# ---- ImageFolder data ----------------------------------------------------------------------------------------


def write_image(path: Path, colour: tuple[int, int, int], size: int = 20) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size + 4), colour).save(path)


def make_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 3) -> Path:
    for split in ("train", "val"):
        for index, name in enumerate(classes):
            for image in range(per_class):
                write_image(root / split / name / f"{image}.png", (80 * index, 40 * image, 100))
    return root


def test_folder_data_loads_and_batches(tmp_path):
    root = make_folder(tmp_path / "pets")
    spec = resolve_data(str(root))
    assert spec.kind == "folder" and spec.path == root.resolve()
    data = load_data(spec)
    assert isinstance(data, FolderData)
    assert data.classes == ("cat", "dog", "fox") and data.num_classes == 3 and data.name == "pets"
    assert data.train_resolution(load_space(), 0.5) == 112
    train, val = data.loaders(resolution=16, batch_size=4, seed=0)
    assert len(train) == 2  # 9 images // 4
    images, labels = next(iter(train))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2}
    seen = torch.cat([labels for _, labels in val])
    assert sorted(seen.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_folder_data_given_its_checked_classes_does_not_walk_the_tree_again(tmp_path, monkeypatch):
    from tinyray import data as data_module

    root = make_folder(tmp_path / "pets")
    classes = data_module.check_image_folder(root)
    walks = []
    monkeypatch.setattr(data_module, "check_image_folder", lambda path: walks.append(path) or ())
    data = load_data(resolve_data(str(root)), classes=classes)
    assert walks == [] and data.classes == ("cat", "dog", "fox")
    assert load_data(resolve_data(str(root))).classes == () and len(walks) == 1  # without them, it checks


def test_folder_transforms_are_timms_imagenet_recipe():
    """Issue 14: timm's create_transform, like the hand-built pipeline before it (bicubic, 0.875 crop, no jitter)."""
    import numpy as np
    from PIL import Image
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision import transforms

    from tinyray.data import folder_transforms

    train, val = folder_transforms(16)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8))
    # evaluation: shorter side to 18 px (floor = round of 16 / 0.875 here), centre crop, ImageNet normalization
    by_hand = transforms.Compose([
        transforms.Resize(18, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(16),
        transforms.ToTensor(), transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    ])
    assert torch.equal(val(image), by_hand(image))
    # training: crops and flips move pixels but never change a plain colour (timm's default colour jitter would)
    plain = Image.new("RGB", (30, 41), (200, 40, 90))
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN), torch.tensor(IMAGENET_DEFAULT_STD)
    expected = (torch.tensor([200, 40, 90]) / 255 - mean) / std
    for _ in range(5):
        out = train(plain)
        assert out.shape == (3, 16, 16)
        assert torch.allclose(out, expected.view(3, 1, 1).expand(3, 16, 16), atol=1e-5)


def test_folder_crops_follow_seed_and_epoch_not_global_random(tmp_path):
    """timm's random crop draws from Python's random: the training batches seed it by (seed, epoch), so a resumed
    run (the torch state restored from its checkpoint, Python's random not) crops as an unbroken one would."""
    import random

    import numpy as np
    from PIL import Image

    root = make_folder(tmp_path / "data")
    rng = np.random.default_rng(0)
    for path in sorted(root.rglob("*.png")):  # texture, so that different crops give different pixels
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(path)
    train, _ = load_data(str(root)).loaders(resolution=8, batch_size=9, seed=3)

    def epoch(number: int, python_seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        random.seed(python_seed)
        train.set_epoch(number)
        return torch.cat([images for images, _ in train])

    first = epoch(1, python_seed=1)
    assert torch.equal(first, epoch(1, python_seed=2))
    assert not torch.equal(first, epoch(2, python_seed=1))


def textured_folder(root: Path) -> Path:
    """:func:`make_folder` with noise images, so that different crops and flips give different pixels."""
    from PIL import Image

    make_folder(root)
    rng = np.random.default_rng(0)
    for path in sorted(root.rglob("*.png")):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(path)
    return root


def test_folder_batches_do_not_depend_on_workers_and_resume_exactly(tmp_path):
    """Issue 18: with worker processes (kept alive across epochs) the crops still follow (seed, epoch) alone: an
    unbroken run, a run resumed at epoch 2 with new workers, and a run without workers see the same batches."""
    import random

    data = load_data(str(textured_folder(tmp_path / "data")))

    def epochs(workers: int, numbers: list[int]) -> list[torch.Tensor]:
        train, _ = data.loaders(resolution=8, batch_size=4, seed=3, workers=workers)
        seen = []
        for number in numbers:
            train.set_epoch(number)
            seen.append(torch.cat([torch.cat([images.flatten(1), labels[:, None]], 1) for images, labels in train]))
        return seen

    unbroken = epochs(2, [0, 1, 2])
    assert epochs(2, [2])[0].equal(unbroken[2])  # resumed at epoch 2: fresh workers, same crops
    torch.manual_seed(5)
    random.seed(5)
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    in_process = epochs(0, [0, 1, 2])
    assert all(a.equal(b) for a, b in zip(in_process, unbroken))
    # loading in the training process leaves the trainer's random streams (dropout, drop path) untouched
    assert torch.get_rng_state().equal(torch_state) and random.getstate() == python_state
    assert not unbroken[1].equal(unbroken[2])  # and the epochs do differ


def test_default_workers_leave_the_training_one_cpu():
    from tinyray.data import MAX_LOADER_WORKERS, default_workers

    assert [default_workers(cpus) for cpus in (1, 2, 4)] == [0, 1, 3]
    assert default_workers(10 * MAX_LOADER_WORKERS) == MAX_LOADER_WORKERS
    assert 0 <= default_workers() <= MAX_LOADER_WORKERS


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="does not exist") as info:
        resolve_data(str(tmp_path / "nowhere"))
    assert "train/ and val/" in str(info.value)


def test_path_is_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        load_data(str(tmp_path / "file.txt"))


def test_missing_val_folder(tmp_path):
    root = make_folder(tmp_path / "data")
    for path in sorted((root / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "val").rmdir()
    with pytest.raises(UserError, match=r"no val/ subfolder") as info:
        load_data(str(root))
    assert "<class>" in str(info.value)


def test_no_class_folders(tmp_path):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()
    write_image(root / "train" / "loose.png", (1, 2, 3))  # images directly in train/ are not a class
    with pytest.raises(UserError, match="has no class folders"):
        load_data(str(root))


def test_empty_class_folder(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "train" / "empty").mkdir()
    (root / "val" / "empty").mkdir()
    (root / "train" / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match=r"empty holds no images"):
        load_data(str(root))


def test_different_classes_in_train_and_val(tmp_path):
    root = make_folder(tmp_path / "data")
    write_image(root / "train" / "owl" / "0.png", (9, 9, 9))
    with pytest.raises(UserError, match=r"different class folders \(only in train: \['owl'\]"):
        load_data(str(root))


def test_corrupt_first_image_is_skipped_at_load_with_a_warning(tmp_path, caplog):
    """Issue 18: a corrupt file is reported and skipped, also when it is the first of its class."""
    root = make_folder(tmp_path / "data")
    bad = root / "val" / "dog" / "0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with caplog.at_level("WARNING", logger="tinyray.data"):
        data = load_data(str(root))
    assert data.classes == ("cat", "dog", "fox")
    (warning,) = [record.getMessage() for record in caplog.records]
    assert warning.startswith("skipped: cannot read image") and str(bad) in warning
    _, val = data.loaders(resolution=16, batch_size=4, seed=0)
    assert sum(len(labels) for _, labels in val) == 8 and len(val.skipped) == 1


def test_a_class_none_of_whose_images_opens_is_refused_at_load(tmp_path):
    from tinyray.data import PROBED_IMAGES

    root = make_folder(tmp_path / "data", per_class=PROBED_IMAGES + 1)
    for index in range(PROBED_IMAGES):  # the one readable image comes after the images tried
        (root / "train" / "fox" / f"{index}.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match=rf"no image of class folder .*fox opens \(the first {PROBED_IMAGES} tried; "
                                        rf"cannot read image") as info:
        load_data(str(root))
    assert "0.png" in str(info.value)


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_met_while_training_is_skipped_and_named(tmp_path, workers):
    root = make_folder(tmp_path / "data")
    bad = root / "train" / "fox" / "2.png"  # not the first of its class: passes the eager check
    bad.write_bytes(b"garbage")
    data = load_data(str(root))
    train, _ = data.loaders(resolution=16, batch_size=9, seed=0, workers=workers)
    assert list(train)  # the others train (issue 13: one bad image must not crash every trial)
    (message,) = train.skipped
    assert message.startswith("cannot read image") and str(bad) in message
    assert "Traceback" not in message and os.linesep not in message


def test_sized_synthetic_spec():
    spec = resolve_data("synthetic:300/100")
    assert (spec.kind, spec.train_size, spec.val_size) == ("synthetic", 300, 100)
    with pytest.raises(UserError, match="at least one image per class"):
        resolve_data("synthetic:5/5")


# ---- a mixed ImageFolder: JPEG and PNG, grayscale, palette, CMYK, one corrupt file ----------------------------


def test_mixed_folder_loads_every_readable_image_as_rgb_and_counts_the_corrupt_one(tmp_path, caplog):
    from PIL import Image

    root, corrupt = mixed_folder(tmp_path / "mixed")
    assert Image.open(root / "train" / "sky" / "cmyk.jpg").mode == "CMYK"
    assert Image.open(root / "train" / "sky" / "gray.png").mode == "L"
    with caplog.at_level("WARNING", logger="tinyray.data"):
        data = load_data(str(root))
    assert data.classes == ("leaf", "sky")
    assert any(str(corrupt) in record.getMessage() for record in caplog.records)
    train, val = data.loaders(resolution=16, batch_size=3, seed=0)
    for epoch in range(2):
        train.set_epoch(epoch)
        batches = list(train)
        assert all(images.shape[1:] == (3, 16, 16) and torch.isfinite(images).all() for images, _ in batches)
        assert sum(len(labels) for _, labels in batches) <= 14  # 15 files, one unreadable
    (reason,) = train.skipped  # counted once over both epochs
    assert str(corrupt) in reason and reason.startswith("cannot read image")
    seen = torch.cat([labels for _, labels in val])
    assert sorted(seen.tolist()) == [0] * 7 + [1] * 7 and not val.skipped


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "I;16"])
def test_every_image_mode_becomes_three_channels(tmp_path, mode):
    from PIL import Image

    from tinyray.data import open_image

    path = tmp_path / f"image.{'jpg' if mode in ('L', 'CMYK') else 'png'}"
    base = Image.new("RGB", (10, 12), (200, 100, 50))
    (base.convert(mode) if mode != "I;16" else Image.new("I;16", (10, 12), 3000)).save(path)
    image = open_image(str(path))
    assert image.mode == "RGB" and image.size == (10, 12)



# ---- the decode-once cache (issue 18) ------------------------------------------------------------------------


def test_decoded_cache_is_built_once_skips_the_corrupt_image_and_evaluates_like_the_files(tmp_path, monkeypatch):
    from tinyray import decoded

    root, corrupt = mixed_folder(tmp_path / "mixed")
    spec = resolve_data(f"decoded:{root}", cache_dir=tmp_path / "cache")
    assert spec.kind == "folder" and spec.path == root.resolve() and spec.decoded_side == decoded.DECODED_SIDE == 256
    data = load_data(spec)
    folder = data.decoded
    assert folder is not None and folder.parent == tmp_path / "cache" / "decoded"
    images = np.load(folder / "train.npy", mmap_mode="r")
    assert images.shape == (15, 256, 256, 3) and images.dtype == np.uint8  # 2 classes x 7 images + the corrupt one
    train, val = data.loaders(resolution=16, batch_size=4, seed=0, workers=2)
    assert len(train.skipped) == 1 and str(corrupt) in next(iter(train.skipped))  # counted as from the files
    batch, labels = next(iter(train))
    assert batch.shape == (4, 3, 16, 16) and labels.dtype == torch.int64
    # evaluation crops the same centre region as from the files (resampled twice): plain colours come out alike
    plain = make_folder(tmp_path / "plain")
    _, cached = load_data(resolve_data(f"decoded:{plain}", cache_dir=tmp_path / "cache")).loaders(16, 4, seed=0)
    _, from_files = load_data(str(plain)).loaders(16, 4, seed=0)
    pairs = list(zip(cached, from_files))
    assert len(pairs) == 3 and all(a[1].equal(b[1]) and torch.allclose(a[0], b[0], atol=0.02) for a, b in pairs)

    # a second load (another trial on the node) opens it without decoding anything
    monkeypatch.setattr(decoded, "_build", lambda *args: pytest.fail("decoded again"))
    assert load_data(spec).decoded == folder
    # a changed image makes a new cache
    (root / "val" / "sky" / "rgb.png").write_bytes((root / "val" / "leaf" / "rgb.png").read_bytes())
    assert decoded.decoded_folder(root, 256, tmp_path / "cache") != folder


def test_decoded_cache_waits_for_the_builder_holding_the_lock(tmp_path):
    """A trial that finds the lock held waits, then opens what the builder made (it does not decode again)."""
    import threading

    from filelock import FileLock

    from tinyray import decoded

    root = make_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    folder = decoded.decoded_folder(root, 32, cache)
    folder.parent.mkdir(parents=True)
    lock = FileLock(str(folder) + ".lock")
    lock.acquire()
    opened = []
    waiter = threading.Thread(target=lambda: opened.append(decoded.open_decoded(root, 32, cache)))
    waiter.start()
    waiter.join(timeout=1)
    assert waiter.is_alive() and not folder.exists()  # waiting for the lock
    decoded._build(root, 32, folder, 0)  # what the holder does
    built = (folder / "meta.json").stat().st_mtime_ns
    lock.release()
    waiter.join(timeout=60)
    assert opened == [folder] and (folder / "meta.json").stat().st_mtime_ns == built
