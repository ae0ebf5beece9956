"""Train one candidate (r, d, w) and report validation accuracy after every epoch. No Ray here.

:func:`train_candidate` builds the candidate's timm network (:func:`tinyray.cube.build_model`), trains it with a
:class:`Recipe` on a :class:`tinyray.data.Data`, evaluates after each epoch and hands an :class:`EpochResult` to a
callback, which may stop the run (an early-stopping scheduler) or save the training state (a checkpoint). The Ray
Tune trainable is a thin wrapper around this function.

Two recipes (:data:`RECIPES`):

* ``proxy``, the default: tuned by measurement for tiny EfficientNets on one CPU thread over 2-4 epochs of the
  synthetic data: AdamW at 2.5e-3 with batch 16 (more optimizer steps for the same images: batch 32 and 64 learned
  less in 3 epochs, batch 8 is too small for BatchNorm, 5e-3 was worse), 0.3 warm-up epochs, cosine decay, label
  smoothing 0.1, no EMA (it lags far behind the weights in a short run), residual blocks that start as the
  identity (``zero_init_last``) and BatchNorm statistics recomputed before every evaluation
  (``precise_bn_images``). The measurements are in ``docs/benchmarks.md``; how well the recipe's short runs rank
  networks is measured by ``tinyray bench proxy``.
* ``paper``: the TinyNets/EfficientNet ImageNet recipe (RMSProp-TF, step decay 0.97 every 2.4 epochs, 3 warm-up
  epochs, dropout 0.2, stochastic depth 0.2, BN momentum 0.01, EMA 0.9999 of the weights, evaluation on the EMA
  weights). Without ImageNet's 350 epochs it learns little in a few: it is there for real data and long runs.

Runs are reproducible: with the same seed (and, on CPU, the same thread count) two runs give identical numbers, and
a run resumed from a checkpoint continues exactly as if it had not been interrupted (the checkpoint holds the CPU
random state, the training CUDA device's one and, for fp16, the loss scale).

The GPU path is this same code with ``device="cuda"``: pinned batches, mixed precision (``torch.autocast`` in bf16,
or fp16 with a gradient scaler, :func:`default_precision`) and channels-last. The tests run mixed precision and the
gradient scaler on CPU, which torch allows; no test has run on a GPU.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

from tinyray.cube import build_model
from tinyray.data import Data, default_workers
from tinyray.errors import UserError
from tinyray.files import TRAINING_STATE_VERSION as STATE_VERSION  # the old name, for code that imports it here
from tinyray.space import SearchSpace

if TYPE_CHECKING:
    import torch
    from timm.scheduler.scheduler import Scheduler
    from timm.utils import ModelEmaV3


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite (the learning rate is too high for this candidate)."""


