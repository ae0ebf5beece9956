"""Search spaces: the base network and the bounds of the (r, d, w) cube, read from YAML into typed objects.

A space file (the shipped ones are package data in ``tinyray/search_spaces/``) holds the base network in timm's
block-string notation (``ir_r2_k3_s2_e6_c24_se0.25``: an inverted-residual stage of 2 blocks, 3x3 depthwise
kernel, stride 2, expansion 6, 24 output channels, squeeze-excite ratio 0.25), its base resolution, and the bounds of the
resolution multiplier ``r``, depth multiplier ``d`` and width multiplier ``w``. The same block strings feed the
model builder (:mod:`tinyray.cube`) and the analytic cost (:mod:`tinyray.cost`), so the two cannot drift.

Everything a user can get wrong in the file is reported as one :class:`~tinyray.errors.UserError` line that
names the file and the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyray.errors import UserError

#: Folder of the search spaces shipped with the package (package data, so that non-editable installs have them).
SPACES_DIR = Path(__file__).resolve().parent / "search_spaces"
#: Folder, relative to the working directory, where a user's own spaces are found by name before the shipped ones.
USER_SPACES_DIR = "search_spaces"
DEFAULT_SPACE = "efficientnet_b0"

# Block types whose cost tinyray counts analytically: timm's depthwise-separable and inverted-residual blocks,
# the two EfficientNet-B0 and the TinyNets are made of.
_BLOCK_TYPES = ("ds", "ir")
_BLOCK_RE = re.compile(r"^(ds|ir)(_r\d+|_k\d+|_s\d+|_e\d+(\.\d+)?|_c\d+|_se\d+(\.\d+)?|_noskip)+$")
_ACTIVATIONS = ("swish", "silu", "relu", "relu6", "hard_swish")
#: Bounds of what a space file may hold: a larger file, number or network is a mistake (or an attack), and
#: would make tinyray allocate or count for ever instead of answering.
MAX_FILE_BYTES = 64 * 1024
MAX_ALIASES = 0  # YAML anchors/aliases (&x / *x): a space file has no need of them, and they make "alias bombs"
#: Block-string options: (low, high) of each; ``k`` must also be odd (timm pads ``k // 2``).
_BLOCK_LIMITS = {"r": (1, 64), "k": (1, 15), "s": (1, 4), "e": (0.0, 64.0), "c": (1, 8192), "se": (0.0, 1.0)}
_INT_LIMITS = {"base_resolution": 4096, "stem_channels": 8192, "head_channels": 16384, "channel_divisor": 256}
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
        blocks: timm block strings, one tuple per stage, of the base network (d = w = 1).
        base_resolution: input side in pixels at r = 1 (224 for EfficientNet-B0).
        stem_channels: stem output channels, kept fixed under width scaling as TinyNet does.
        head_channels: head width at w = 1; the built head is ``max(head, round_channels(head * w))``.
        activation: timm activation name used in every block.
        channel_divisor: channels are rounded to multiples of this.
        r, d, w: bounds of the resolution, depth and width multipliers.
        source: the file the space was read from (for error messages and tracking).
    """

    name: str
    blocks: tuple[tuple[str, ...], ...]
    base_resolution: int
    stem_channels: int
    head_channels: int
    activation: str
    channel_divisor: int
    r: Bounds
    d: Bounds
    w: Bounds
    source: str = ""

    def bounds(self) -> dict[str, Bounds]:
        return {"r": self.r, "d": self.d, "w": self.w}

    def to_dict(self) -> dict[str, Any]:
        """The space as the YAML mapping :func:`parse_space` reads (so a copy can travel inside JSON state)."""
        return {
            "name": self.name, "blocks": [list(stage) for stage in self.blocks], "base_resolution": self.base_resolution,
            "stem_channels": self.stem_channels, "head_channels": self.head_channels, "activation": self.activation,
            "channel_divisor": self.channel_divisor,
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


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "blocks": list,
    "base_resolution": int,
    "stem_channels": int,
    "head_channels": int,
    "activation": str,
    "channel_divisor": int,
    "bounds": dict,
}
_OPTIONAL = {"activation": "swish", "channel_divisor": 8, "description": ""}


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
        raise UserError(f"search space {where} must be a YAML mapping with keys {sorted(_FIELDS)}")
    unknown = sorted(set(raw) - set(_FIELDS) - set(_OPTIONAL))
    if unknown:
        raise UserError(f"search space {where}: unknown key {unknown[0]!r}; allowed keys are {sorted(set(_FIELDS) | set(_OPTIONAL))}")
    values = {**_OPTIONAL, **raw}
    for key, kind in _FIELDS.items():
        if key not in values:
            raise UserError(f"search space {where}: missing key {key!r}; see tinyray/search_spaces/{DEFAULT_SPACE}.yaml for an example")
        value = values[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise UserError(
                f"search space {where}: {key} must be {_type_name(kind)}, got {type(value).__name__} {value!r}"
            )
    for key in ("base_resolution", "stem_channels", "head_channels", "channel_divisor"):
        if not 0 < values[key] <= _INT_LIMITS[key]:
            raise UserError(f"search space {where}: {key} must be a positive integer up to {_INT_LIMITS[key]}, "
                            f"got {str(values[key])[:40]}")
    if len(values["name"]) > 64 or any(ord(ch) < 32 for ch in values["name"]):
        raise UserError(f"search space {where}: name must be one line of up to 64 characters, e.g. efficientnet_b0")
    if values["activation"] not in _ACTIVATIONS:
        raise UserError(f"search space {where}: activation {values['activation']!r} is not one of {list(_ACTIVATIONS)}")
    blocks = _parse_blocks(values["blocks"], where)
    bounds = _parse_bounds(values["bounds"], where)
    return SearchSpace(
        name=values["name"],
        blocks=blocks,
        base_resolution=values["base_resolution"],
        stem_channels=values["stem_channels"],
        head_channels=values["head_channels"],
        activation=values["activation"],
        channel_divisor=values["channel_divisor"],
        source=where,
        **bounds,
    )


def _type_name(kind: type | tuple[type, ...]) -> str:
    return {str: "a string", int: "an integer", list: "a list", dict: "a mapping"}.get(kind, str(kind))


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
            if len(block) > 100 or not _BLOCK_RE.match(block) or "_c" not in block:
                raise UserError(
                    f"search space {where}: blocks[{index}] {block[:100]!r} is not a supported timm block string;"
                    f" use types {list(_BLOCK_TYPES)} with _r _k _s _e _c _se options, e.g. ir_r2_k3_s2_e6_c24_se0.25"
                )
            _check_block_options(block, f"search space {where}: blocks[{index}] {block!r}")
        parsed.append(tuple(stage))
    return tuple(parsed)


def _check_block_options(block: str, what: str) -> None:
    """Every option of a block string in its range (``_r0``, ``_k0``, ``_s0``, ``_e0`` or huge values break the
    network or the FLOPs count far from the file)."""
    for option in block.split("_")[1:]:
        key = re.match(r"[a-z]+", option).group(0)
        if key not in _BLOCK_LIMITS:
            continue  # noskip
        value = float(option[len(key):])
        low, high = _BLOCK_LIMITS[key]
        positive = key in ("e",)  # an expansion of 0 leaves no channels; se 0 means "no squeeze-excite"
        if not (low <= value <= high) or (positive and value <= 0):
            kind = "above 0 and" if positive else "from " + f"{low:g} to"
            raise UserError(f"{what}: _{key}{option[len(key):]} is out of range; _{key} must be {kind} {high:g}")
        if key == "k" and value % 2 == 0:
            raise UserError(f"{what}: _k{value:g} must be an odd kernel size (3, 5, 7)")


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
