"""The MobileNetV3 family: timm's ``MobileNetV3`` from block strings, shrunk by the EfficientNet family's rules.

The base network is the block strings of timm's ``_gen_mobilenet_v3`` (``ir_r3_k5_s2_e3_c40_se0.25_nre``: ``_nre``
makes a block ReLU, the others use the space's activation, hard-swish; ``cn_r1_k1_s1_c960`` is the last 1x1
convolution). Depth, width and the fixed stem are the EfficientNet family's
(:mod:`tinyray.families.efficientnet`); timm's ``depth_trunc='round'`` keeps at least one block of every block
string, so the stage of three kinds of 80-channel blocks keeps three. MobileNetV3 differs in two places, both
taken from timm: its squeeze-excite (hard-sigmoid gate, ReLU, reduced channels ``round_channels(mid * 0.25)``
of the expanded channels) and its "efficient head" (pooling first, then a 1x1 convolution with bias and no
BatchNorm to ``head_channels``, which never shrinks, as in timm).

At (1, 1, 1) it builds timm's ``mobilenetv3_large_100``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from tinyray.families.efficientnet import EfficientNetNetwork, timm_builder

if TYPE_CHECKING:
    from tinyray.cost import Tally


@dataclass(frozen=True)
class MobileNetV3Network(EfficientNetNetwork):
    """A base network in timm's block strings, built as timm's ``MobileNetV3`` (keys as the EfficientNet family's)."""

    family: ClassVar[str] = "mobilenetv3"
    OPTIONAL: ClassVar[dict[str, Any]] = {"activation": "hard_swish", "channel_divisor": 8}
    # EfficientNet's coefficients were grid-searched on EfficientNet-B0; MobileNetV3 has no compound rule of its own
    COMPOUND: ClassVar[dict[str, float] | None] = None

    activation: str = "hard_swish"

    def timm_class(self) -> type:
        from timm.models.mobilenetv3 import MobileNetV3

        return MobileNetV3

    def timm_options(self) -> dict[str, Any]:
        import torch.nn as nn
        from timm.models._efficientnet_blocks import SqueezeExcite

        # timm's _gen_mobilenet_v3 squeeze-excite; timm exports neither it nor its SqueezeExcite outside the private
        # _efficientnet_blocks, and tests/test_families.py (the base is mobilenetv3_large_100 layer for layer) fails
        # loudly if either changes
        return {"se_layer": partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU,
                                    rd_round_fn=timm_builder().round_channels)}

    def se_channels(self, block: dict[str, Any], channels: int) -> int:
        """MobileNetV3 sizes the squeeze-excite from the expanded channels (``se_from_exp=True``), rounded to
        multiples of 8."""
        return timm_builder().round_channels(channels * block["se_ratio"])

    def count_head(self, tally: "Tally", size: int, c_in: int, w: float, num_classes: int) -> None:
        """The efficient head: pooling, a 1x1 convolution with bias on the pooled map, the classifier."""
        head = self.head_width(w)
        tally.linear(c_in, head)
        tally.linear(head, num_classes)