@dataclass(frozen=True)
class Recipe:
    """How to train: optimizer, learning-rate schedule and regularization.

    Attributes:
        name: the recipe's name in :data:`RECIPES`.
        optimizer: a timm optimizer name (``adamw``, ``sgd`` = SGD with Nesterov momentum, ``rmsproptf``).
        lr: peak learning rate at batch size ``lr_batch``; other batch sizes scale it linearly.
        lr_batch: batch size at which ``lr`` is given.
        batch_size: images per training step unless the caller overrides it.
        weight_decay: weight decay (not applied to biases and BatchNorm parameters, as timm does).
        momentum: SGD/RMSProp momentum (ignored by AdamW).
        alpha: RMSProp decay of the squared-gradient average.
        eps: optimizer epsilon; ``None`` for the optimizer's default.
        schedule: ``cosine`` (to ``min_lr`` at the last epoch) or ``step`` (``lr * decay_rate ** floor(epoch /
            decay_epochs)``, counted from the first step as in the EfficientNet TF code).
        warmup_epochs: linear warm-up from ``warmup_lr`` to the peak, in epochs (fractions allowed).
        warmup_lr: learning rate of the first step.
        decay_epochs: period of the step schedule, in epochs.
        decay_rate: factor of the step schedule.
        min_lr: final learning rate of the cosine schedule.
        label_smoothing: label smoothing of the training loss.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth rate.
        bn_momentum: BatchNorm momentum in PyTorch's convention (the paper's decay 0.99 is 0.01); ``None`` for
            PyTorch's 0.1.
        ema_decay: decay of an exponential moving average of the weights, evaluated instead of the raw weights;
            ``None`` for no EMA.
        grad_clip: clip the gradient norm to this; ``None`` for no clipping.
        precise_bn_images: before every evaluation, recompute the BatchNorm statistics of the evaluated network
            as exact averages over this many training images (no gradients), instead of the running averages
            training left behind; 0 keeps the running averages. A short run changes its weights too fast for
            running averages to follow (measured: every network at chance after the first epoch of the old
            proxy, 0.14-0.18 top-1 with the statistics recomputed).
        zero_init_last: start every residual block as the identity by zeroing the scale of its last BatchNorm
            (Goyal et al., 2017; timm does it for ResNets), so that a deep network trains from its first steps
            like a shallow one instead of stalling (measured on r=0.95 d=1.07 w=0.25, 3 proxy epochs: top-1 0.09,
            0.17, 0.23 without, 0.22, 0.30, 0.32 with; a deep thin corner of the cube did not learn at all in a
            10x longer training without it).
    """

    name: str
    optimizer: str
    lr: float
    lr_batch: int
    batch_size: int
    weight_decay: float
    momentum: float = 0.9
    alpha: float = 0.9
    eps: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_lr: float = 1e-6
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    bn_momentum: float | None = None
    ema_decay: float | None = None
    grad_clip: float | None = None
    precise_bn_images: int = 0
    zero_init_last: bool = False

    def learning_rate(self, batch_size: int) -> float:
        """Peak learning rate at ``batch_size``: ``lr * batch_size / lr_batch``."""
        return self.lr * batch_size / self.lr_batch


RECIPES: dict[str, Recipe] = {
    "proxy": Recipe(
        name="proxy",
        optimizer="adamw",
        lr=2.5e-3,
        lr_batch=16,
        batch_size=16,
        weight_decay=0.05,
        schedule="cosine",
        warmup_epochs=0.3,
        warmup_lr=1e-5,
        label_smoothing=0.1,
        grad_clip=5.0,
        precise_bn_images=256,
        zero_init_last=True,
    ),
    "paper": Recipe(
        name="paper",
        optimizer="rmsproptf",
        lr=0.048,
        lr_batch=1024,
        batch_size=128,
        weight_decay=1e-5,
        momentum=0.9,
        alpha=0.9,
        eps=1e-3,
        schedule="step",
        warmup_epochs=3.0,
        warmup_lr=1e-6,
        decay_epochs=2.4,
        decay_rate=0.97,
        label_smoothing=0.1,
        drop_rate=0.2,
        drop_path_rate=0.2,
        bn_momentum=0.01,
        ema_decay=0.9999,
    ),
}
DEFAULT_RECIPE = "proxy"


def get_recipe(recipe: str | Recipe) -> Recipe:
    """A recipe by name (``proxy`` or ``paper``), or the given :class:`Recipe` itself.

    Raises:
        UserError: for an unknown name.
    """
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise UserError(f"unknown training recipe {recipe!r}: use one of {sorted(RECIPES)}")
    return RECIPES[recipe]


@dataclass(frozen=True)
class EpochResult:
    """What one epoch gave.

    Attributes:
        epoch: 1-based epoch number.
        top1: validation accuracy in [0, 1] (on the EMA weights if the recipe keeps an EMA).
        val_loss: mean validation cross-entropy (no label smoothing), nats per image.
        train_loss: mean training loss of the epoch (with label smoothing), nats per image.
        images_per_second: training throughput of the epoch (evaluation excluded).
        seconds: wall time of the epoch, evaluation included.
        lr: learning rate of the epoch's last step.
        skipped_images: unreadable images skipped so far by this process, training and validation together
            (folder data; each image counted once, however many epochs meet it).
    """

    epoch: int
    top1: float
    val_loss: float
    train_loss: float
    images_per_second: float
    seconds: float
    lr: float = 0.0
    skipped_images: int = 0


