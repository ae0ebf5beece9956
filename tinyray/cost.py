"""Cost of a candidate as the paper counts it, and FLOPs budgets.

FLOPs here are what the paper calls FLOPs: multiply-accumulates of one image at the candidate's deployment
resolution ``floor(224 r)`` (EfficientNet-B0: 0.39 G). Convolutions and linear layers count, squeeze-excite
1x1 convolutions included; element-wise work (BatchNorm, activations, the SE gate, residual adds, pooling) does
not, as in the paper and in torch's FLOP counter.

Two counts that tests keep equal for every family:

* :func:`analytic_cost` walks the base network's definition through its family's
  :meth:`~tinyray.families.base.Network.count` and builds no torch model; the searcher calls it thousands of
  times (cached, a few microseconds a call).
* :func:`measured_cost` builds the timm network and counts it with ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from tinyray.errors import UserError
from tinyray.space import SearchSpace

if TYPE_CHECKING:
    from tinyray.families.base import Network


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


class Tally:
    """FLOPs and parameters of a network, added up layer by layer as torch's FLOP counter counts them.

    Convolutions and linear layers count ``output pixels x output channels x input channels per group x kernel
    area`` multiply-accumulates (their biases add parameters, not FLOPs); BatchNorm adds its two affine vectors
    to the parameters and nothing to the FLOPs. A family's :meth:`~tinyray.families.base.Network.count` walks its
    network through these calls.

    Attributes:
        flops: multiply-accumulates so far.
        params: trainable parameters so far.
    """

    def __init__(self) -> None:
        self.flops = 0
        self.params = 0

    def conv(self, size: int, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
             padding: int | None = None, bias: bool = False) -> int:
        """A ``kernel`` x ``kernel`` convolution on a ``size`` x ``size`` map; returns the output side.

        ``padding`` defaults to timm's symmetric padding, ``((stride - 1) + (kernel - 1)) // 2``, which is also
        what torchvision-style ``kernel // 2`` padding comes to for the odd kernels used here.
        """
        if padding is None:
            padding = ((stride - 1) + (kernel - 1)) // 2
        out = (size + 2 * padding - kernel) // stride + 1
        per_pixel = c_out * (c_in // groups) * kernel * kernel
        self.flops += out * out * per_pixel
        self.params += per_pixel + (c_out if bias else 0)
        return out

    def pool(self, size: int, kernel: int, stride: int) -> int:
        """A pooling layer (no FLOPs, no parameters); returns the output side."""
        return (size + 2 * (((stride - 1) + (kernel - 1)) // 2) - kernel) // stride + 1

    def norm(self, channels: int) -> None:
        """A BatchNorm over ``channels``."""
        self.params += 2 * channels

    def linear(self, c_in: int, c_out: int, bias: bool = True) -> None:
        """A linear layer, or a 1x1 convolution on the globally pooled 1x1 map."""
        self.flops += c_in * c_out
        self.params += c_in * c_out + (c_out if bias else 0)

    def squeeze_excite(self, channels: int, reduced: int) -> None:
        """Squeeze-excite: two 1x1 convolutions with bias on the pooled 1x1 map (the gate is element-wise)."""
        self.linear(channels, reduced)
        self.linear(reduced, channels)


def analytic_cost(space: SearchSpace, r: float, d: float, w: float, num_classes: int = 1000) -> Cost:
    """Count FLOPs and parameters of the cube point (r, d, w) from the base network's definition alone.

    Args:
        space: the search space.
        r, d, w: resolution, depth and width multipliers.
        num_classes: classifier outputs (1000 for the paper's ImageNet numbers).

    Returns:
        :class:`Cost` with FLOPs as multiply-accumulates of one image at ``floor(base_resolution r)`` pixels.
    """
    resolution = space.resolution(r)
    flops, params = _count(space.network, resolution, float(d), float(w), num_classes)
    return Cost(resolution=resolution, flops=flops, params=params)


@lru_cache(maxsize=65536)
def _count(network: "Network", resolution: int, d: float, w: float, num_classes: int) -> tuple[int, int]:
    tally = Tally()
    network.count(tally, resolution, d, w, num_classes)
    return tally.flops, tally.params


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
