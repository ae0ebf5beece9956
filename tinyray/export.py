"""Export a network of the cube as timm does on the Hub: ``config.json`` plus ``model.safetensors``.

``config.json`` holds what rebuilds the architecture (the search space inline, r, d, w, number of classes) and
timm's pretrained-config fields (``architecture``, ``input_size``, ``mean``, ``std``, ``crop_pct`` ...); the
weights are a safetensors file. :func:`load_exported` rebuilds the timm network (its family's) from the config and loads
the weights; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyray.errors import UserError
from tinyray.files import EXPORT_VERSION  # defined there with the other format versions; still importable here
from tinyray.space import SearchSpace

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def check_out(out: Path) -> Path:
    """Refuse an ``--out`` that exists and is not an empty folder (nothing may be overwritten)."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder: choose a new --out")
    return out


def export_network(space: SearchSpace, r: float, d: float, w: float, out: Path, *, num_classes: int,
                   state_dict: dict[str, "torch.Tensor"] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the network (r, d, w) of ``space`` into the folder ``out``.

    Args:
        space, r, d, w: the cube point.
        out: a new or empty folder.
        num_classes: classifier outputs.
        state_dict: trained weights; default the untrained initialisation (seeded by the caller).
        extra: more JSON-able facts for ``config.json`` (e.g. the formula's answer, training history).

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    from tinyray.cost import analytic_cost
    from tinyray.cube import build_model

    out = check_out(out)
    model = build_model(space, r, d, w, num_classes)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    cost = analytic_cost(space, r, d, w, num_classes)
    config = {
        "tinyray_export": EXPORT_VERSION,
        **{key: list(value) if isinstance(value, tuple) else value
           for key, value in model.pretrained_cfg.items() if key != "tinyray"},
        "r": r, "d": d, "w": w, "resolution": cost.resolution, "flops": cost.flops, "params": cost.params,
        "space": space.to_dict(), "trained": state_dict is not None, **(extra or {}),
    }
    tmp = out.with_name(out.name + ".partial")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}; choose a writable --out") from None
    return out


def load_exported(folder: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild an exported network: ``(model, config)``; the model is in eval mode."""
    from safetensors.torch import load_file

    from tinyray.cube import build_model
    from tinyray.space import parse_space

    folder = Path(folder).expanduser()
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder} is not a tinyray export ({exc}): give a folder written by 'tinyray export'") from None
    space = parse_space(config["space"], where=str(folder / CONFIG_FILE))
    model = build_model(space, config["r"], config["d"], config["w"], config["num_classes"])
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    model.eval()
    return model, config