@dataclass(frozen=True)
class TrainResult:
    """What a run gave.

    Attributes:
        history: one :class:`EpochResult` per epoch trained (those before a resume included).
        final_top1: validation accuracy after the last epoch, in [0, 1].
        best_top1: best validation accuracy over the epochs, in [0, 1].
        epochs_trained: number of epochs trained (``len(history)``).
        train_seconds: wall time of all epochs, evaluation included.
        resolution: input side in pixels the candidate trained at.
        batch_size: images per training step.
        stopped_early: whether the callback stopped the run before ``epochs``.
    """

    history: tuple[EpochResult, ...]
    final_top1: float
    best_top1: float
    epochs_trained: int
    train_seconds: float
    resolution: int
    batch_size: int
    stopped_early: bool = False


#: ``callback(result, checkpoint)``: called after every epoch; ``checkpoint()`` returns the full training state
#: (see :func:`train_candidate`). Return True to stop the run.
Callback = Callable[[EpochResult, Callable[[], dict[str, Any]]], "bool | None"]


def make_model(space: SearchSpace, r: float, d: float, w: float, num_classes: int, recipe: Recipe) -> "torch.nn.Module":
    """The candidate's untrained timm network, with the recipe's dropout, stochastic depth and BN momentum.

    timm's EfficientNet init draws the classifier from U(+-1/sqrt(num_classes)), sized for 1000 classes; with 10
    classes the first logits would spread over ~4 nats and the first epoch be spent shrinking them, so the
    classifier starts at zero (every class equally likely). With ``recipe.zero_init_last`` every residual block
    starts as the identity (:func:`zero_init_residuals`).
    """
    import torch.nn as nn

    from tinyray.smallconv import use_small_map_depthwise

    model = build_model(
        space,
        r,
        d,
        w,
        num_classes,
        drop_rate=recipe.drop_rate,
        drop_path_rate=recipe.drop_path_rate,
        bn_momentum=recipe.bn_momentum,
    )
    nn.init.zeros_(model.get_classifier().weight)
    if recipe.zero_init_last:
        zero_init_residuals(model, space)
    use_small_map_depthwise(model)  # the same network, 10-30% faster a step on small inputs (tinyray/smallconv.py)
    return model


def zero_init_residuals(model: "torch.nn.Module", space: SearchSpace) -> int:
    """Zero the scale of the last BatchNorm of every residual block of ``model``; returns how many were zeroed.

    Which BatchNorms end a residual branch is the family's to say
    (:meth:`tinyray.families.base.Network.residual_norms`: for EfficientNet the blocks with an identity skip).
    """
    import torch.nn as nn

    norms = space.network.residual_norms(model)
    for norm in norms:
        nn.init.zeros_(norm.weight)
    return len(norms)


#: Optimizers built with torch's fused kernel (CPU and CUDA alike).
FUSED_OPTIMIZERS = ("adam", "adamw")
#: Memory format of the network and its inputs unless ``channels_last=False``: channels-last is faster for these
#: convolutions on CPU (oneDNN) and on CUDA (measured here: 12-17% off a training step at batch 16 on one CPU thread,
#: with the fused optimizer 20-25%), so it is the default on both.
MEMORY_FORMAT = "channels_last"
#: Training precisions: plain float32, or mixed precision (``torch.autocast``) in bfloat16 or float16; float16 also
#: scales the loss (``torch.amp.GradScaler``), whose 5 exponent bits would otherwise flush small gradients to zero.
PRECISIONS = ("fp32", "bf16", "fp16")


