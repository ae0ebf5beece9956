"""What a network family provides: the contract between a base network and the rest of tinyray.

A family is a frozen dataclass, subclass of :class:`Network`, whose fields are the family's keys of a space file
(the base network at r = d = w = 1). From it the cube builds the timm network of any (d, w)
(:meth:`Network.build`), the cost counts FLOPs and parameters without building anything (:meth:`Network.count`,
which ``tests/test_families.py`` keeps equal to torch's count of the built network), and the searchers tell two
points that build the same network apart from two that do not (:meth:`Network.key`). Resolution is not the
family's: every network here pools globally, so r only sets the input side (:meth:`tinyray.space.SearchSpace.resolution`).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch.nn as nn

    from tinyray.cost import Tally


class Network(abc.ABC):
    """The base network of a search space, as its family builds, counts and compares the points of the cube.

    Class attributes:
        family: the registry key (``family:`` in a space file).
        FIELDS: the family's keys of a space file and their YAML types (``int``, ``str``, ``list``, ``float``);
            :func:`tinyray.space.parse_space` checks that they are present and of that type before :meth:`parse`.
        OPTIONAL: those of :attr:`FIELDS` that may be left out, with their defaults.
        first_conv, classifier: module names of the first convolution and the classifier (timm's pretrained
            config records them).
        COMPOUND: the family's compound scaling coefficients, ``{"d": alpha, "w": beta, "r": gamma}`` (depth
            ``alpha^phi``, width ``beta^phi``, resolution ``gamma^phi``; :func:`tinyray.scaling.solve_phi`), or None
            if the family has no compound scaling rule.
    """

    family: ClassVar[str]
    FIELDS: ClassVar[dict[str, type]]
    OPTIONAL: ClassVar[dict[str, Any]] = {}
    first_conv: ClassVar[str] = "conv_stem"
    classifier: ClassVar[str] = "classifier"
    COMPOUND: ClassVar[dict[str, float] | None] = None

    @classmethod
    @abc.abstractmethod
    def parse(cls, values: dict[str, Any], where: str) -> "Network":
        """Validate the family's keys of a space file (present and of their :attr:`FIELDS` type) into a network.

        Raises:
            UserError: one line naming ``where`` and the key for anything out of range.
        """

    def to_dict(self) -> dict[str, Any]:
        """The family's keys as :meth:`parse` reads them (tuples written as lists), for JSON state and exports."""
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]

    @abc.abstractmethod
    def stage_depths(self, d: float) -> tuple[int, ...]:
        """Blocks in each stage at depth multiplier ``d``."""

    @abc.abstractmethod
    def key(self, d: float, w: float) -> tuple:
        """What makes the networks of two (d, w) the same: equal keys build equal networks (at equal resolution)."""

    @abc.abstractmethod
    def build(self, d: float, w: float, num_classes: int, *, drop_rate: float = 0.0,
              drop_path_rate: float = 0.0) -> "nn.Module":
        """The untrained timm network of (d, w), with ``num_classes`` outputs (the pretrained config is set by
        :func:`tinyray.cube.build_model`)."""

    @abc.abstractmethod
    def count(self, tally: "Tally", resolution: int, d: float, w: float, num_classes: int) -> None:
        """Add every convolution, BatchNorm and linear layer of the network of (d, w), run on a
        ``resolution`` x ``resolution`` image, to ``tally``, in the order the network runs them."""

    @abc.abstractmethod
    def residual_norms(self, model: "nn.Module") -> list["nn.Module"]:
        """The last BatchNorm(s) of every residual branch of ``model`` (a network :meth:`build` made): zeroing
        their scale makes every such block start as its shortcut (``Recipe.zero_init_last``)."""

    def landmarks(self) -> dict[str, tuple[float, float, float]]:
        """Named (r, d, w) points of this base's cube published elsewhere (the paper's TinyNets), for plots."""
        return {}


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def scaled_depth(blocks: int, d: float) -> int:
    """Blocks of a stage of ``blocks`` at depth ``d``: ``max(1, round(blocks * d))``, the rule of timm's
    ``decode_arch_def(..., depth_trunc='round')`` (and of the paper's TinyNet code) for a stage of one kind of block."""
    return max(1, round(blocks * d))
