"""The Rubik's cube: a point (r, d, w) of a search space turned into a real timm network.

The construction follows the paper's released TinyNet code, as timm's ``tinynet_a..e`` do:

* depth: a stage of ``n`` blocks gets ``max(1, round(n * d))`` (``decode_arch_def(..., depth_trunc='round')``);
* width: block channels are ``round_channels(c * w)`` (multiples of 8, never more than 10% below ``c * w``);
  the stem stays at ``stem_channels`` (32) and the head is ``max(head, round_channels(head * w))``;
* resolution: ``floor(base_resolution * r)`` pixels, kept in the model's data config (``input_size``) as timm
  does, not in the network (which pools globally and runs at any size).

At the (r, d, w) of TinyNet-A..E this builds networks with exactly the parameters of timm's tinynet_a..e.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tinyray.space import SearchSpace

if TYPE_CHECKING:
    from timm.models.efficientnet import EfficientNet

#: TinyNet-A..E of the paper (Table 3): name -> (r, w, d) as the paper writes them, and their FLOPs (M MACs).
TINYNETS: dict[str, dict[str, float]] = {
    "tinynet_a": {"r": 0.86, "w": 1.0, "d": 1.2, "paper_mflops": 339},
    "tinynet_b": {"r": 0.84, "w": 0.75, "d": 1.1, "paper_mflops": 202},
    "tinynet_c": {"r": 0.825, "w": 0.54, "d": 0.85, "paper_mflops": 100},
    "tinynet_d": {"r": 0.68, "w": 0.54, "d": 0.695, "paper_mflops": 52},
    "tinynet_e": {"r": 0.475, "w": 0.51, "d": 0.60, "paper_mflops": 24},
}


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


def timm_builder() -> ModuleType:
    """timm's EfficientNet builder, ``timm.models._efficientnet_builder`` (a private module).

    timm has no public way to decode its block strings (``decode_arch_def``) or to round channels as its
    EfficientNets are built (``round_channels``), and tinyray must do both exactly as timm does, or the analytic
    FLOPs and the built network would drift apart. This is the one place that reaches into it;
    ``tests/test_cube.py::test_timm_private_builder_api`` fails loudly if timm moves or changes what is used.
    """
    from timm.models import _efficientnet_builder

    return _efficientnet_builder


def round_channels(space: SearchSpace, channels: int, w: float) -> int:
    """Channels of a layer of ``channels`` at width ``w``, rounded as timm's builder rounds them."""
    return timm_builder().round_channels(channels, w, space.channel_divisor)


def head_channels(space: SearchSpace, w: float) -> int:
    """Head width: never below the base head, as in the TinyNet code."""
    return max(space.head_channels, round_channels(space, space.head_channels, w))


@lru_cache(maxsize=512)
def _decode(blocks: tuple[tuple[str, ...], ...], d: float) -> tuple[tuple[dict[str, Any], ...], ...]:
    decoded = timm_builder().decode_arch_def([list(stage) for stage in blocks], d, depth_trunc="round")
    return tuple(tuple(block) for block in decoded)


def decode_blocks(space: SearchSpace, d: float) -> list[list[dict[str, Any]]]:
    """timm block arguments of every block at depth ``d`` (a fresh copy, safe to mutate)."""
    return [[dict(block) for block in stage] for stage in _decode(space.blocks, float(d))]


def stage_depths(space: SearchSpace, d: float) -> tuple[int, ...]:
    """Blocks per stage at depth multiplier ``d``."""
    return tuple(len(stage) for stage in _decode(space.blocks, float(d)))


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
) -> "EfficientNet":
    """Build the timm ``EfficientNet`` of the cube point (r, d, w).

    Args:
        space: the search space (base blocks, stem and head widths).
        r: resolution multiplier; the model's ``pretrained_cfg['input_size']`` is ``(3, floor(224 r), ...)``.
        d: depth multiplier (blocks per stage).
        w: width multiplier (channels).
        num_classes: classifier outputs.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth rate.
        bn_momentum: BatchNorm momentum in PyTorch's convention (the paper's 0.99 decay is 0.01 here).

    Returns:
        An untrained ``timm.models.efficientnet.EfficientNet``.
    """
    import torch.nn as nn
    from timm.data import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from timm.layers import get_act_layer
    from timm.models.efficientnet import EfficientNet

    norm_kwargs = {} if bn_momentum is None else {"momentum": bn_momentum}
    model = EfficientNet(
        block_args=decode_blocks(space, d),
        num_classes=num_classes,
        num_features=head_channels(space, w),
        stem_size=space.stem_channels,
        fix_stem=True,
        round_chs_fn=partial(timm_builder().round_channels, multiplier=w, divisor=space.channel_divisor),
        act_layer=get_act_layer(space.activation),
        norm_layer=partial(nn.BatchNorm2d, **norm_kwargs),
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
    )
    resolution = space.resolution(r)
    model.pretrained_cfg = {
        "architecture": f"{space.name}-{Candidate(r, d, w).label}",
        "input_size": (3, resolution, resolution),
        "num_classes": num_classes,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "interpolation": "bicubic",
        "crop_pct": DEFAULT_CROP_PCT,
        "classifier": "classifier",
        "first_conv": "conv_stem",
        "tinyray": {"space": space.name, "r": r, "d": d, "w": w},
    }
    model.default_cfg = model.pretrained_cfg
    return model
