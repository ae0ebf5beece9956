"""The EfficientNet family: timm's ``EfficientNet`` from block strings, shrunk as the paper's TinyNet code shrinks B0.

The base network is timm's block-string notation, one list per stage (``ir_r2_k3_s2_e6_c24_se0.25``: an
inverted-residual stage of 2 blocks, 3x3 depthwise kernel, stride 2, expansion 6, 24 output channels,
squeeze-excite ratio 0.25). A point (d, w) of the cube is built as timm's ``tinynet_a..e`` are:

* depth: a stage of ``n`` blocks gets ``max(1, round(n * d))`` (``decode_arch_def(..., depth_trunc='round')``,
  which shares them among the stage's block strings, at least one each);
* width: block channels are ``round_channels(c * w)`` (multiples of 8, never more than 10% below ``c * w``);
  the stem stays at ``stem_channels`` and the head is ``max(head, round_channels(head * w))``.

At the (r, d, w) of TinyNet-A..E this builds networks with exactly the parameters of timm's tinynet_a..e, and at
(1, 1, 1) timm's efficientnet_b0. :mod:`tinyray.families.mobilenetv3` reuses all of it but the head and the
squeeze-excite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache, partial
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from tinyray.errors import UserError
from tinyray.families.base import Network
from tinyray.space import MAX_STAGES, check_int

if TYPE_CHECKING:
    import torch.nn as nn

    from tinyray.cost import Tally

#: TinyNet-A..E of the paper (Table 3): name -> (r, w, d) as the paper writes them, and their FLOPs (M MACs).
TINYNETS: dict[str, dict[str, float]] = {
    "tinynet_a": {"r": 0.86, "w": 1.0, "d": 1.2, "paper_mflops": 339},
    "tinynet_b": {"r": 0.84, "w": 0.75, "d": 1.1, "paper_mflops": 202},
    "tinynet_c": {"r": 0.825, "w": 0.54, "d": 0.85, "paper_mflops": 100},
    "tinynet_d": {"r": 0.68, "w": 0.54, "d": 0.695, "paper_mflops": 52},
    "tinynet_e": {"r": 0.475, "w": 0.51, "d": 0.60, "paper_mflops": 24},
}
#: Block types counted analytically: timm's depthwise-separable and inverted-residual blocks (EfficientNet-B0 and
#: the TinyNets are made of them) and its conv-BN-activation (MobileNetV3's last stage).
_BLOCK_TYPES = ("ds", "ir", "cn")
_BLOCK_RE = re.compile(r"^(ds|ir|cn)(_r\d+|_k\d+|_s\d+|_e\d+(\.\d+)?|_c\d+|_se\d+(\.\d+)?|_noskip|_n(re|r6|hs|sw))+$")
_ACTIVATIONS = ("swish", "silu", "relu", "relu6", "hard_swish")
#: Block-string options: (low, high) of each; ``k`` must also be odd (timm pads ``k // 2``).
_BLOCK_LIMITS = {"r": (1, 64), "k": (1, 15), "s": (1, 4), "e": (0.0, 64.0), "c": (1, 8192), "se": (0.0, 1.0)}
#: Options timm's decoder requires of each block type.
_REQUIRED = {"ds": ("r", "k", "s", "c"), "ir": ("r", "k", "s", "e", "c"), "cn": ("r", "k", "s", "c")}
_INT_LIMITS = {"stem_channels": 8192, "head_channels": 16384, "channel_divisor": 256}


def timm_builder() -> ModuleType:
    """timm's EfficientNet builder, ``timm.models._efficientnet_builder`` (a private module).

    timm has no public way to decode its block strings (``decode_arch_def``) or to round channels as its
    EfficientNets are built (``round_channels``), and tinyray must do both exactly as timm does, or the analytic
    FLOPs and the built network would drift apart. This is the one place that reaches into it;
    ``tests/test_cube.py::test_timm_private_builder_api`` fails loudly if timm moves or changes what is used.
    """
    from timm.models import _efficientnet_builder

    return _efficientnet_builder


@lru_cache(maxsize=64)
def _stage_repeats(blocks: tuple[tuple[str, ...], ...]) -> tuple[int, ...]:
    """Blocks of each stage at d = 1 (the sum of its block strings' repeats), as timm's decoder counts them."""
    decoded = timm_builder().decode_arch_def([list(stage) for stage in blocks], 1.0, depth_trunc="round")
    return tuple(len(stage) for stage in decoded)


def _decode(blocks: tuple[tuple[str, ...], ...], d: float) -> tuple[tuple[dict[str, Any], ...], ...]:
    """timm's decoding of ``blocks`` at depth ``d`` (``decode_arch_def(..., depth_trunc="round")``), cached.

    timm's decoder uses ``d`` only through each stage's scaled total ``max(1, round(total * d))`` (its
    ``_scale_stage_depth``), so the decoding is cached on those totals: a search asks for thousands of distinct
    depths (every candidate a new float) but only a few dozen distinct networks of blocks, and timm's decoder
    (string parsing and deep copies) was most of the cost of a candidate's FLOPs and network key.
    ``tests/test_cube.py`` checks the cached decoding against timm's at many depths.
    """
    totals = _stage_repeats(blocks)
    return _decode_scaled(blocks, tuple(max(1, round(total * d)) for total in totals))


@lru_cache(maxsize=4096)
def _decode_scaled(blocks: tuple[tuple[str, ...], ...],
                   scaled: tuple[int, ...]) -> tuple[tuple[dict[str, Any], ...], ...]:
    # a per-stage multiplier that timm scales back to exactly ``scaled`` (round(total * scaled / total))
    multipliers = tuple(count / total for count, total in zip(scaled, _stage_repeats(blocks)))
    decoded = timm_builder().decode_arch_def([list(stage) for stage in blocks], multipliers, depth_trunc="round")
    return tuple(tuple(block) for block in decoded)


@dataclass(frozen=True)
class EfficientNetNetwork(Network):
    """A base network in timm's block strings, built as timm's ``EfficientNet``.

    Attributes:
        blocks: timm block strings, one tuple per stage, of the base network (d = w = 1).
        stem_channels: stem output channels, kept fixed under width scaling as TinyNet does.
        head_channels: head width at w = 1; the built head is ``max(head, round_channels(head * w))``.
        activation: timm activation name used in every block (a block's ``_nre`` makes it ReLU).
        channel_divisor: channels are rounded to multiples of this.
    """

    family: ClassVar[str] = "efficientnet"
    FIELDS: ClassVar[dict[str, type]] = {"blocks": list, "stem_channels": int, "head_channels": int, "activation": str,
                                         "channel_divisor": int}
    OPTIONAL: ClassVar[dict[str, Any]] = {"activation": "swish", "channel_divisor": 8}
    #: EfficientNet's compound scaling: alpha = 1.2, beta = 1.1, gamma = 1.15 (Tan and Le 2019, Sec. 3.3), so that
    #: alpha beta^2 gamma^2 ~ 2 and each step of phi doubles FLOPs.
    COMPOUND: ClassVar[dict[str, float] | None] = {"d": 1.2, "w": 1.1, "r": 1.15}

    blocks: tuple[tuple[str, ...], ...]
    stem_channels: int
    head_channels: int
    activation: str = "swish"
    channel_divisor: int = 8

    @classmethod
    def parse(cls, values: dict[str, Any], where: str) -> "EfficientNetNetwork":
        for key, high in _INT_LIMITS.items():
            check_int(values, key, high, where)
        if values["activation"] not in _ACTIVATIONS:
            raise UserError(f"search space {where}: activation {values['activation']!r} is not one of {list(_ACTIVATIONS)}")
        return cls(blocks=_parse_blocks(values["blocks"], where), stem_channels=values["stem_channels"],
                   head_channels=values["head_channels"], activation=values["activation"],
                   channel_divisor=values["channel_divisor"])

    # -- the cube ----------------------------------------------------------------------------------------------

    def round_channels(self, channels: int, w: float) -> int:
        """Channels of a layer of ``channels`` at width ``w``, rounded as timm's builder rounds them."""
        return timm_builder().round_channels(channels, w, self.channel_divisor)

    def head_width(self, w: float) -> int:
        """Head width: never below the base head, as in the TinyNet code."""
        return max(self.head_channels, self.round_channels(self.head_channels, w))

    def decode(self, d: float) -> list[list[dict[str, Any]]]:
        """timm block arguments of every block at depth ``d`` (a fresh copy, safe to mutate)."""
        return [[dict(block) for block in stage] for stage in _decode(self.blocks, float(d))]

    def stage_depths(self, d: float) -> tuple[int, ...]:
        return tuple(len(stage) for stage in _decode(self.blocks, float(d)))

    def key(self, d: float, w: float) -> tuple:
        # blocks per stage fix which block strings repeat; the rounded widths of the base's channel counts fix
        # every layer's channels (expansions and squeeze-excites follow from them)
        base_channels = dict.fromkeys(block["out_chs"] for stage in _decode(self.blocks, 1.0) for block in stage)
        return (self.stage_depths(d), tuple(self.round_channels(channels, w) for channels in base_channels),
                self.head_width(w))

    def build(self, d: float, w: float, num_classes: int, *, drop_rate: float = 0.0,
              drop_path_rate: float = 0.0) -> "nn.Module":
        from timm.layers import get_act_layer

        return self.timm_class()(
            block_args=self.decode(d),
            num_classes=num_classes,
            num_features=self.head_width(w),
            stem_size=self.stem_channels,
            fix_stem=True,
            round_chs_fn=partial(timm_builder().round_channels, multiplier=w, divisor=self.channel_divisor),
            act_layer=get_act_layer(self.activation),
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            **self.timm_options(),
        )

    def timm_class(self) -> type:
        """The timm network class this family builds."""
        from timm.models.efficientnet import EfficientNet

        return EfficientNet

    def timm_options(self) -> dict[str, Any]:
        """Arguments of :meth:`timm_class` beyond those every block-string family passes."""
        return {}

    def residual_norms(self, model: "nn.Module") -> list["nn.Module"]:
        # timm's EfficientNet blocks keep the skip decision in ``has_skip`` and end with ``bn3`` (inverted
        # residual) or ``bn2`` (depthwise-separable); tests/test_families.py fails loudly if timm renames them
        return [module.bn3 if hasattr(module, "bn3") else module.bn2
                for module in model.modules() if getattr(module, "has_skip", False)]

    def landmarks(self) -> dict[str, tuple[float, float, float]]:
        from tinyray.space import SPACES_DIR, load_space

        if self != load_space(SPACES_DIR / "efficientnet_b0.yaml").network:  # the TinyNets are shrinks of B0
            return {}
        return {name: (net["r"], net["d"], net["w"]) for name, net in TINYNETS.items()}

    # -- the count ---------------------------------------------------------------------------------------------

    def se_channels(self, block: dict[str, Any], channels: int) -> int:
        """Reduced channels of the squeeze-excite of ``block`` over ``channels``: timm's EfficientNet sizes it
        from the block's input (``se_from_exp=False``), ``round(channels * se_ratio / exp_ratio)``."""
        return round(channels * block["se_ratio"] / block.get("exp_ratio", 1.0))

    def count(self, tally: "Tally", resolution: int, d: float, w: float, num_classes: int) -> None:
        from timm.layers import make_divisible

        size = tally.conv(resolution, 3, self.stem_channels, 3, stride=2)
        tally.norm(self.stem_channels)
        c_in = self.stem_channels
        for stage in _decode(self.blocks, float(d)):
            for index, block in enumerate(stage):
                c_out = self.round_channels(block["out_chs"], w)
                # timm's builder strides only the first block of a stage
                stride = block["stride"] if index == 0 else 1
                block_type = block["block_type"]
                if block_type == "cn":
                    size = tally.conv(size, c_in, c_out, block["kernel_size"], stride)
                    tally.norm(c_out)
                    c_in = c_out
                    continue
                kernel = block["dw_kernel_size"]
                mid = c_in if block_type == "ds" else make_divisible(c_in * block["exp_ratio"])
                if block_type == "ir":
                    tally.conv(size, c_in, mid, block["exp_kernel_size"])
                    tally.norm(mid)
                out = tally.conv(size, mid, mid, kernel, stride, groups=mid)
                tally.norm(mid)
                if block.get("se_ratio"):
                    tally.squeeze_excite(mid, self.se_channels(block, mid))
                tally.conv(out, mid, c_out, block["pw_kernel_size"])
                tally.norm(c_out)
                size, c_in = out, c_out
        self.count_head(tally, size, c_in, w, num_classes)

    def count_head(self, tally: "Tally", size: int, c_in: int, w: float, num_classes: int) -> None:
        """EfficientNet's head: a 1x1 convolution to the head width and BatchNorm, pooling, the classifier."""
        head = self.head_width(w)
        tally.conv(size, c_in, head, 1)
        tally.norm(head)
        tally.linear(head, num_classes)


def _parse_blocks(stages: list, where: str) -> tuple[tuple[str, ...], ...]:
    if not stages:
        raise UserError(f"search space {where}: blocks is empty; give one list of block strings per stage")
    if len(stages) > MAX_STAGES:
        raise UserError(f"search space {where}: blocks has {len(stages)} stages, more than {MAX_STAGES}")
    parsed = []
    for index, stage in enumerate(stages):
        if isinstance(stage, str):
            stage = [stage]
        if not isinstance(stage, list) or not stage or not all(isinstance(b, str) for b in stage):
            raise UserError(f"search space {where}: blocks[{index}] must be a list of block strings such as ir_r2_k3_s2_e6_c24_se0.25")
        if len(stage) > MAX_STAGES:
            raise UserError(f"search space {where}: blocks[{index}] has {len(stage)} blocks, more than {MAX_STAGES}")
        for block in stage:
            if len(block) > 100 or not _BLOCK_RE.match(block):
                raise UserError(f"search space {where}: blocks[{index}] {block[:100]!r} is not a supported timm "
                                f"block string; use types {list(_BLOCK_TYPES)} with _r _k _s _e _c _se options, "
                                f"e.g. ir_r2_k3_s2_e6_c24_se0.25")
            _check_block_options(block, f"search space {where}: blocks[{index}] {block!r}")
        parsed.append(tuple(stage))
    return tuple(parsed)


def _check_block_options(block: str, what: str) -> None:
    """Every option of a block string in its range (``_r0``, ``_k0``, ``_s0``, ``_e0`` or huge values break the
    network or the FLOPs count far from the file), and those timm's decoder needs present."""
    options = {}
    for option in block.split("_")[1:]:
        key = re.match(r"[a-z]+", option).group(0)
        if key not in _BLOCK_LIMITS:
            continue  # noskip, and the activations nre, nr6, nhs, nsw
        value = options[key] = float(option[len(key):])
        low, high = _BLOCK_LIMITS[key]
        positive = key in ("e",)  # an expansion of 0 leaves no channels; se 0 means "no squeeze-excite"
        if not (low <= value <= high) or (positive and value <= 0):
            kind = "above 0 and" if positive else "from " + f"{low:g} to"
            raise UserError(f"{what}: _{key}{option[len(key):]} is out of range; _{key} must be {kind} {high:g}")
        if key == "k" and value % 2 == 0:
            raise UserError(f"{what}: _k{value:g} must be an odd kernel size (3, 5, 7)")
    missing = [key for key in _REQUIRED[block.split("_")[0]] if key not in options]
    if missing:
        raise UserError(f"{what} lacks _{missing[0]}: a {block.split('_')[0]} block needs "
                        f"{' '.join('_' + key for key in _REQUIRED[block.split('_')[0]])}")
