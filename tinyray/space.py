"""Search spaces: the base network and the bounds of the (r, d, w) cube, read from YAML into typed objects.

A space file (the shipped ones are package data in ``tinyray/search_spaces/``) names the base network's family
(``family: resnet``; ``efficientnet`` if it names none), holds the family's description of the base network
(for EfficientNet, timm's block strings such as ``ir_r2_k3_s2_e6_c24_se0.25``: an inverted-residual stage of 2
blocks, 3x3 depthwise kernel, stride 2, expansion 6, 24 output channels, squeeze-excite ratio 0.25), its base
resolution, and the bounds of the resolution multiplier ``r``, depth multiplier ``d`` and width multiplier ``w``.
The family (:mod:`tinyray.families`) reads its keys into one typed object that feeds both the model builder
(:mod:`tinyray.cube`) and the analytic cost (:mod:`tinyray.cost`), so the two cannot drift.

Everything a user can get wrong in the file is reported as one :class:`~tinyray.errors.UserError` line that
names the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyray.errors import UserError
from tinyray.families import DEFAULT_FAMILY, FAMILIES, network_class

if TYPE_CHECKING:
    from tinyray.families.base import Network

#: Folder of the search spaces shipped with the package (package data, so that non-editable installs have them).
SPACES_DIR = Path(__file__).resolve().parent / "search_spaces"
#: Folder, relative to the working directory, where a user's own spaces are found by name before the shipped ones.
USER_SPACES_DIR = "search_spaces"
DEFAULT_SPACE = "efficientnet_b0"

#: Bounds of what a space file may hold: a larger file, number or network is a mistake (or an attack), and
#: would make tinyray allocate or count for ever instead of answering.
MAX_FILE_BYTES = 64 * 1024
MAX_ALIASES = 0  # YAML anchors/aliases (&x / *x): a space file has no need of them, and they make "alias bombs"
MAX_RESOLUTION = 4096
#: Stages of a base network, and blocks (or block strings) in one stage.
MAX_STAGES = 32
MAX_MULTIPLIER = 8.0


@dataclass(frozen=True)
class Bounds:
    """Closed interval ``[low, high]`` of one multiplier."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low - 1e-9 <= value <= self.high + 1e-9


@dataclass(frozen=True)
class SearchSpace:
    """A base network and the cube of (r, d, w) multipliers around it.

    Attributes:
        name: short name of the space (``efficientnet_b0``).
        network: the base network (d = w = 1) as its family reads it: builds, counts and compares the networks of
            the cube (:class:`~tinyray.families.base.Network`).
        base_resolution: input side in pixels at r = 1 (224 for EfficientNet-B0).
        r, d, w: bounds of the resolution, depth and width multipliers.
        reference: timm's name of the network the space builds at r = d = w = 1 (``efficientnet_b0``), if any.
        source: the file the space was read from (for error messages and tracking).
    """

    name: str
    network: "Network"
    base_resolution: int
    r: Bounds
    d: Bounds
    w: Bounds
    reference: str = ""
    source: str = ""

    @property
    def family(self) -> str:
        """The base network's family (a key of :data:`tinyray.families.FAMILIES`)."""
        return self.network.family

    def bounds(self) -> dict[str, Bounds]:
        return {"r": self.r, "d": self.d, "w": self.w}

    def to_dict(self) -> dict[str, Any]:
        """The space as the YAML mapping :func:`parse_space` reads (so a copy can travel inside JSON state)."""
        return {
            "name": self.name, "family": self.family, "reference": self.reference,
            "base_resolution": self.base_resolution, **self.network.to_dict(),
            "bounds": {key: [bound.low, bound.high] for key, bound in self.bounds().items()},
        }

    def resolution(self, r: float) -> int:
        """Deployment input side in pixels: ``floor(base_resolution * r)``.

        This is how timm registers TinyNet-A..E (``int(224 * 0.86) = 192`` ... ``int(224 * 0.475) = 106``);
        the small epsilon keeps decimal multipliers such as 0.875 from flooring one pixel low.
        """
        return max(1, int(math.floor(self.base_resolution * r + 1e-6)))

    def check_point(self, r: float, d: float, w: float) -> None:
        """Raise :class:`UserError` if (r, d, w) lies outside the cube."""
        for key, value in (("r", r), ("d", d), ("w", w)):
            bound = self.bounds()[key]
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UserError(f"--{key} {value!r} is not a positive number: give e.g. --{key} 0.5")
            if not bound.contains(value):
                raise UserError(
                    f"--{key} {value:g} is outside the space {self.name!r} ({key} in [{bound.low:g}, {bound.high:g}]):"
                    f" choose a value inside, or widen bounds.{key} in {self.source or 'the space file'}"
                )


