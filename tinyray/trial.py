"""The Ray Tune trainable: one (r, d, w) trial, wrapping the Ray-free trainer of :mod:`tinyray.train`.

A trial reports after every epoch (validation top-1, losses, throughput) together with what the driver needs
to record it: FLOPs, parameters, resolutions and the Ray node it ran on. The search space and the dataset are
loaded once per worker process and kept, so a reused actor starts its next trial without reloading either.
"""

from __future__ import annotations

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


def run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """Train the candidate ``config = {"r", "d", "w"}`` and report every epoch to Tune."""
    import ray
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
        tune.report({
            "top1": epoch.top1, "val_loss": epoch.val_loss, "train_loss": epoch.train_loss,
            "images_per_second": epoch.images_per_second, "epoch_seconds": epoch.seconds,
            "epoch": epoch.epoch, **fixed,
        })

    train_candidate(
        space, r, d, w, data,
        epochs=settings.max_epochs, recipe=settings.recipe, seed=settings.seed,
        threads=settings.threads, device=device, callback=report,
    )
