"""The ResNet family: timm's ``ResNet`` (7x7 stem, max-pool, four stages of bottleneck or basic blocks).

The base network is timm's own arguments: the block, the blocks of each stage (``layers``) and the stage widths
(``channels``; a bottleneck's output is four times its width). A point (d, w) of the cube is:

* depth: a stage of ``n`` blocks gets ``max(1, round(n * d))``, the EfficientNet family's rule;
* width: stage widths are ``make_divisible(c * w, channel_divisor)`` (timm's rounding, never more than 10% below
  ``c * w``); the stem stays at 64 channels, as timm's ResNet fixes it, and the classifier reads the last stage.

At (1, 1, 1) the shipped ``resnet50.yaml`` builds timm's ``resnet50``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from tinyray.errors import UserError
from tinyray.families.base import Network, scaled_depth
from tinyray.space import MAX_STAGES, check_int

if TYPE_CHECKING:
    import torch.nn as nn

    from tinyray.cost import Tally

#: timm's ResNet blocks: name -> (class name in timm.models.resnet, channel expansion of its output).
_BLOCKS = {"bottleneck": ("Bottleneck", 4), "basic": ("BasicBlock", 1)}
#: timm's ResNet stem with the default ``stem_type=''``: a 7x7 convolution to 64 channels (not a parameter).
_STEM_CHANNELS = 64
_MAX_CHANNELS = 8192
_MAX_BLOCKS = 64


@dataclass(frozen=True)
class ResNetNetwork(Network):
    """A base ResNet as timm's ``ResNet`` arguments.

    Attributes:
        block: ``bottleneck`` (ResNet-50 and deeper) or ``basic`` (ResNet-18/34).
        layers: blocks of each stage; the first stage runs at stride 4, every later one halves the map.
        channels: width of each stage at w = 1 (a bottleneck's output has four times as many).
        channel_divisor: stage widths are rounded to multiples of this.
    """

    family: ClassVar[str] = "resnet"
    FIELDS: ClassVar[dict[str, type]] = {"block": str, "layers": list, "channels": list, "channel_divisor": int}
    OPTIONAL: ClassVar[dict[str, Any]] = {"block": "bottleneck", "channel_divisor": 8}
    first_conv: ClassVar[str] = "conv1"
    classifier: ClassVar[str] = "fc"

    layers: tuple[int, ...]
    channels: tuple[int, ...]
    block: str = "bottleneck"
    channel_divisor: int = 8

    @classmethod
    def parse(cls, values: dict[str, Any], where: str) -> "ResNetNetwork":
        if values["block"] not in _BLOCKS:
            raise UserError(f"search space {where}: block {values['block'][:40]!r} is not one of {list(_BLOCKS)}")
        check_int(values, "channel_divisor", 256, where)
        layers, channels = values["layers"], values["channels"]
        for key, high in (("layers", _MAX_BLOCKS), ("channels", _MAX_CHANNELS)):
            items = values[key]
            if not items or len(items) > MAX_STAGES or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 < v <= high for v in items):
                raise UserError(f"search space {where}: {key} must be a list of 1 to {MAX_STAGES} positive integers "
                                f"up to {high}, one a stage, e.g. {key}: {[3, 4, 6, 3] if key == 'layers' else [64, 128, 256, 512]}")
        if len(layers) != len(channels):
            raise UserError(f"search space {where}: layers has {len(layers)} stages and channels {len(channels)}: "
                            f"give one number of each a stage")
        return cls(layers=tuple(layers), channels=tuple(channels), block=values["block"],
                   channel_divisor=values["channel_divisor"])

    def widths(self, w: float) -> tuple[int, ...]:
        """Stage widths at width ``w``."""
        from timm.layers import make_divisible

        return tuple(make_divisible(channels * w, self.channel_divisor) for channels in self.channels)

    def stage_depths(self, d: float) -> tuple[int, ...]:
        return tuple(scaled_depth(blocks, d) for blocks in self.layers)

    def key(self, d: float, w: float) -> tuple:
        return self.stage_depths(d), self.widths(w)

    def build(self, d: float, w: float, num_classes: int, *, drop_rate: float = 0.0,
              drop_path_rate: float = 0.0) -> "nn.Module":
        from timm.models import resnet

        return resnet.ResNet(
            block=getattr(resnet, _BLOCKS[self.block][0]),
            layers=self.stage_depths(d),
            channels=self.widths(w),
            num_classes=num_classes,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            zero_init_last=False,  # the training recipe decides (residual_norms)
        )

    def residual_norms(self, model: "nn.Module") -> list["nn.Module"]:
        # what timm's own zero_init_last zeroes: the last BatchNorm of every block (each adds its shortcut)
        from timm.models.resnet import BasicBlock, Bottleneck

        return [module.bn3 if isinstance(module, Bottleneck) else module.bn2
                for module in model.modules() if isinstance(module, (Bottleneck, BasicBlock))]

    def count(self, tally: "Tally", resolution: int, d: float, w: float, num_classes: int) -> None:
        expansion = _BLOCKS[self.block][1]
        size = tally.conv(resolution, 3, _STEM_CHANNELS, 7, stride=2)
        tally.norm(_STEM_CHANNELS)
        size = tally.pool(size, 3, 2)
        c_in = _STEM_CHANNELS
        for stage, (blocks, width) in enumerate(zip(self.stage_depths(d), self.widths(w))):
            c_out = width * expansion
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                if index == 0 and (stride != 1 or c_in != c_out):  # the projection shortcut
                    tally.conv(size, c_in, c_out, 1, stride)
                    tally.norm(c_out)
                if self.block == "bottleneck":
                    tally.conv(size, c_in, width, 1)
                    tally.norm(width)
                    out = tally.conv(size, width, width, 3, stride)
                    tally.norm(width)
                    tally.conv(out, width, c_out, 1)
                else:
                    out = tally.conv(size, c_in, width, 3, stride)
                    tally.norm(width)
                    tally.conv(out, width, c_out, 3)
                tally.norm(c_out)
                size, c_in = out, c_out
        tally.linear(c_in, num_classes)