#: Keys of every space file, whatever its family: name -> YAML type.
_FIELDS: dict[str, type] = {"name": str, "family": str, "description": str, "reference": str, "base_resolution": int,
                             "bounds": dict}
#: Keys that may be left out, with their defaults.
_OPTIONAL = {"family": DEFAULT_FAMILY, "description": "", "reference": ""}


def resolve_space_path(space: str | Path | None) -> Path:
    """Find a space file: a path to any YAML file, or a NAME: ``./search_spaces/NAME.yaml``, else a shipped space.

    Raises:
        UserError: if nothing matches, listing the shipped names.
    """
    if space is None or str(space) == "":
        space = DEFAULT_SPACE
    text = str(space)
    path = Path(text).expanduser()
    looks_like_path = path.suffix in (".yaml", ".yml") or "/" in text or text.startswith(".")
    if looks_like_path:
        if path.is_file():
            return path
        raise UserError(f"search space file {text} does not exist: give a YAML file, or a name from {available_spaces()}")
    for folder in (Path.cwd() / USER_SPACES_DIR, SPACES_DIR):
        for suffix in (".yaml", ".yml"):
            candidate = folder / f"{text}{suffix}"
            if candidate.is_file():
                return candidate
    raise UserError(f"unknown search space {text!r}: use one of {available_spaces()} or a path to a YAML file")


def space_help() -> str:
    """The ``--space`` help text, naming the shipped spaces and their families."""
    return (f"search space: a shipped one ({', '.join(available_spaces())}) or a file in ./search_spaces/, by name "
            f"(default {DEFAULT_SPACE}), or a YAML path; its family is one of {', '.join(FAMILIES)}")


def available_spaces() -> list[str]:
    """Names of the spaces shipped with the package (``tinyray/search_spaces/``)."""
    if not SPACES_DIR.is_dir():
        return []
    return sorted(p.stem for p in SPACES_DIR.glob("*.y*ml"))


def load_space(space: str | Path | None = None) -> SearchSpace:
    """Read and validate a search space.

    Args:
        space: a shipped space's name (default ``efficientnet_b0``), the name of a file in ``./search_spaces/``,
            or a path to a YAML file.

    Raises:
        UserError: one line naming the file and the key for a missing file, malformed YAML, unknown keys,
            missing fields, wrong types, bad block strings or reversed bounds.
    """
    import yaml  # only needed here, and cheap

    path = resolve_space_path(space)
    where = str(path)
    try:
        with open(path, "rb") as stream:  # resolve_space_path accepted a regular file: no FIFO can block here
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read search space {where}: {exc.strerror}; check the path and its permissions")
    if len(data) > MAX_FILE_BYTES:
        raise UserError(f"search space {where} is larger than {MAX_FILE_BYTES // 1024} KB: a space file is a few "
                        f"dozen lines; give the right file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"search space {where} is not UTF-8 text (byte {exc.start}): give a YAML text file")
    if "\0" in text:
        raise UserError(f"search space {where} is a binary file, not YAML text: give a YAML text file")
    try:
        aliases = sum(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader))
        if aliases > MAX_ALIASES:
            raise UserError(f"search space {where} uses YAML aliases (*name): write the values out instead")
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"search space {where} is not valid YAML{at}: {getattr(exc, 'problem', exc)}; fix the syntax")
    except RecursionError:
        raise UserError(f"search space {where} is nested too deeply: a space file is a flat mapping") from None
    return parse_space(raw, where)


