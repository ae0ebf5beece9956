"""The Ray Tune trainable: one (r, d, w) trial, wrapping the Ray-free trainer of :mod:`tinyray.train`.

A trial reports after every epoch (validation top-1, losses, throughput) together with what the driver needs
to record it: FLOPs, parameters, resolutions and the Ray node it ran on. The search space and the dataset are
loaded once per worker process and kept, so a reused actor starts its next trial without reloading either.

Every report carries a Tune checkpoint of the whole training state (``state.pt``: tensors and plain values,
read back with ``torch.load(weights_only=True)``), so a retried trial or a resumed search continues from the
last finished epoch instead of starting over.

Fault injection (for tests and chaos drills, like Ray's own ``RAY_testing_*`` switches): the environment
variable ``TINYRAY_FAULTS`` may hold a JSON list of faults, each ``{"kind": "raise" | "nan" | "oom" | "enospc", "epoch": k,
"param": "r" | "d" | "w", "above": x, "below": y, "once": bool}``: a trial whose ``param`` lies in the range fails
at the end of epoch ``k`` with a RuntimeError, a :class:`~tinyray.train.TrainingDiverged`, an out-of-memory
error or a full disk (``OSError`` ENOSPC); with ``once`` only its first attempt fails (attempts are remembered in ``$TINYRAY_FAULTS_DIR``, default the
temporary folder). Unset, nothing is injected.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tinyray.cost import analytic_cost
from tinyray.errors import UserError
from tinyray.space import SearchSpace, load_space


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a search shares (sent once to the workers through Ray's object store).

    Attributes:
        space: path of the search-space file.
        data: the dataset specification (``tinyray.data.DataSpec``).
        max_epochs: full fidelity, in epochs.
        recipe: training recipe name.
        seed: seed of every trial's initialisation and data order.
        threads: torch CPU threads per trial (the trial's CPUs).
    """

    space: str
    data: Any
    max_epochs: int
    recipe: str
    seed: int
    threads: int


@lru_cache(maxsize=4)
def _space(path: str) -> SearchSpace:
    return load_space(path)


@lru_cache(maxsize=2)
def _data(spec: Any) -> Any:
    from tinyray.data import FOLDER, load_data

    # Built-in data: each node generates it once into its own cache. A folder must exist on every node.
    if spec.kind == FOLDER and not Path(spec.path).is_dir():
        import socket

        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        raise UserError(
            f"data folder {spec.path} is missing on Ray node {node} (host {socket.gethostname()}): put the data on "
            f"shared storage mounted at that path on every node (NFS, EFS), or copy it to every node"
        )
    return load_data(spec)


STATE_FILE = "state.pt"


def _load_state(checkpoint: Any) -> dict[str, Any] | None:
    """The training state of a Tune checkpoint (tensors and plain values only: ``weights_only=True``)."""
    import torch

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


#: What a fault of ``TINYRAY_FAULTS`` may say (see the module docstring).
FAULT_KINDS = ("raise", "nan", "oom", "enospc")
FAULT_KEYS = {"kind": str, "epoch": int, "param": str, "above": (int, float), "below": (int, float), "once": bool}


