"""The Ray Tune trainable: one (r, d, w) trial, wrapping the Ray-free trainer of :mod:`tinyray.train`.

A trial reports after every epoch (validation top-1, losses, throughput) together with what the driver needs
to record it: FLOPs, parameters, resolutions and the Ray node it ran on. The search space and the dataset are
loaded once per worker process and kept, so a reused actor starts its next trial without reloading either.

Every report carries a Tune checkpoint of the whole training state (``state.pt``: tensors and plain values,
read back with ``torch.load(weights_only=True)``) and the metrics of every epoch so far (``reports``), so a
retried trial or a resumed search continues from the last finished epoch instead of starting over: from the newest
checkpoint in the trial's own folder, even when Tune's last experiment snapshot points at the one before
(:func:`run_trial`).

With ``trainer="replay"`` (``--trainer replay``) the same trainable reports a recorded learning curve instead of
training (:mod:`tinyray.replay`): the reports, checkpoints (``state.json`` instead of ``state.pt``) and everything
the driver does with them are the same, and every report says ``trainer: replay``. A replay trial's process stays
small: the driver describes its candidate (FLOPs, parameters, resolutions) in the trial's config
(:class:`~tinyray.tune.searcher.TinySearcher`'s ``describe``), so the process imports neither torch, timm nor
scipy and loads neither the search space's network family nor the data.

Fault injection for tests and chaos drills: ``TINYRAY_FAULTS`` (see :mod:`tinyray.faults`).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import ray
from ray import tune

from tinyray.errors import UserError
from tinyray.faults import parse_faults
from tinyray.files import TRIAL_FOLDER_PREFIX
from tinyray.replay import REPLAY, REPLAY_STATE_FILE, TRAIN
from tinyray.space import SearchSpace, load_space
from tinyray.tracking import described


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a search shares (sent once to the workers through Ray's object store).

    Attributes:
        space: path of the search-space file.
        data: the dataset specification (``tinyray.data.DataSpec``).
        max_epochs: full fidelity, in epochs.
        recipe: training recipe name.
        seed: seed of every trial's initialisation and data order.
        threads: torch CPU threads per trial (the trial's CPUs); folder data is also loaded by ``threads - 1``
            worker processes (:func:`tinyray.data.default_workers`, the trainer's default) unless ``workers``.
        precision: training precision (``None``: the trial device's default, :func:`tinyray.train.default_precision`).
        workers: data-loading worker processes (``None``: the trainer's default).
        channels_last: channels-last memory format of the network and its inputs.
        trainer: ``train`` (train the network) or ``replay`` (report a recorded curve, :mod:`tinyray.replay`).
        replay_speed: a replay's seconds slept per recorded second.
        results: the search's results folder (Tune's experiment folder, shared by every node), where a restarted
            trial looks for its newest checkpoint (:func:`run_trial`).
    """

    space: str
    data: Any
    max_epochs: int
    recipe: str
    seed: int
    threads: int
    trainer: str = TRAIN
    replay_speed: float = 0.1
    # defaults: settings pickled by a tinyray without these options still unpickle
    precision: str | None = None
    workers: int | None = None
    channels_last: bool = True
    results: str | None = None


@lru_cache(maxsize=4)
def _space(path: str) -> SearchSpace:
    return load_space(path)


@lru_cache(maxsize=2)
def _data(spec: Any) -> Any:
    from tinyray.data import FOLDER, load_data

    # Built-in data: each node generates it once into its own cache. A folder must exist on every node.
    if spec.kind == FOLDER and not Path(spec.path).is_dir():
        import socket

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        raise UserError(
            f"data folder {spec.path} is missing on Ray node {node} (host {socket.gethostname()}): put the data on "
            f"shared storage mounted at that path on every node (NFS, EFS), or copy it to every node"
        )
    return load_data(spec)


STATE_FILE = "state.pt"