def default_precision(device: str) -> str:
    """The precision a training on ``device`` uses unless told: ``fp32`` off CUDA (the recorded CPU measurements and
    benchmarks are in float32, and bf16 autocast is slower than float32 on CPUs without bf16 instructions); on CUDA
    ``bf16`` where the GPU has it (Ampere and later), else ``fp16`` with a gradient scaler (V100, T4)."""
    import torch

    if torch.device(device).type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class MixedPrecision:
    """``torch.autocast`` and a gradient scaler for one precision of :data:`PRECISIONS` (both no-ops for fp32)."""

    def __init__(self, precision: str, device: str) -> None:
        import torch

        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        self.device_type = torch.device(device).type
        if precision == "bf16" and self.device_type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("this GPU has no bfloat16: train with precision fp16 (or fp32)")
        self.enabled = precision != "fp32"
        self.dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=precision == "fp16")

    def autocast(self) -> Any:
        import torch

        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


def make_optimizer(model: "torch.nn.Module", recipe: Recipe, batch_size: int) -> "torch.optim.Optimizer":
    """The recipe's timm optimizer over ``model``, at the peak learning rate for ``batch_size``."""
    from timm.optim import create_optimizer_v2

    extra: dict[str, Any] = {}
    if recipe.eps is not None:
        extra["eps"] = recipe.eps
    if recipe.optimizer in ("rmsproptf", "rmsprop"):
        extra["alpha"] = recipe.alpha
    if recipe.optimizer in FUSED_OPTIMIZERS:
        # torch's fused Adam(W) kernel: one pass over all parameters instead of a dozen foreach ops; measured on a
        # CPU thread, 8-10% off a training step of EfficientNet-B0 at batch 16 (docs/benchmarks.md, 2026-11-30).
        extra["fused"] = True
    return create_optimizer_v2(
        model,
        opt=recipe.optimizer,
        lr=recipe.learning_rate(batch_size),
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,
        **extra,
    )


def make_scheduler(
    optimizer: "torch.optim.Optimizer", recipe: Recipe, steps_per_epoch: int, epochs: int
) -> "Scheduler":
    """The recipe's timm learning-rate scheduler, counted in optimizer steps.

    Call ``scheduler.step_update(step)`` before optimizer step ``step`` (0-based) to set its learning rate; the
    schedule is a pure function of ``step``, so a resumed run needs no scheduler state.

    Args:
        optimizer: the optimizer whose learning rate is scheduled.
        recipe: the recipe.
        steps_per_epoch: optimizer steps in one epoch.
        epochs: length of the run in epochs (the cosine schedule ends there).
    """
    from timm.scheduler import CosineLRScheduler, StepLRScheduler

    warmup_steps = int(round(recipe.warmup_epochs * steps_per_epoch))
    if recipe.schedule == "step":
        return StepLRScheduler(
            optimizer,
            decay_t=recipe.decay_epochs * steps_per_epoch,
            decay_rate=recipe.decay_rate,
            warmup_t=warmup_steps,
            warmup_lr_init=recipe.warmup_lr,
            warmup_prefix=False,
            t_in_epochs=False,
        )
    if recipe.schedule == "cosine":
        total = max(1, epochs * steps_per_epoch)
        return CosineLRScheduler(
            optimizer,
            t_initial=max(1, total - warmup_steps),
            lr_min=recipe.min_lr,
            warmup_t=warmup_steps,
            warmup_lr_init=recipe.warmup_lr,
            warmup_prefix=True,
            t_in_epochs=False,
        )
    raise UserError(f"recipe {recipe.name!r}: unknown schedule {recipe.schedule!r}; use 'cosine' or 'step'")


def make_ema(model: "torch.nn.Module", recipe: Recipe) -> "ModelEmaV3 | None":
    """An EMA of ``model``'s weights and buffers, or ``None`` if the recipe keeps none.

    The decay warms up as ``step / (10 + step)`` before reaching ``ema_decay``, close to the TF EfficientNet code's
    ``ExponentialMovingAverage(decay, num_updates=global_step)`` (``(1 + step) / (10 + step)``); pass the step
    number to ``ema.update(model, step)``.
    """
    if recipe.ema_decay is None:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=True, warmup_gamma=10.0, warmup_power=1.0)