def parse_faults(raw: str | None) -> list[dict[str, Any]]:
    """The faults of a ``TINYRAY_FAULTS`` value (``[]`` if unset).

    Raises:
        UserError: the value is not a JSON list of faults as the module docstring describes.
    """
    if not raw or not raw.strip():
        return []
    fix = ('set TINYRAY_FAULTS to a JSON list like \'[{"kind": "raise", "epoch": 1, "param": "w", "below": 0.5}]\' '
           'or unset it')
    try:
        faults = json.loads(raw)
    except ValueError as exc:
        raise UserError(f"TINYRAY_FAULTS is not JSON ({exc}): {fix}") from None
    if not isinstance(faults, list) or not all(isinstance(fault, dict) for fault in faults):
        raise UserError(f"TINYRAY_FAULTS must be a list of objects: {fix}")
    for fault in faults:
        unknown = sorted(set(fault) - set(FAULT_KEYS))
        if unknown:
            raise UserError(f"TINYRAY_FAULTS has an unknown key {unknown[0]!r} (known: {', '.join(FAULT_KEYS)}): {fix}")
        if fault.get("kind") not in FAULT_KINDS:
            raise UserError(f"TINYRAY_FAULTS kind {fault.get('kind')!r} is not one of {', '.join(FAULT_KINDS)}: {fix}")
        for key, kind in FAULT_KEYS.items():
            value = fault.get(key)
            if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
                raise UserError(f"TINYRAY_FAULTS {key} {value!r} has the wrong type: {fix}")
        if fault.get("param", "r") not in ("r", "d", "w"):
            raise UserError(f"TINYRAY_FAULTS param {fault['param']!r} is not r, d or w: {fix}")
    return faults


def _faults(config: dict[str, Any], epoch: int) -> None:
    """Raise the fault ``TINYRAY_FAULTS`` asks for at this trial and epoch, if any (see the module docstring)."""
    faults = parse_faults(os.environ.get("TINYRAY_FAULTS"))
    if not faults:
        return
    from ray import tune

    from tinyray.train import TrainingDiverged

    for number, fault in enumerate(faults):
        value = float(config[fault.get("param", "r")])
        if fault.get("epoch", 1) != epoch or not fault.get("above", -1e9) < value < fault.get("below", 1e9):
            continue
        if fault.get("once"):
            folder = Path(os.environ.get("TINYRAY_FAULTS_DIR") or tempfile.gettempdir()) / "tinyray-faults"
            folder.mkdir(parents=True, exist_ok=True)
            marker = folder / f"{tune.get_context().get_trial_id()}-{number}"
            if marker.exists():
                continue
            marker.write_text("injected")
        kind = fault["kind"]
        if kind == "nan":
            raise TrainingDiverged(f"training loss became nan at epoch {epoch} (injected by TINYRAY_FAULTS)")
        if kind == "oom":
            raise MemoryError(f"out of memory at epoch {epoch} (injected by TINYRAY_FAULTS)")
        if kind == "enospc":
            import errno

            raise OSError(errno.ENOSPC, f"No space left on device at epoch {epoch} (injected by TINYRAY_FAULTS)")
        raise RuntimeError(f"trial crashed at epoch {epoch} (injected by TINYRAY_FAULTS)")


def run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """Train the candidate ``config = {"r", "d", "w"}`` and report every epoch to Tune, with a checkpoint."""
    import ray
    import torch
    from ray import tune

    from tinyray.train import train_candidate

    space = _space(settings.space)
    data = _data(settings.data)
    r, d, w = float(config["r"]), float(config["d"]), float(config["w"])
    cost = analytic_cost(space, r, d, w, data.num_classes)
    node_id = ray.get_runtime_context().get_node_id()
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    fixed = {
        "r": r, "d": d, "w": w, "flops": cost.flops, "params": cost.params, "resolution": cost.resolution,
        "train_resolution": data.train_resolution(space, r), "node_id": node_id,
    }

    def report(epoch: Any, checkpoint: Any) -> None:
        _faults(config, epoch.epoch)
        metrics = {
            "top1": epoch.top1, "val_loss": epoch.val_loss, "train_loss": epoch.train_loss,
            "images_per_second": epoch.images_per_second, "epoch_seconds": epoch.seconds,
            "epoch": epoch.epoch, **fixed,
        }
        with tempfile.TemporaryDirectory() as folder:
            torch.save(checkpoint(), Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    state = _load_state(tune.get_checkpoint())
    if state is not None and state["epoch"] >= settings.max_epochs:
        return  # finished just before an interruption: nothing left to train
    train_candidate(
        space, r, d, w, data,
        epochs=settings.max_epochs, recipe=settings.recipe, seed=settings.seed,
        threads=settings.threads, device=device, callback=report, state=state,
    )
