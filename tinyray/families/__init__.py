"""Network families: the timm networks a search space can shrink. One module a family, one registry.

A space file names its family (``family: resnet``; ``efficientnet`` when it names none) and holds the family's
description of the base network; :func:`tinyray.space.parse_space` reads it into that family's
:class:`~tinyray.families.base.Network`, which builds the network of any (d, w) with timm, counts its FLOPs and
parameters analytically, and says when two points build the same network. Nothing outside the family modules
knows which family a space is: the searchers, scheduler, formula, tracking and report see only FLOPs, with
c = FLOPs / FLOPs(base at r = d = w = 1) for every base.

:data:`FAMILIES` is the one registry. **Adding a family** is one module here with a
:class:`~tinyray.families.base.Network` subclass, one line in :data:`FAMILIES`, and a space file in
``tinyray/search_spaces/`` (see ``resnet.py``, the smallest). Importing this package imports neither torch nor timm
nor any family module: a family's module is imported when a space of that family is read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinyray.errors import UserError

if TYPE_CHECKING:
    from tinyray.families.base import Network


@dataclass(frozen=True)
class FamilyEntry:
    """A registered family: where its :class:`Network` subclass is (``module:Class``) and one line on what it builds."""

    path: str
    help: str

    def load(self) -> type["Network"]:
        module, _, name = self.path.partition(":")
        return getattr(importlib.import_module(module), name)


#: name (the ``family`` key of a space file) -> family; the first is the default
FAMILIES: dict[str, FamilyEntry] = {
    "efficientnet": FamilyEntry("tinyray.families.efficientnet:EfficientNetNetwork",
                                "timm EfficientNet block strings (EfficientNet-B0 and the TinyNets)"),
    "mobilenetv3": FamilyEntry("tinyray.families.mobilenetv3:MobileNetV3Network",
                               "timm MobileNetV3 block strings (mobilenetv3_large_100)"),
    "resnet": FamilyEntry("tinyray.families.resnet:ResNetNetwork", "timm ResNet stages (resnet50)"),
    "ghostnet": FamilyEntry("tinyray.families.ghostnet:GhostNetNetwork", "timm GhostNet bottlenecks (ghostnet_100)"),
}
DEFAULT_FAMILY = next(iter(FAMILIES))


def network_class(family: str, where: str = "<space>") -> type["Network"]:
    """The :class:`Network` subclass of a registered family.

    Raises:
        UserError: for a family that is not registered, naming the space file.
    """
    entry = FAMILIES.get(family) if isinstance(family, str) else None
    if entry is None:
        raise UserError(f"search space {where}: unknown family {str(family)[:40]!r}; use one of {list(FAMILIES)}")
    return entry.load()


__all__ = ["DEFAULT_FAMILY", "FAMILIES", "FamilyEntry", "network_class"]
