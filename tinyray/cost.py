"""Cost of a candidate as the paper counts it, and FLOPs budgets.

FLOPs here are what the paper calls FLOPs: multiply-accumulates of one image at the candidate's deployment
resolution ``floor(224 r)`` (EfficientNet-B0: 0.39 G). Convolutions and linear layers count, squeeze-excite
1x1 convolutions included; element-wise work (BatchNorm, activations, the SE gate, residual adds, pooling) does
not, as in the paper and in torch's FLOP counter.

Two counts that a test keeps equal:

* :func:`analytic_cost` walks the decoded block definition and builds no torch model; the searcher calls it
  thousands of times (cached, a few microseconds a call).
* :func:`measured_cost` builds the timm network and counts it with ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from functools import lru_cache

from tinyray.cube import decode_blocks, head_channels, round_channels
from tinyray.errors import UserError
from tinyray.space import SearchSpace


@dataclass(frozen=True)
class Cost:
    """What a candidate costs.

    Attributes:
        resolution: deployment input side in pixels, ``floor(base_resolution * r)``.
        flops: multiply-accumulates of one image at that resolution.
        params: trainable parameters (BatchNorm affine terms included, running statistics not).
    """

    resolution: int
    flops: int
    params: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _conv_out(size: int, kernel: int, stride: int) -> int:
    # timm's symmetric padding for pad_type='': ((stride - 1) + (kernel - 1)) // 2
    padding = ((stride - 1) + (kernel - 1)) // 2
    return (size + 2 * padding - kernel) // stride + 1


def analytic_cost(space: SearchSpace, r: float, d: float, w: float, num_classes: int = 1000) -> Cost:
    """Count FLOPs and parameters of the cube point (r, d, w) from its block definition alone.

    Args:
        space: the search space.
        r, d, w: resolution, depth and width multipliers.
        num_classes: classifier outputs (1000 for the paper's ImageNet numbers).

    Returns:
        :class:`Cost` with FLOPs as multiply-accumulates of one image at ``floor(224 r)`` pixels.
    """
    resolution = space.resolution(r)
    flops, params = _count(space, resolution, float(d), float(w), num_classes)
    return Cost(resolution=resolution, flops=flops, params=params)


@lru_cache(maxsize=65536)
def _count(space: SearchSpace, resolution: int, d: float, w: float, num_classes: int) -> tuple[int, int]:
    flops = 0
    params = 0

    def conv(size: int, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> int:
        nonlocal flops, params
        out = _conv_out(size, kernel, stride)
        per_pixel = c_out * (c_in // groups) * kernel * kernel
        flops += out * out * per_pixel
        params += per_pixel
        return out

    def batchnorm(channels: int) -> None:
        nonlocal params
        params += 2 * channels

    def squeeze_excite(channels: int, reduced: int) -> None:
        # two 1x1 convolutions with bias on the pooled 1x1 map
        nonlocal flops, params
        flops += 2 * channels * reduced
        params += 2 * channels * reduced + channels + reduced

    from timm.layers import make_divisible

    size = conv(resolution, 3, space.stem_channels, 3, stride=2)
    batchnorm(space.stem_channels)
    c_in = space.stem_channels
    for stage in decode_blocks(space, d):
        for index, block in enumerate(stage):
            c_out = round_channels(space, block["out_chs"], w)
            # timm's builder strides only the first block of a stage
            stride = block["stride"] if index == 0 else 1
            kernel = block["dw_kernel_size"]
            se_ratio = block.get("se_ratio") or 0.0
            if block["block_type"] == "ds":
                out = conv(size, c_in, c_in, kernel, stride, groups=c_in)
                batchnorm(c_in)
                if se_ratio:
                    squeeze_excite(c_in, round(c_in * se_ratio / block.get("exp_ratio", 1.0)))
                conv(out, c_in, c_out, block["pw_kernel_size"])
                batchnorm(c_out)
            else:  # "ir", the only other type the space loader admits
                mid = make_divisible(c_in * block["exp_ratio"])
                conv(size, c_in, mid, block["exp_kernel_size"])
                batchnorm(mid)
                out = conv(size, mid, mid, kernel, stride, groups=mid)
                batchnorm(mid)
                if se_ratio:
                    squeeze_excite(mid, round(mid * se_ratio / block["exp_ratio"]))
                conv(out, mid, c_out, block["pw_kernel_size"])
                batchnorm(c_out)
            size, c_in = out, c_out
    head = head_channels(space, w)
    conv(size, c_in, head, 1)
    batchnorm(head)
    flops += head * num_classes
    params += head * num_classes + num_classes
    return flops, params


def measured_cost(space: SearchSpace, r: float, d: float, w: float, num_classes: int = 1000) -> Cost:
    """Build the network and count it with torch's FLOP counter (which reports 2 FLOPs per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tinyray.cube import build_model

    model = build_model(space, r, d, w, num_classes).eval()
    resolution = space.resolution(r)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, resolution, resolution))
    params = sum(p.numel() for p in model.parameters())
    return Cost(resolution=resolution, flops=counter.get_total_flops() // 2, params=params)


def base_flops(space: SearchSpace, num_classes: int = 1000) -> int:
    """FLOPs of the base network (r = d = w = 1): the unit of the formula's c = FLOPs / FLOPs(base)."""
    return analytic_cost(space, 1.0, 1.0, 1.0, num_classes).flops


_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_BUDGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*(?:flops|FLOPs|FLOPS|macs|MACs)?\s*$")
_BUDGET_HINT = "give FLOPs (multiply-accumulates of one image) like 200M, 1.2G, 350k or 2e8"


def parse_budget(text: str | int | float) -> int:
    """Parse a FLOPs budget such as ``200M``, ``1.2G``, ``2e8``, ``200000000``, ``0.2G`` or ``350k``.

    Returns:
        The budget as an integer number of multiply-accumulates.

    Raises:
        UserError: for anything that is not a positive finite number with an optional k/M/G/T suffix.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
        raw = repr(text)
    else:
        raw = str(text)
        match = _BUDGET_RE.match(raw)
        if not match:
            shown = raw if raw.strip() else "(empty)"
            raise UserError(f"budget {shown!r} is not a number of FLOPs: {_BUDGET_HINT}")
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(value) or value < 1:
        raise UserError(f"budget {raw!r} must be a positive, finite number of FLOPs: {_BUDGET_HINT}")
    return int(round(value))


def format_flops(flops: float) -> str:
    """``201_600_000`` -> ``'201.6M'``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(flops) >= scale:
            return f"{flops / scale:.4g}{unit}"
    return f"{flops:.0f}"
