"""The Rubik's cube: a point (r, d, w) of a search space turned into a real timm network.

How depth and width shrink a base is its family's (:mod:`tinyray.families`): for EfficientNet-B0 the paper's
released TinyNet code, as timm's ``tinynet_a..e`` do (``max(1, round(n * d))`` blocks in a stage of ``n``,
``round_channels(c * w)`` channels, a fixed stem). Resolution is the same for every family: ``floor(base_resolution
* r)`` pixels, kept in the model's data config (``input_size``) as timm does, not in the network (which pools
globally and runs at any size).

At the (r, d, w) of TinyNet-A..E this builds networks with exactly the parameters of timm's tinynet_a..e.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinyray.families.efficientnet import TINYNETS, timm_builder
from tinyray.space import SearchSpace

if TYPE_CHECKING:
    import torch.nn as nn

#: TINYNETS and timm_builder live with the EfficientNet family; they are importable from here as before.
__all__ = ["TINYNETS", "Candidate", "build_model", "stage_depths", "timm_builder"]


@dataclass(frozen=True)
class Candidate:
    """One point of the cube: resolution, depth and width multipliers."""

    r: float
    d: float
    w: float

    @property
    def label(self) -> str:
        """Short readable name, e.g. ``r0.84-d1.10-w0.75``."""
        return f"r{self.r:.2f}-d{self.d:.2f}-w{self.w:.2f}"


def stage_depths(space: SearchSpace, d: float) -> tuple[int, ...]:
    """Blocks per stage at depth multiplier ``d``."""
    return space.network.stage_depths(float(d))


def build_model(
    space: SearchSpace,
    r: float,
    d: float,
    w: float,
    num_classes: int = 1000,
    *,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    bn_momentum: float | None = None,
) -> "nn.Module":
    """Build the timm network of the cube point (r, d, w).

    Args:
        space: the search space (its base network builds itself at (d, w), see :mod:`tinyray.families`).
        r: resolution multiplier; the model's ``pretrained_cfg['input_size']`` is ``(3, floor(224 r), ...)``.
        d: depth multiplier (blocks per stage).
        w: width multiplier (channels).
        num_classes: classifier outputs.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth rate.
        bn_momentum: BatchNorm momentum in PyTorch's convention (the paper's 0.99 decay is 0.01 here).

    Returns:
        An untrained timm network (``EfficientNet``, ``MobileNetV3``, ``ResNet``, ``GhostNet``...).
    """
    import torch.nn as nn
    from timm.data import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    network = space.network
    model = network.build(float(d), float(w), num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):  # timm's BatchNormAct2d too
                module.momentum = bn_momentum
    resolution = space.resolution(r)
    model.pretrained_cfg = {
        "architecture": f"{space.name}-{Candidate(r, d, w).label}",
        "input_size": (3, resolution, resolution),
        "num_classes": num_classes,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "interpolation": "bicubic",
        "crop_pct": DEFAULT_CROP_PCT,
        "classifier": network.classifier,
        "first_conv": network.first_conv,
        "tinyray": {"space": space.name, "family": space.family, "r": r, "d": d, "w": w},
    }
    model.default_cfg = model.pretrained_cfg
    return model