def _load_state(checkpoint: Any) -> dict[str, Any] | None:
    """The state of a Tune checkpoint (None for none)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return _read_state(Path(folder))


def _read_state(folder: Path) -> dict[str, Any]:
    """The state in a checkpoint's folder: a replay's ``state.json``, or a training's ``state.pt`` (tensors and plain
    values only: ``weights_only=True``)."""
    if (folder / REPLAY_STATE_FILE).is_file():
        import json

        return json.loads((folder / REPLAY_STATE_FILE).read_text())
    import torch

    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)


def _save_state(state: dict[str, Any], folder: Path, trainer: str) -> None:
    """Write a checkpoint's state into ``folder``: JSON for a replay (no torch in a replay's process), else torch."""
    if trainer == REPLAY:
        import json

        (folder / REPLAY_STATE_FILE).write_text(json.dumps(state))
        return
    import torch

    torch.save(state, folder / STATE_FILE)


def _faults(config: dict[str, Any], epoch: int) -> None:
    """Raise the fault ``TINYRAY_FAULTS`` asks for at this trial and epoch, if any (see the module docstring)."""
    faults = parse_faults(os.environ.get("TINYRAY_FAULTS"))
    if not faults:
        return
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
    """Train (or replay) the candidate ``config = {"r", "d", "w"}`` and report every epoch to Tune, with a
    checkpoint. A replay's config also holds the trial's description, made by the driver
    (:class:`~tinyray.tune.searcher.TinySearcher`'s ``describe``).

    A restarted trial continues from the newest checkpoint in its own folder, which may be newer than the one
    Tune restored it from (Tune snapshots the experiment only every other checkpoint of a trial,
    :func:`tinyray.tune.runtime.run_tune`): the epochs Tune's snapshot missed are reported again, from the metrics
    the checkpoint keeps (``reports``), and not trained again. The driver's records take each epoch once
    (:func:`tinyray.tune.runtime.trial_loggers`, :class:`~tinyray.tune.callbacks.TrackingCallback`, the scheduler).
    """
    fixed = {**_describe(config, settings), "node_id": ray.get_runtime_context().get_node_id(),
             "trainer": settings.trainer}
    reports: list[dict[str, Any]] = []

    def report(epoch: Any, checkpoint: Any) -> None:
        _faults(config, epoch.epoch)
        metrics = {
            "top1": epoch.top1, "val_loss": epoch.val_loss, "train_loss": epoch.train_loss,
            "images_per_second": epoch.images_per_second, "epoch_seconds": epoch.seconds,
            "skipped_images": epoch.skipped_images, "epoch": epoch.epoch,
            "epoch_end": time.time(),  # unix seconds: with epoch_seconds, when the trial held its slot
            **fixed,
        }
        reports.append(metrics)
        _report(metrics, {**checkpoint(), "reports": list(reports)}, settings.trainer)

    state = _load_state(tune.get_checkpoint())
    state = _catch_up(state, _newest_own_state(settings.results, tune.get_context().get_trial_id()),
                      settings.trainer)
    reports.extend((state or {}).get("reports", []))
    if state is not None and state["epoch"] >= settings.max_epochs:
        return  # finished just before an interruption: nothing left to train
    TRAINERS[settings.trainer](fixed, settings, report, state)


def _report(metrics: dict[str, Any], state: dict[str, Any] | None, trainer: str) -> None:
    """``tune.report(metrics)``, with a checkpoint of ``state`` unless it is None."""
    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        _save_state(state, Path(folder), trainer)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def trial_folder(trial_id: str) -> str:
    """The name of a trial's folder in the results folder (Tune's ``trial_dirname_creator``,
    :func:`tinyray.tune.runtime.trial_dirname`)."""
    return f"{TRIAL_FOLDER_PREFIX}{trial_id}"


def _newest_own_state(results: str | None, trial_id: str) -> dict[str, Any] | None:
    """The state of the newest readable checkpoint in the trial's folder of the results folder (None if none)."""
    if not results:
        return None
    for folder in sorted(Path(results, trial_folder(trial_id)).glob("checkpoint_*"), reverse=True):
        try:
            return _read_state(folder)
        except Exception:  # noqa: BLE001 - being written or deleted by Tune: an older one will do
            continue
    return None


def _catch_up(restored: dict[str, Any] | None, own: dict[str, Any] | None, trainer: str) -> dict[str, Any] | None:
    """The state to continue from: ``own`` (the trial folder's newest) if it is ahead of ``restored`` (Tune's) and
    keeps the metrics of the epochs in between, which are then reported to Tune again (the last with a checkpoint of
    ``own``); else ``restored``."""
    known = int(restored["epoch"]) if restored is not None else 0
    if own is None or int(own["epoch"]) <= known or len(own.get("reports") or []) < int(own["epoch"]):
        return restored
    missed = own["reports"][known:int(own["epoch"])]
    for number, metrics in enumerate(missed, start=1):
        _report(metrics, own if number == len(missed) else None, trainer)
    return own


def _describe(config: dict[str, Any], settings: TrialSettings) -> dict[str, Any]:
    """The trial's :data:`~tinyray.tracking.TRIAL_PARAMS`: from its config if the driver described it (a replay),
    else counted here (a training trial, or a replay started before the driver described them)."""
    return described(lambda: _space(settings.space), lambda: _data(settings.data), config)


def _train(fixed: dict[str, Any], settings: TrialSettings, report: Any, state: dict[str, Any] | None) -> None:
    from tinyray.train import train_candidate

    device = "cuda" if ray.get_gpu_ids() else "cpu"
    train_candidate(
        _space(settings.space), fixed["r"], fixed["d"], fixed["w"], _data(settings.data),
        epochs=settings.max_epochs, recipe=settings.recipe, seed=settings.seed,
        threads=settings.threads, workers=settings.workers, device=device, precision=settings.precision,
        channels_last=settings.channels_last, callback=report, state=state,
    )


def _replay(fixed: dict[str, Any], settings: TrialSettings, report: Any, state: dict[str, Any] | None) -> None:
    """Replay the recorded curve: neither the space nor the data is loaded, and neither torch nor scipy imported."""
    from tinyray.replay import replay_candidate

    replay_candidate(fixed["r"], fixed["d"], fixed["w"], epochs=settings.max_epochs, seed=settings.seed,
                     speed=settings.replay_speed, callback=report, state=state)


#: what a trial runs, by ``--trainer`` (:data:`tinyray.replay.TRAINERS` names them)
TRAINERS = {TRAIN: _train, REPLAY: _replay}