def parse_space(raw: Any, where: str = "<space>") -> SearchSpace:
    """Validate a parsed YAML mapping into a :class:`SearchSpace` (see :func:`load_space`)."""
    if not isinstance(raw, dict):
        raise UserError(f"search space {where} must be a YAML mapping with keys {sorted(_FIELDS)} and its family's")
    family = raw.get("family", DEFAULT_FAMILY)
    if not isinstance(family, str):
        raise UserError(f"search space {where}: family must be a string, got {type(family).__name__} {str(family)[:40]}")
    network_cls = network_class(family, where)
    fields = {**_FIELDS, **network_cls.FIELDS}
    optional = {**_OPTIONAL, **network_cls.OPTIONAL}
    unknown = sorted(set(raw) - set(fields) - set(optional), key=str)
    if unknown:
        raise UserError(f"search space {where}: unknown key {unknown[0]!r} for family {family!r}; allowed keys are "
                        f"{sorted(set(fields) | set(optional))}")
    values = {**optional, **raw}
    for key, kind in fields.items():
        if key not in values:
            raise UserError(f"search space {where}: missing key {key!r}; see "
                            f"tinyray/search_spaces/{DEFAULT_SPACE}.yaml for an example")
        check_type(values, key, kind, where)
    for key in ("name", "reference"):
        if len(values[key]) > 64 or any(ord(ch) < 32 for ch in values[key]):
            raise UserError(f"search space {where}: {key} must be one line of up to 64 characters, e.g. efficientnet_b0")
    check_int(values, "base_resolution", MAX_RESOLUTION, where)
    bounds = _parse_bounds(values["bounds"], where)
    network = network_cls.parse({key: values[key] for key in network_cls.FIELDS}, where)
    return SearchSpace(
        name=values["name"],
        network=network,
        base_resolution=values["base_resolution"],
        reference=values["reference"],
        source=where,
        **bounds,
    )


def check_type(values: dict[str, Any], key: str, kind: type, where: str) -> None:
    """Raise :class:`UserError` unless ``values[key]`` is of YAML type ``kind`` (a bool is not a number)."""
    value = values[key]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise UserError(f"search space {where}: {key} must be {_type_name(kind)}, got {type(value).__name__} "
                        f"{str(value)[:40]!r}")


def check_int(values: dict[str, Any], key: str, high: int, where: str) -> None:
    """Raise :class:`UserError` unless ``values[key]`` is a positive integer up to ``high``."""
    if not 0 < values[key] <= high:
        raise UserError(f"search space {where}: {key} must be a positive integer up to {high}, "
                        f"got {str(values[key])[:40]}")


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a mapping"}.get(kind, str(kind))


def _parse_bounds(raw: dict, where: str) -> dict[str, Bounds]:
    unknown = sorted(set(raw) - {"r", "d", "w"})
    if unknown:
        raise UserError(f"search space {where}: unknown key bounds.{unknown[0]}; bounds has keys r, d and w")
    out = {}
    for key in ("r", "d", "w"):
        if key not in raw:
            raise UserError(f"search space {where}: missing key bounds.{key}; give it as [low, high], e.g. [0.25, 1.0]")
        pair = raw[key]
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
        ):
            raise UserError(f"search space {where}: bounds.{key} must be [low, high] numbers, got {pair!r}")
        low, high = float(pair[0]), float(pair[1])
        if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 or high > MAX_MULTIPLIER:
            raise UserError(f"search space {where}: bounds.{key} must be positive and at most {MAX_MULTIPLIER:g}, "
                            f"got {str(pair)[:80]}")
        if low > high:
            raise UserError(f"search space {where}: bounds.{key} is reversed ({pair!r}); write it as [{high:g}, {low:g}]")
        out[key] = Bounds(low, high)
    return out
