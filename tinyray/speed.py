"""``tinyray bench train``: images per second of tinyray's training loop against a plain PyTorch loop.

Both loops train the same network (:func:`tinyray.train.make_model`), with the same optimizer
(:func:`tinyray.train.make_optimizer`), batch, precision and memory format, on the same batches held in memory on
the device (random images, so that no data loading is timed). tinyray's loop is :func:`tinyray.train.train_epoch`
itself: the learning-rate schedule, the NaN check and loss sum (a host sync a step), gradient clipping and EMA if
the recipe has them, the gradient scaler. The plain loop is forward, loss, ``zero_grad``, ``backward``, ``step``.
The ratio is what tinyray's bookkeeping costs (the issue's target: at least 95%).

Each loop runs ``warmup`` steps untimed, then ``repeats`` rounds of ``steps`` timed steps, the two loops taking turns
(in the order ABBA, so that a drift of the machine's speed during the run falls on both alike); on CUDA the clock
waits for the device. The report gives each loop's median images per second over the rounds, and the median and
range of the per-round ratios: these machines are noisy, so one timing of each is not a measurement.

With ``--data DIR`` it also times the folder loader alone (:func:`bench_loading`): training images per second
decoded from the files and read from the decode-once cache (:mod:`tinyray.decoded`), at each worker count; their
ratio is the cache's speed-up of an epoch's loading, and images/s over workers the throughput of one worker.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tinyray.space import SearchSpace


@dataclass(frozen=True)
class TrainSpeed:
    """What ``tinyray bench train`` measured.

    Attributes:
        tinyray: median images per second of tinyray's training loop over the rounds.
        plain: median images per second of the plain PyTorch loop over the rounds.
        ratio: median of the rounds' ``tinyray / plain``.
        ratio_low, ratio_high: the smallest and largest round's ratio.
        repeats: timed rounds of each loop.
        resolution: input side in pixels.
        batch_size: images per step.
        steps: timed steps of each loop.
        device, precision, channels_last, recipe: the settings both loops ran with.
    """

    tinyray: float
    plain: float
    ratio: float
    ratio_low: float
    ratio_high: float
    repeats: int
    resolution: int
    batch_size: int
    steps: int
    device: str
    precision: str
    channels_last: bool
    recipe: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_train(
    space: SearchSpace,
    r: float,
    d: float,
    w: float,
    *,
    num_classes: int = 100,
    recipe: str = "paper",
    batch_size: int | None = None,
    steps: int = 30,
    warmup: int = 5,
    repeats: int = 1,
    device: str = "cpu",
    precision: str | None = None,
    channels_last: bool = True,
) -> TrainSpeed:
    """Time tinyray's loop and a plain loop on candidate (r, d, w) at its deployment resolution ``floor(224 r)``.

    Args:
        space: the search space.
        r, d, w: the candidate.
        num_classes: classifier outputs.
        recipe: training recipe (its optimizer, clipping and EMA are part of tinyray's loop).
        batch_size: images per step; default the recipe's.
        steps: timed steps of each loop in a round.
        repeats: timed rounds of each loop, taking turns.
        warmup: untimed steps first (kernel selection, allocator).
        device, precision, channels_last: as :func:`tinyray.train.train_candidate`.
    """
    import torch
    import torch.nn as nn

    from tinyray import train

    recipe_ = train.get_recipe(recipe)
    batch_size = batch_size or recipe_.batch_size
    precision = precision or train.default_precision(device)
    resolution = space.resolution(r)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(batch_size, 3, resolution, resolution, generator=generator).to(device, memory_format=memory_format),
         torch.randint(0, num_classes, (batch_size,), generator=generator).to(device))
        for _ in range(4)
    ]

    def sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)

    def fresh() -> tuple[Any, Any, Any]:
        torch.manual_seed(0)
        model = train.make_model(space, r, d, w, num_classes, recipe_).to(device, memory_format=memory_format)
        optimizer = train.make_optimizer(model, recipe_, batch_size)
        return model, optimizer, nn.CrossEntropyLoss(label_smoothing=recipe_.label_smoothing)

    def cycle(count: int) -> list:
        return [batches[i % len(batches)] for i in range(count)]

    # tinyray's loop
    model, optimizer, criterion = fresh()
    scheduler = train.make_scheduler(optimizer, recipe_, warmup + steps * repeats, 1)
    ema = train.make_ema(model, recipe_)
    amp = train.MixedPrecision(precision, device)
    step = 0

    def tinyray_loop(count: int) -> None:
        nonlocal step
        step = train.train_epoch(model, cycle(count), criterion, optimizer, scheduler, ema, recipe_, 0, step,
                                 device, amp, memory_format)[2]

    # the plain loop, on its own copy of the network
    plain_model, plain_optimizer, plain_criterion = fresh()
    plain_model.train()
    autocast = train.MixedPrecision(precision, device)

    def plain_loop(count: int) -> None:
        for images, labels in cycle(count):
            with autocast.autocast():
                loss = plain_criterion(plain_model(images), labels)
            plain_optimizer.zero_grad(set_to_none=True)
            autocast.scaler.scale(loss).backward()
            autocast.scaler.step(plain_optimizer)
            autocast.scaler.update()

    def timed(loop: Any) -> float:
        sync()
        started = time.perf_counter()
        loop(steps)
        sync()
        return steps * batch_size / (time.perf_counter() - started)

    tinyray_loop(warmup)
    plain_loop(warmup)
    rounds = []
    for index in range(repeats):
        if index % 2 == 0:
            ours = timed(tinyray_loop)
            theirs = timed(plain_loop)
        else:
            theirs = timed(plain_loop)
            ours = timed(tinyray_loop)
        rounds.append((ours, theirs))
    ratios = [ours / theirs for ours, theirs in rounds]
    return TrainSpeed(tinyray=statistics.median(ours for ours, _ in rounds),
                      plain=statistics.median(theirs for _, theirs in rounds), ratio=statistics.median(ratios),
                      ratio_low=min(ratios), ratio_high=max(ratios), repeats=repeats,
                      resolution=resolution, batch_size=batch_size, steps=steps, device=device, precision=precision,
                      channels_last=channels_last, recipe=recipe_.name)


@dataclass(frozen=True)
class LoaderSpeed:
    """Training images per second of one folder loader (no training step), after its first batch.

    Attributes:
        source: ``files`` (decoded in every epoch) or ``decoded`` (read from the decode-once cache).
        workers: loader worker processes (0: in this process).
        images_per_second: median images per second over the rounds.
        images: images timed in a round.
        low, high: the slowest and fastest round's images per second.
    """

    source: str
    workers: int
    images_per_second: float
    images: int
    low: float
    high: float


def bench_loading(
    path: Path | str,
    *,
    resolution: int = 224,
    batch_size: int = 128,
    workers: tuple[int, ...] = (0, 1, 2),
    batches: int = 20,
    repeats: int = 1,
    cache_dir: Path | str | None = None,
) -> list[LoaderSpeed]:
    """Time the training loader of the ImageFolder at ``path``, from the files and from its decoded cache.

    The cache is built first if needed (not timed). Each loader is timed over up to ``batches`` batches of one
    epoch after its first batch (worker start-up excluded), in ``repeats`` rounds that take every loader in turn;
    the median round is reported.
    """
    from tinyray.data import DECODED_PREFIX, load_data, resolve_data

    sources = [(source, load_data(resolve_data(spec, cache_dir=cache_dir)))
               for source, spec in (("files", str(path)), ("decoded", f"{DECODED_PREFIX}{path}"))]
    speeds: dict[tuple[str, int], list[float]] = {}
    images_timed: dict[tuple[str, int], int] = {}
    for _ in range(repeats):
        for source, data in sources:
            for count in workers:
                train, _ = data.loaders(resolution, batch_size, seed=0, workers=count)
                train.set_epoch(0)
                iterator = iter(train)
                next(iterator, None)
                images = 0
                started = time.perf_counter()
                for _, (_, labels) in zip(range(batches), iterator):
                    images += len(labels)
                seconds = time.perf_counter() - started
                speeds.setdefault((source, count), []).append(images / seconds if seconds > 0 else 0.0)
                images_timed[source, count] = images
                # Stop its workers before the next loader forks its own: the loader and its sampler hold each other,
                # so only the cycle collector frees them, and a forked worker must not inherit them as garbage
                # (its collector would shut down workers that are not its children: an ignored AssertionError).
                del iterator, train
                gc.collect()
    return [LoaderSpeed(source, count, statistics.median(rounds), images_timed[source, count], min(rounds),
                        max(rounds)) for (source, count), rounds in speeds.items()]


__all__ = ["LoaderSpeed", "TrainSpeed", "bench_loading", "bench_train"]