def train_candidate(
    space: SearchSpace,
    r: float,
    d: float,
    w: float,
    data: Data,
    *,
    epochs: int,
    recipe: str | Recipe = DEFAULT_RECIPE,
    seed: int = 0,
    resolution: int | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    workers: int | None = None,
    device: str = "cpu",
    precision: str | None = None,
    channels_last: bool = True,
    callback: Callback | None = None,
    start_epoch: int | None = None,
    state: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the candidate (r, d, w) on ``data`` and evaluate it after every epoch.

    Args:
        space: the search space.
        r, d, w: the candidate's resolution, depth and width multipliers.
        data: the dataset (:func:`tinyray.data.load_data`); its classes set the classifier size.
        epochs: length of the run in epochs; the learning-rate schedule spans it, and a resumed run ends there too.
        recipe: a name from :data:`RECIPES` or a :class:`Recipe`.
        seed: seeds the weights, the data order and dropout; equal seeds give equal runs.
        resolution: training input side in pixels; default ``data.train_resolution(space, r)`` (the proxy
            resolution ``round(64 r)`` on synthetic data, ``floor(224 r)`` on folder data).
        batch_size: images per step; default the recipe's. The learning rate scales with it.
        threads: if given, ``torch.set_num_threads(threads)``.
        workers: data-loading worker processes (folder data; synthetic data is in memory); default
            :func:`tinyray.data.default_workers` of ``threads`` (one less than the training's CPUs, at most 8).
            The batches, and so the run, are the same for every worker count.
        device: torch device; on CUDA the batches come in pinned memory.
        precision: one of :data:`PRECISIONS`; default :func:`default_precision` of ``device`` (fp32 on CPU, mixed
            bf16 or fp16 on CUDA). Part of the run: a checkpoint resumes only at the precision it was trained in.
        channels_last: keep the network and its inputs in channels-last memory (:data:`MEMORY_FORMAT`); default
            on, the faster layout on CPU and CUDA alike.
        callback: ``callback(result, checkpoint)`` after every epoch; ``checkpoint()`` returns the training state
            as a dict of tensors and plain values (model, optimizer, EMA, epoch, step, RNG, history), which
            ``torch.save`` can write and ``state=`` accepts. A True return stops the run.
        start_epoch: epochs already trained; only meaningful with ``state``, whose epoch it must match (kept for
            callers that track it themselves).
        state: a dict from ``checkpoint()`` to resume from; the other arguments must describe the same run.

    Returns:
        :class:`TrainResult` with the per-epoch history (that of ``state`` included).

    Raises:
        TrainingDiverged: if the training loss becomes NaN or infinite.
        UserError: for an unknown recipe, a non-positive epoch count, batch size or thread count, or a negative
            worker count.
        ValueError: if ``state`` belongs to a different run.
    """
    import torch
    import torch.nn as nn

    recipe = get_recipe(recipe)
    if epochs < 1:
        raise UserError(f"epochs must be at least 1, got {epochs}")
    if threads is not None:
        if threads < 1:
            raise UserError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    batch_size = batch_size or recipe.batch_size
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    resolution = resolution or data.train_resolution(space, r)
    run = {
        "r": float(r),
        "d": float(d),
        "w": float(w),
        "space": space.name,
        "recipe": recipe.name,
        "seed": seed,
        "resolution": resolution,
        "batch_size": batch_size,
        "num_classes": data.num_classes,
        "epochs": epochs,
        "precision": precision or default_precision(device),
    }
    amp = MixedPrecision(run["precision"], device)
    memory_format = getattr(torch, MEMORY_FORMAT) if channels_last else torch.contiguous_format

    torch.manual_seed(seed)
    model = make_model(space, r, d, w, data.num_classes, recipe)
    model.to(device, memory_format=memory_format)
    if workers is None:
        workers = default_workers(threads)
    train_batches, val_batches = data.loaders(
        resolution, batch_size, seed, workers=workers, pin_memory=torch.device(device).type == "cuda"
    )
    steps_per_epoch = len(train_batches)
    optimizer = make_optimizer(model, recipe, batch_size)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch, epochs)
    ema = make_ema(model, recipe)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    history: list[EpochResult] = []
    step = 0
    first_epoch = 0
    train_seconds = 0.0
    if state is not None:
        first_epoch, step, train_seconds, history = _restore(state, run, model, optimizer, ema, amp.scaler, device)
        if start_epoch is not None and start_epoch != first_epoch:
            raise ValueError(f"start_epoch={start_epoch} but the state was saved after epoch {first_epoch}")
    elif start_epoch:
        raise ValueError(f"start_epoch={start_epoch} needs the state saved after that epoch (state=...)")

    def checkpoint() -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "run": dict(run),
            "epoch": len(history),
            "step": step,
            "train_seconds": train_seconds,
            "history": [asdict(result) for result in history],
            "model": _clone(model.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "ema": _clone(ema.module.state_dict()) if ema is not None else None,
            "torch_rng": torch.get_rng_state().clone(),
            "cuda_rng": _cuda_rng_state(device),
            "scaler": amp.scaler.state_dict() if amp.scaler.is_enabled() else None,
        }

    stopped_early = False
    for epoch in range(first_epoch, epochs):
        started = time.perf_counter()
        train_batches.set_epoch(epoch)
        loss_sum, images_seen, step = train_epoch(
            model, train_batches, criterion, optimizer, scheduler, ema, recipe, epoch, step, device, amp, memory_format
        )
        trained = time.perf_counter() - started
        evaluated = ema.module if ema is not None else model
        with amp.autocast():
            if recipe.precise_bn_images:
                recalibrate_batchnorm(evaluated, train_batches, recipe.precise_bn_images, device)
            top1, val_loss = evaluate(evaluated, val_batches, device, memory_format)
        seconds = time.perf_counter() - started
        train_seconds += seconds
        result = EpochResult(
            epoch=epoch + 1,
            top1=top1,
            val_loss=val_loss,
            train_loss=loss_sum / max(1, images_seen),
            images_per_second=images_seen / trained if trained > 0 else 0.0,
            seconds=seconds,
            lr=float(optimizer.param_groups[0]["lr"]),
            skipped_images=len(train_batches.skipped) + len(val_batches.skipped),
        )
        history.append(result)
        if callback is not None and callback(result, checkpoint) and epoch + 1 < epochs:
            stopped_early = True
            break

    return TrainResult(
        history=tuple(history),
        final_top1=history[-1].top1 if history else 0.0,
        best_top1=max((result.top1 for result in history), default=0.0),
        epochs_trained=len(history),
        train_seconds=train_seconds,
        resolution=resolution,
        batch_size=batch_size,
        stopped_early=stopped_early,
    )


def train_epoch(
    model: "torch.nn.Module",
    batches: Any,
    criterion: "torch.nn.Module",
    optimizer: "torch.optim.Optimizer",
    scheduler: "Scheduler",
    ema: "ModelEmaV3 | None",
    recipe: Recipe,
    epoch: int,
    step: int,
    device: str,
    amp: MixedPrecision,
    memory_format: "torch.memory_format",
) -> tuple[float, int, int]:
    """One pass over ``batches``; returns (summed loss, images seen, optimizer steps taken so far)."""
    import torch
    import torch.nn as nn

    model.train()
    loss_sum = 0.0
    images_seen = 0
    for images, labels in batches:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        scheduler.step_update(step)
        with amp.autocast():
            loss = criterion(model(images), labels)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"training loss became {loss.item()} at epoch {epoch + 1}, step {step}"
                f" (lr {optimizer.param_groups[0]['lr']:.3g}): lower the learning rate or the batch size"
            )
        optimizer.zero_grad(set_to_none=True)
        amp.scaler.scale(loss).backward()
        if recipe.grad_clip is not None:
            amp.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        amp.scaler.step(optimizer)  # fp16: skips a step whose gradients overflowed, and adapts the scale
        amp.scaler.update()
        step += 1
        if ema is not None:
            ema.update(model, step=step)
        loss_sum += loss.item() * len(labels)
        images_seen += len(labels)
    return loss_sum, images_seen, step


def _cuda_rng_state(device: str) -> "torch.Tensor | None":
    """The random state of the CUDA device a run trains on (dropout and drop path draw from it), else ``None``."""
    import torch

    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_rng_state(torch.device(device))


def recalibrate_batchnorm(model: "torch.nn.Module", batches: Any, images: int, device: str = "cpu") -> None:
    """Set every BatchNorm's statistics to exact averages over the first ``images`` images of ``batches``.

    "Precise BN" (Wu and Johnson, 2021, "Rethinking 'Batch' in BatchNorm"), done by torch's
    :func:`torch.optim.swa_utils.update_bn`: forward passes in training mode without gradients. ``batches`` is
    iterated in the order of its current epoch, so the result depends only on the run's seed and epoch.
    """
    from itertools import islice

    from torch.optim.swa_utils import update_bn

    batch_size = getattr(batches, "batch_size", 1) or 1
    update_bn(islice(iter(batches), max(1, -(-images // batch_size))), model, device=device)


def evaluate(
    model: "torch.nn.Module", batches: Any, device: str = "cpu", memory_format: "torch.memory_format | None" = None
) -> tuple[float, float]:
    """Top-1 accuracy in [0, 1] and mean cross-entropy (nats per image) of ``model`` over ``batches``.

    ``memory_format`` of the inputs: default channels-last (:data:`MEMORY_FORMAT`). Under ``torch.autocast`` the
    network runs in its precision; the loss is computed in float32.
    """
    import torch
    import torch.nn.functional as F

    if memory_format is None:
        memory_format = getattr(torch, MEMORY_FORMAT)
    was_training = model.training
    model.eval()
    correct = 0
    loss_sum = 0.0
    count = 0
    with torch.no_grad():
        for images, labels in batches:
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            logits = model(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == labels).sum())
            count += len(labels)
    model.train(was_training)
    if count == 0:
        return 0.0, float("nan")
    return correct / count, loss_sum / count


def _clone(tensors: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    # state_dict() returns live tensors; a checkpoint must not change as training goes on.
    return {key: value.detach().clone() for key, value in tensors.items()}


def _restore(
    state: dict[str, Any],
    run: dict[str, Any],
    model: "torch.nn.Module",
    optimizer: "torch.optim.Optimizer",
    ema: "ModelEmaV3 | None",
    scaler: "torch.amp.GradScaler",
    device: str,
) -> tuple[int, int, float, list[EpochResult]]:
    import torch

    if state.get("version") != STATE_VERSION:
        raise ValueError(f"training state version {state.get('version')!r} is not {STATE_VERSION}")
    # states saved before mixed precision (and before the CUDA and scaler keys) are float32 runs
    saved = {"precision": "fp32", **state["run"]}
    # The schedule may be extended (a longer run resumed from a shorter one); everything else must match.
    different = {key: (saved.get(key), value) for key, value in run.items() if key != "epochs" and saved.get(key) != value}
    if different:
        raise ValueError(f"training state belongs to a different run: (saved, given) {different}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        if state["ema"] is None:
            raise ValueError("training state has no EMA weights but the recipe keeps an EMA")
        ema.module.load_state_dict(state["ema"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], torch.device(device))
    if state.get("scaler") is not None and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    history = [EpochResult(**result) for result in state["history"]]
    return int(state["epoch"]), int(state["step"]), float(state["train_seconds"]), history


__all__ = [
    "Recipe",
    "RECIPES",
    "DEFAULT_RECIPE",
    "get_recipe",
    "EpochResult",
    "TrainResult",
    "TrainingDiverged",
    "Callback",
    "make_model",
    "make_optimizer",
    "make_scheduler",
    "make_ema",
    "train_candidate",
    "PRECISIONS",
    "default_precision",
    "MixedPrecision",
    "train_epoch",
    "evaluate",
    "recalibrate_batchnorm",
    "zero_init_residuals",
]
