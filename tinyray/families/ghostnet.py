"""The GhostNet family: timm's ``GhostNet`` (v1), its ghost bottlenecks grouped into stages of equal width.

The base network is timm's own block table (``[kernel, expansion channels, output channels, SE ratio, stride]``
a block, as in ``timm/models/ghostnet.py``), grouped into stages of one output width. A point (d, w) of the cube is:

* depth: a stage of ``n`` blocks keeps its first ``max(1, round(n * d))`` (the first carries the stride and the
  change of width; at d > 1 its last block repeats);
* width: timm's ``width`` multiplier, which rounds the stem, every block's channels and the last 1x1 convolution
  to multiples of 4 (``make_divisible(c * w, 4)``); the head stays at 1280, as in timm.

timm's GhostNet takes the last 1x1 convolution's width from the expansion of the last block it builds, so a last
stage cut to its first block ends on that block's expansion. The blocks are handed to timm as it groups them (a
strided block alone, the blocks between together), so that at (1, 1, 1) the shipped ``ghostnet.yaml`` builds
timm's ``ghostnet_100`` module for module. timm's GhostNet has no stochastic depth.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from tinyray.errors import UserError
from tinyray.families.base import Network, scaled_depth
from tinyray.space import MAX_STAGES

if TYPE_CHECKING:
    import torch.nn as nn

    from tinyray.cost import Tally

logger = logging.getLogger(__name__)

#: timm's GhostNet constants (not parameters of its class): stem and head widths, and the channel divisor.
_STEM_CHANNELS = 16
_HEAD_CHANNELS = 1280
_DIVISOR = 4
#: (low, high) of each entry of a block: kernel, expansion channels, output channels, SE ratio, stride
_BLOCK_LIMITS = ((1, 15), (1, 8192), (1, 8192), (0.0, 1.0), (1, 4))
_BLOCK_HINT = "[kernel, expansion channels, output channels, SE ratio, stride] such as [3, 48, 24, 0, 2]"

#: One ghost bottleneck: (kernel, expansion channels, output channels, SE ratio, stride), timm's cfg row.
Block = tuple[int, int, int, float, int]


@dataclass(frozen=True)
class GhostNetNetwork(Network):
    """A base GhostNet as timm's block table, one list of blocks a stage.

    Attributes:
        stages: the blocks of each stage at d = w = 1, each ``(kernel, expansion channels, output channels,
            SE ratio, stride)``.
    """

    family: ClassVar[str] = "ghostnet"
    FIELDS: ClassVar[dict[str, type]] = {"stages": list}

    stages: tuple[tuple[Block, ...], ...]

    @classmethod
    def parse(cls, values: dict[str, Any], where: str) -> "GhostNetNetwork":
        stages = values["stages"]
        if not stages or len(stages) > MAX_STAGES:
            raise UserError(f"search space {where}: stages must list 1 to {MAX_STAGES} stages, each a list of blocks "
                            f"{_BLOCK_HINT}")
        parsed = []
        for index, stage in enumerate(stages):
            if not isinstance(stage, list) or not stage or len(stage) > MAX_STAGES:
                raise UserError(f"search space {where}: stages[{index}] must be a list of 1 to {MAX_STAGES} blocks "
                                f"{_BLOCK_HINT}")
            parsed.append(tuple(_parse_block(block, f"search space {where}: stages[{index}]") for block in stage))
        return cls(stages=tuple(parsed))

    def blocks(self, d: float) -> list[list[Block]]:
        """The blocks of each stage at depth ``d``."""
        return [list(stage[:depth]) + [(*stage[-1][:4], 1)] * (depth - len(stage))
                for stage, depth in zip(self.stages, self.stage_depths(d))]

    def stage_depths(self, d: float) -> tuple[int, ...]:
        return tuple(scaled_depth(len(stage), d) for stage in self.stages)

    def key(self, d: float, w: float) -> tuple:
        from timm.layers import make_divisible

        widths = sorted({_STEM_CHANNELS} | {c for stage in self.stages for block in stage for c in block[1:3]})
        return self.stage_depths(d), tuple(make_divisible(c * w, _DIVISOR) for c in widths)

    def build(self, d: float, w: float, num_classes: int, *, drop_rate: float = 0.0,
              drop_path_rate: float = 0.0) -> "nn.Module":
        from timm.models.ghostnet import GhostNet

        if drop_path_rate:
            logger.warning("timm's GhostNet has no stochastic depth: drop_path_rate %g is not applied", drop_path_rate)
        # timm groups a strided block alone and the blocks between strides together (its feature_info relies on it)
        cfgs: list[list[list[float]]] = []
        for block in (block for stage in self.blocks(d) for block in stage):
            if block[4] > 1 or not cfgs or cfgs[-1][-1][4] > 1:
                cfgs.append([])
            cfgs[-1].append(list(block))
        return GhostNet(cfgs=cfgs, num_classes=num_classes, width=w, drop_rate=drop_rate)

    def residual_norms(self, model: "nn.Module") -> list["nn.Module"]:
        # every ghost bottleneck adds its shortcut to its second ghost module, whose output concatenates a
        # primary and a cheap convolution, each ending in a BatchNorm
        from timm.models.ghostnet import GhostBottleneck

        return [getattr(module.ghost2, part)[1] for module in model.modules() if isinstance(module, GhostBottleneck)
                for part in ("primary_conv", "cheap_operation")]

    def count(self, tally: "Tally", resolution: int, d: float, w: float, num_classes: int) -> None:
        from timm.layers import make_divisible

        def ghost_module(size: int, c_in: int, c_out: int) -> None:
            # a 1x1 convolution to half the channels, and a 3x3 depthwise one making the other half
            primary = math.ceil(c_out / 2)
            tally.conv(size, c_in, primary, 1)
            tally.norm(primary)
            tally.conv(size, primary, primary, 3, groups=primary)
            tally.norm(primary)

        c_in = make_divisible(_STEM_CHANNELS * w, _DIVISOR)
        size = tally.conv(resolution, 3, c_in, 3, stride=2)
        tally.norm(c_in)
        for stage in self.blocks(d):
            for kernel, expansion, channels, se_ratio, stride in stage:
                mid = make_divisible(expansion * w, _DIVISOR)
                c_out = make_divisible(channels * w, _DIVISOR)
                ghost_module(size, c_in, mid)
                out = size
                if stride > 1:
                    out = tally.conv(size, mid, mid, kernel, stride, groups=mid)
                    tally.norm(mid)
                if se_ratio:
                    tally.squeeze_excite(mid, make_divisible(mid * se_ratio, _DIVISOR))
                ghost_module(out, mid, c_out)
                if c_in != c_out or stride > 1:  # the shortcut: depthwise, then 1x1
                    tally.conv(size, c_in, c_in, kernel, stride, groups=c_in)
                    tally.norm(c_in)
                    tally.conv(out, c_in, c_out, 1)
                    tally.norm(c_out)
                size, c_in = out, c_out
        last = make_divisible(expansion * w, _DIVISOR)  # timm: the last built block's expansion
        tally.conv(size, c_in, last, 1)
        tally.norm(last)
        tally.linear(last, _HEAD_CHANNELS)
        tally.linear(_HEAD_CHANNELS, num_classes)


def _parse_block(block: Any, what: str) -> Block:
    if not isinstance(block, list) or len(block) != 5 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in block):
        raise UserError(f"{what}: {str(block)[:60]} is not a block {_BLOCK_HINT}")
    for name, value, (low, high) in zip(("kernel", "expansion", "output channels", "SE ratio", "stride"), block,
                                        _BLOCK_LIMITS):
        if not low <= value <= high or (name != "SE ratio" and value != int(value)):
            raise UserError(f"{what}: {name} {value!r} of {block} is out of range: give "
                            f"{'a number' if name == 'SE ratio' else 'an integer'} from {low} to {high}")
    if block[0] % 2 == 0:
        raise UserError(f"{what}: kernel {block[0]} of {block} must be odd (3, 5, 7)")
    kernel, expansion, channels, se_ratio, stride = block
    return int(kernel), int(expansion), int(channels), float(se_ratio), int(stride)
