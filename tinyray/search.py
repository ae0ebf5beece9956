"""The search: Ray Tune trials over the cube, proposed by the searcher, pruned by the scheduler, tracked in MLflow.

``run_search(SearchConfig(...))`` (and :func:`search`, its keyword-argument twin) does, in order:

1. validate everything a user gave (budget, space, data, sizes, results folder) before anything is started;
2. start or join Ray, and meanwhile (in a thread: :func:`_start`) prepare the dataset once (cached on disk; each
   trial process loads it once) and the searcher;
3. run the Tune experiment (:mod:`tinyray.tune`): a searcher of :mod:`tinyray.searchers` proposes (r, d, w)
   under the budget, the multi-objective ASHA of :mod:`tinyray.scheduler` (or Ray's ASHA, or FIFO) stops trials
   early, :mod:`tinyray.train` trains them, :mod:`tinyray.tracking` mirrors them into MLflow;
4. write ``trials.csv``, ``front.csv`` and ``front.png`` into the results folder and onto the parent run;
5. fit the tiny formula on the front (:mod:`tinyray.formula`; in a thread, beside step 4), write ``formula.json``
   and ``formula.png``, log them and the formula's pyfunc model on the parent run (an MLflow 3 logged model of it),
   register the model, and answer the search's own budget.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tinyray.errors import Interrupted, UserError
from tinyray.searchers import DEFAULT_SEARCHER
from tinyray.formula import default_model_name
from tinyray.files import SEARCH_INFO_VERSION, TRIAL_FOLDER_PREFIX, write_json_atomic, write_text_atomic
from tinyray.replay import REPLAY, TRAINERS
from tinyray.status import COMPLETED, STATUSES

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SCHEDULERS = ("asha", "moasha", "fifo")
TRIAL_COLUMNS = [
    "trial_id", "r", "d", "w", "resolution", "train_resolution", "flops", "params", "epochs", "top1",
    "status", "node_id", "train_seconds", "failure", "trainer",
]
#: what a replayed search says first, wherever it is described
REPLAY_NOTE = "REPLAY: recorded learning curves were replayed (--trainer replay); no network was trained"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


#: NSGA-III generations bred ahead by default: with 0, a slot freed near a generation's end waits for its last
#: trial (and Tune stops its idle trial process); measured in docs/benchmarks.md (2026-12-07).
DEFAULT_AHEAD = 1


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search (the CLI's options, one to one).

    Attributes:
        budget: FLOPs budget, multiply-accumulates of one image at the deployment resolution.
        name: search name: the results sub-folder, the Tune experiment and the MLflow experiment.
        storage: results root; the search writes to ``storage/name``.
        space: search-space name or YAML path.
        data: ``None``/``"synthetic"`` for the built-in data, or an ImageFolder path.
        trials: number of trials.
        max_epochs: epochs of a fully trained trial (full fidelity).
        grace_period: ASHA's first rung, in epochs.
        reduction_factor: ASHA's eta: one trial in eta goes on at each rung.
        searcher: a name of :data:`tinyray.searchers.SEARCHERS`: ``nsga3`` (default), ``random`` (the paper's
            protocol: random sampling under the FLOPs budget), ``optuna-nsga3`` or ``qnehvi`` (BoTorch).
        scheduler: ``asha`` (Ray's, by top1), ``moasha`` (multi-objective ASHA over top1 and FLOPs,
            :mod:`tinyray.scheduler`) or ``fifo`` (train every trial fully).
        seed: seed of the searcher and of every trial.
        floor: lowest FLOPs a candidate may have (default budget / 16).
        pop_size: NSGA-III population per generation (the ``qnehvi`` searcher's Sobol start).
        generations_ahead: NSGA-III generations bred ahead of the oldest one in flight (``None``: 1 for ``nsga3``,
            0 for the searchers without generations, which refuse another value; 1: a slot freed
            near a generation's end takes a member of the next one; 0 makes it wait for the generation's last trial,
            and Tune stops its idle trial process meanwhile; a cluster with more slots than a generation wants 2:
            :class:`tinyray.searchers.nsga3.NSGA3Core`'s ``ahead``).
        cpus_per_trial, gpus_per_trial: resources of one trial (fractional GPUs share a device).
        recipe: training recipe (default: ``proxy`` on built-in data, ``paper`` on folders).
        address: an existing Ray cluster (``auto`` or ``host:port``); default ``RAY_ADDRESS`` or a local Ray.
        tracking_uri: MLflow server; default ``MLFLOW_TRACKING_URI`` or the local store in ``storage``.
        progress: ``live``, ``quiet`` or ``json``.
        formula_name: MLflow registered-model name the search's tiny formula is published under; default
            (``None``) ``tinynet-formula`` for EfficientNet-B0's space, ``tinynet-formula-<space>`` for another
            (:func:`tinyray.formula.default_model_name`), decided when the search starts and kept in ``search.json``.
        retries: times a failed trial (exception, NaN loss, out of memory) is retried from its last checkpoint
            before it counts as failed.
        trainer: ``train`` (default: train every trial) or ``replay`` (report recorded learning curves instead,
            to rehearse the machinery at scale: :mod:`tinyray.replay`; every record of the search says so).
        replay_speed: with ``replay``, seconds slept per recorded second of training.
        precision: every trial's training precision, one of :data:`tinyray.train.PRECISIONS`; default ``None``:
            :func:`tinyray.train.default_precision` of the trial's device (fp32 on CPU, bf16 or fp16 on CUDA).
        workers: data-loading worker processes of every trial (folder data); default ``None``: one less than the
            trial's CPUs, at most 8 (:func:`tinyray.data.default_workers`). The batches are the same for any count.
        channels_last: every trial's network and inputs in channels-last memory (default on), as ``tinyray train``.
    """

    budget: int
    name: str = "search"
    storage: Path = Path("tinyray-results")
    space: str | None = None
    data: str | None = None
    trials: int = 30
    max_epochs: int = 2
    grace_period: int = 1
    reduction_factor: int = 3
    searcher: str = DEFAULT_SEARCHER
    scheduler: str = "moasha"  # beat Ray's ASHA in `tinyray bench search` (README, Performance)
    seed: int = 0
    floor: int | None = None
    pop_size: int = 10
    generations_ahead: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    recipe: str | None = None
    address: str | None = None
    tracking_uri: str | None = None
    progress: str = "live"
    formula_name: str | None = None
    retries: int = 1
    trainer: str = "train"
    replay_speed: float = 0.1
    precision: str | None = None
    workers: int | None = None
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.generations_ahead is None:  # the searcher's default (see generations_ahead above)
            object.__setattr__(self, "generations_ahead", DEFAULT_AHEAD if self.searcher == "nsga3" else 0)

    @property
    def results_dir(self) -> Path:
        return Path(self.storage).expanduser().resolve() / self.name


@dataclass
class SearchResult:
    """What a finished search leaves behind.

    Attributes:
        trials: one row a trial (columns :data:`TRIAL_COLUMNS`).
        front: the accuracy/FLOPs Pareto front of the completed trials, by FLOPs.
        hypervolume: of the front, in the normalised plane of :mod:`tinyray.front`.
    """

    config: SearchConfig
    trials: "pd.DataFrame"
    front: "pd.DataFrame"
    hypervolume: float
    wall_seconds: float
    tracking_uri: str
    experiment_id: str | None
    parent_run_id: str | None
    files: dict[str, Path] = field(default_factory=dict)
    formula: dict[str, Any] | None = None
    formula_note: str = ""
    #: why MLflow went offline during the search ("" if it did not); ``tinyray publish`` sends the results later
    tracking_offline: str = ""

    @property
    def results_dir(self) -> Path:
        return self.config.results_dir

    def ui_command(self) -> str:
        """The command that opens the MLflow UI on this search's runs."""
        from tinyray.tracking import ui_command

        return ui_command(self.results_dir, self.tracking_uri, self.experiment_id, self.config.storage)

    def counts(self) -> dict[str, int]:
        status = self.trials["status"].value_counts()
        return {key: int(status.get(key, 0)) for key in STATUSES}

    def best(self) -> dict[str, Any] | None:
        """The most accurate completed trial under the budget."""
        done = self.trials[(self.trials["status"] == COMPLETED) & (self.trials["flops"] <= self.config.budget)]
        if done.empty:
            return None
        return done.sort_values(["top1", "flops"], ascending=[False, True]).iloc[0].to_dict()

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (what ``tinyray search --json`` prints last)."""
        front = self.front[["trial_id", "r", "d", "w", "resolution", "flops", "params", "top1"]]
        return {
            "name": self.config.name, "budget": self.config.budget, "results_dir": str(self.results_dir),
            "trials": len(self.trials), **{k.replace("-", "_"): v for k, v in self.counts().items()},
            "hypervolume": self.hypervolume, "wall_seconds": round(self.wall_seconds, 1),
            "front": front.to_dict(orient="records"), "best": self.best(),
            "tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_run_id, "ui_command": self.ui_command(),
            "formula": self.formula, "formula_note": self.formula_note, "trainer": self.config.trainer,
            "tracking_offline": self.tracking_offline or None,
            "publish_command": self.publish_command() if self.tracking_offline else None,
        }

    def publish_command(self) -> str:
        """The command that sends this search's results to MLflow (needed when tracking went offline)."""
        from tinyray.tracking import publish_command

        return publish_command(self.results_dir)

    def report(self) -> str:
        """Human-readable closing lines: the front, the best trial, where the results are, how to browse them."""
        from tinyray.cost import format_flops

        counts = self.counts()
        lines = [REPLAY_NOTE] if self.config.trainer == REPLAY else []
        lines += [
            f"search {self.config.name!r}: {len(self.trials)} trials in {self.wall_seconds / 60:.1f} min "
            f"({', '.join(f'{count} {status}' for status, count in counts.items())})",
            f"front ({len(self.front)} networks, hypervolume {self.hypervolume:.4f}):",
            f"  {'r':>5} {'d':>5} {'w':>5} {'px':>4} {'FLOPs':>8} {'params':>8} {'top1':>6}",
        ]
        for row in self.front.itertuples():
            lines.append(f"  {row.r:5.3f} {row.d:5.3f} {row.w:5.3f} {int(row.resolution):4d} {format_flops(row.flops):>8} "
                         f"{row.params / 1e6:7.2f}M {row.top1:6.3f}")
        best = self.best()
        if best is not None:
            lines.append(f"best under {format_flops(self.config.budget)}: r={best['r']:.3f} d={best['d']:.3f} "
                         f"w={best['w']:.3f} ({format_flops(best['flops'])} FLOPs) top1 {best['top1']:.3f}")
        if self.formula is not None:
            answer = self.formula["answer"]
            lines.append(f"formula for {format_flops(self.config.budget)}: r={answer['r']:.3f} d={answer['d']:.3f} "
                         f"w={answer['w']:.3f} ({answer['resolution']} px, {format_flops(answer['flops'])} FLOPs)"
                         + (f" ({answer['note']})" if answer.get("note") else "")
                         + (f" OUTSIDE: {answer['outside']}; 'tinyray formula' refuses it without --allow-outside"
                            if answer.get("outside") else ""))
            lines.append(f"formula model: {self.formula['model_uri'] or 'not published yet (tracking offline)'}  "
                         f"(tinyray formula --budget 100M --from {self.results_dir})")
        elif self.formula_note:
            lines.append(f"formula: {self.formula_note}")
        files = "trials.csv, front.csv, front.png" + (", formula.json, formula.png" if self.formula else "")
        lines += [
            f"results: {self.results_dir} (report.html, {files})",
            f"browse:  {self.ui_command()}",
        ]
        if self.tracking_offline:
            lines.append(f"tracking: offline ({self.tracking_offline}); MLflow misses some or all of this search: "
                         f"send it with '{self.publish_command()}' once {self.tracking_uri} answers")
        return "\n".join(lines)


def search(budget: str | int | float, **options: Any) -> SearchResult:
    """Run a search from Python, with the CLI's options as keywords.

    Example:
        >>> from tinyray.search import search
        >>> result = search("200M", trials=12, max_epochs=3)  # doctest: +SKIP
        >>> result.front[["r", "d", "w", "flops", "top1"]]  # doctest: +SKIP
    """
    from tinyray.cost import parse_budget

    if "storage" in options:
        options["storage"] = Path(options["storage"])
    return run_search(SearchConfig(budget=parse_budget(budget), **options))


def default_recipe(data: Any) -> str:
    """``proxy`` on the built-in data (fast, learns in a few epochs), the paper's recipe on real image folders.

    Args:
        data: a :class:`tinyray.data.DataSpec`, or loaded data (anything with a ``spec``).
    """
    spec = getattr(data, "spec", data)
    return "proxy" if spec.kind == "synthetic" else "paper"


#: Ray's resource precision: it counts resources in units of 1/10000 (``ray._private.ray_constants``).
RESOURCE_PRECISION = 0.0001


def check_name(name: str) -> None:
    """Refuse a search name that is not a plain folder name (empty, a path, control characters, too long)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise UserError(f"--name {name!r} must be letters, digits, '.', '_' or '-' (1 to 64, starting with a letter "
                        f"or digit), e.g. --name b200")


def validate(config: SearchConfig) -> None:
    """Check every option that does not need a running service; raise :class:`UserError` on the first bad one."""
    from tinyray.cli import LIMITS
    from tinyray.faults import parse_faults
    from tinyray.searchers import SEARCHERS

    check_name(config.name)
    checks = [
        ("--trials", config.trials, 1), ("--max-epochs", config.max_epochs, 1), ("--grace-period", config.grace_period, 1),
        ("--reduction-factor", config.reduction_factor, 2), ("--pop-size", config.pop_size, 4),
        ("--retries", config.retries, 0), ("--generations-ahead", config.generations_ahead, 0),
    ]
    for option, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{option} must be a whole number of at least {low}, got {value!r}")
        if value > LIMITS[option]:
            raise UserError(f"{option} must be at most {LIMITS[option]}, got {value}")
    if config.grace_period > config.max_epochs:
        raise UserError(f"--grace-period {config.grace_period} exceeds --max-epochs {config.max_epochs}: lower it or raise --max-epochs")
    if config.searcher not in SEARCHERS:
        raise UserError(f"--searcher {config.searcher!r} is not one of {list(SEARCHERS)}")
    if config.scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler {config.scheduler!r} is not one of {list(SCHEDULERS)}")
    if config.trainer not in TRAINERS:
        raise UserError(f"--trainer {config.trainer!r} is not one of {list(TRAINERS)}")
    if config.trainer == REPLAY:
        from tinyray.replay import check_replay

        check_replay(config.max_epochs, config.replay_speed)
    if not config.cpus_per_trial > 0:
        raise UserError(f"--cpus-per-trial must be positive, got {config.cpus_per_trial}")
    if not config.gpus_per_trial >= 0:
        raise UserError(f"--gpus-per-trial must be zero or positive, got {config.gpus_per_trial}")
    if config.gpus_per_trial > 1 and config.gpus_per_trial != int(config.gpus_per_trial):
        raise UserError(f"--gpus-per-trial {config.gpus_per_trial} must be a fraction below 1 or a whole number")
    for option, value in (("--cpus-per-trial", config.cpus_per_trial), ("--gpus-per-trial", config.gpus_per_trial)):
        if 0 < value < RESOURCE_PRECISION:
            raise UserError(f"{option} {value:g} is below Ray's precision of {RESOURCE_PRECISION}: give at least "
                            f"{RESOURCE_PRECISION} (or 0 for no GPU)")
        if value > 10_000:
            raise UserError(f"{option} {value:g} is more than any machine has: give the resources of one trial")
    if not str(config.storage).strip() or any(ord(ch) < 32 for ch in str(config.storage)):
        raise UserError(f"--storage {str(config.storage)!r} is empty or holds control characters: give a folder, "
                        f"e.g. --storage tinyray-results")
    parse_faults(os.environ.get("TINYRAY_FAULTS"))  # a bad drill is refused now, not by every trial
    if config.formula_name is not None and not _NAME_RE.fullmatch(config.formula_name):
        raise UserError(f"--formula-name {config.formula_name!r} must be letters, digits, '.', '_' or '-' (up to 64), "
                        f"e.g. --formula-name tinynet-formula")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", str(config.storage)):
        raise UserError(
            f"--storage {config.storage} is a URI; give a folder. On a cluster give a shared folder mounted at the "
            f"same path on every node (NFS, EFS), e.g. --storage /mnt/tinyray/results"
        )
    from tinyray.train import PRECISIONS

    if config.precision is not None and config.precision not in PRECISIONS:
        raise UserError(f"--precision {config.precision!r} is not one of {', '.join(PRECISIONS)} (or auto: the "
                        f"trial device's default)")
    if config.workers is not None:
        if isinstance(config.workers, bool) or not isinstance(config.workers, int) or config.workers < 0:
            raise UserError(f"--workers must be a whole number of at least 0, got {config.workers!r}")
        if config.workers > LIMITS["--workers"]:
            raise UserError(f"--workers must be at most {LIMITS['--workers']}, got {config.workers}")
    if not isinstance(config.channels_last, bool):
        raise UserError(f"channels_last must be True or False, got {config.channels_last!r}")
    from tinyray.progress import MODES

    if config.progress not in MODES:
        raise UserError(f"progress mode {config.progress!r} is not one of {', '.join(MODES)}")


#: Options that define a search: a resumed search keeps them (giving a different value is an error). The precision
#: is one (a checkpoint resumes only at the precision it was trained in); workers and channels-last change only
#: speed, so a resume may change them.
DEFINING = ("budget", "space", "data", "trials", "max_epochs", "grace_period", "reduction_factor", "searcher",
            "scheduler", "seed", "floor", "pop_size", "generations_ahead", "cpus_per_trial", "gpus_per_trial", "recipe", "formula_name",
            "retries", "trainer", "replay_speed", "precision")


def resume_config(storage: Path, name: str, given: dict[str, Any]) -> SearchConfig:
    """The configuration of the search ``storage/name`` (from its ``search.json``) for ``--resume``.

    Args:
        storage, name: where the search is.
        given: options the user gave this time. Those in :data:`DEFINING` must equal the stored ones; the others
            (``address``, ``tracking_uri``, ``progress``) replace them.

    Raises:
        UserError: if there is no such search, or a defining option differs.
    """
    import json

    from tinyray.data import DataSpec

    check_name(name)
    results = Path(storage).expanduser().resolve() / name
    path = results / "search.json"
    if not path.is_file():
        raise UserError(f"there is no search named {name!r} in {results.parent} to resume: check --name and --storage "
                        f"(or start it without --resume)")
    try:
        stored = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot resume {name!r}: {path} is damaged ({exc}); start a new --name") from None
    if isinstance(stored.get("data"), dict):
        spec = stored["data"]
        stored["data"] = DataSpec(**{**spec, **{k: Path(spec[k]) for k in ("path", "cache_dir") if spec.get(k)}})
    stored["storage"] = Path(storage)
    stored.setdefault("generations_ahead", 0)  # searches saved before the option existed bred none ahead
    for key, value in given.items():
        if key in DEFINING and value is not None and value != stored.get(key):
            option = "--" + key.replace("_", "-")
            raise UserError(f"{option} {value} differs from the search's {stored.get(key)}: resume without {option}, "
                            f"or start a new search with another --name")
    runtime = {key: value for key, value in given.items() if key not in DEFINING and value is not None}
    fields = set(SearchConfig.__dataclass_fields__)
    return SearchConfig(**{**{k: v for k, v in stored.items() if k in fields}, **runtime})


def _mark_interrupted(tracker: Any, parent_run_id: str | None, results: Path) -> None:
    """Say everywhere that the search stopped before its end (MLflow, ``tracking.json``, ``search.json``)."""
    tracker.interrupt(parent_run_id)
    try:
        _write_info(results, {**_read_info(results), "status": "interrupted"})
    except (OSError, UserError) as exc:  # a full disk: tracking.json and Tune's snapshot still tell the state
        log.warning("cannot mark %s interrupted: %s", results / "search.json", exc)


def resume_command(config: SearchConfig) -> str:
    """The command that continues the search ``config`` (printed after Ctrl-C)."""
    import shlex

    return (f"tinyray search --resume --name {shlex.quote(config.name)} "
            f"--storage {shlex.quote(str(config.results_dir.parent))}")


LOCK_NAME = "driver.lock"


def _own(results: Path) -> Any:
    """Take the search folder for this driver: an exclusive ``flock`` on ``driver.lock``, held until closed.

    Two drivers on one folder would corrupt Tune's state and duplicate MLflow runs; the second is refused. The
    kernel drops the lock when the holder dies (even by SIGKILL), so a crash never leaves the folder locked.
    """
    import fcntl

    handle = open(results / LOCK_NAME, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"the search in {results} is being run by another tinyray process (pid {holder}): wait "
                        f"for it to end, or stop it and run --resume again") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _check_unfinished(config: SearchConfig) -> None:
    """Refuse to resume a search that finished (a resume would publish its formula and metrics a second time), or
    one whose Tune state is lost (it would start over without saying so)."""
    results = config.results_dir
    if _read_info(results).get("status") == "finished" or (results / "summary.json").is_file():
        raise UserError(f"search {config.name!r} is already finished: nothing to resume (its results are in "
                        f"{results}, 'tinyray report {results}'); start another --name to search again")
    # trials ran but Tune's state is gone (a full disk, a deleted file): a resume would silently start over
    if not (results / "tuner.pkl").is_file() and any(results.glob(f"{TRIAL_FOLDER_PREFIX}*")):
        raise UserError(f"cannot resume {config.name!r}: Ray Tune's state (tuner.pkl) is missing in {results} "
                        f"although trials ran; its finished trials are in {results}/trial_*; start a new --name")
    if (results / "tuner.pkl").is_file() and (results / "tuner.pkl").stat().st_size == 0:
        raise UserError(f"cannot resume {config.name!r}: Ray Tune's state {results / 'tuner.pkl'} is empty (the "
                        f"disk was full?); its finished trials are in {results}/trial_*; start a new --name")


def _check_results_dir(config: SearchConfig) -> None:
    """Refuse an existing search, or a results root that cannot hold folders, without writing anything."""
    results = config.results_dir
    if results.exists() and (not results.is_dir() or any(results.iterdir())):
        raise UserError(
            f"a search named {config.name!r} already exists in {results}: continue it with --resume, choose another "
            f"--name, or delete that folder to start over"
        )
    ancestor = results.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write results under {ancestor}: it is not a writable folder; choose another --storage")


def _check_address(config: SearchConfig) -> None:
    """Fail fast, before anything is loaded or written, when ``--address``/``RAY_ADDRESS`` has nothing listening."""
    address = config.address or os.environ.get("RAY_ADDRESS") or ""
    if address.strip():
        from tinyray.tune.runtime import check_ray_address

        check_ray_address(address.strip())


def _prepare_results_dir(config: SearchConfig) -> Path:
    _check_results_dir(config)
    results = config.results_dir
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write results to {results}: {exc.strerror}; choose a writable --storage")
    return results


def run_search(config: SearchConfig, resume: bool = False) -> SearchResult:
    """Run a whole search and write its results (see the module docstring).

    Args:
        config: the search.
        resume: continue the search ``config.name`` after its driver died (Ctrl-C, SIGKILL, a reboot): finished
            trials are kept, interrupted ones continue from their last epoch's checkpoint, the searcher's state
            and the trial -> MLflow run mapping are restored (see :func:`resume_config` for the configuration).
    """
    started = time.monotonic()
    config, lock = _admit(config, resume)
    from tinyray.tune.callbacks import DiskFull
    from tinyray.tune.runtime import check_resources, start_ray, stop_ray

    try:
        driver = _Driver(config.results_dir, lock, _read_info(config.results_dir) if resume else {})
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    try:
        inputs, started_ray = _start(config, start_ray, stop_ray)
    except BaseException:
        driver.release()
        raise
    stopping = None
    try:
        check_resources(config)  # before anything is written: a trial Ray cannot place would wait for ever
        params = search_params(config, inputs.space, inputs.data, inputs.data_spec, inputs.recipe,
                               inputs.core.band.floor)
        if not resume:
            driver.create(config, inputs, params)
        tracking_uri = _open_tracking(config, driver, params, resume)
        trials = _run_trials(config, inputs, driver, resume)
        if started_ray:
            # the trials are over and the rest needs no Ray: stop it (about 5 s, mostly waiting for its processes)
            # while the front, the formula and the report are made
            stopping = stop_in_background(stop_ray)
        return _finish(config, trials, driver.tracker, driver.parent_run_id, tracking_uri, started, inputs.space,
                       inputs.data.num_classes)
    except (DiskFull, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno != errno.ENOSPC:
            raise
        raise _disk_full(config, driver, exc) from None
    finally:
        if stopping is not None:
            stopping.join()
        elif started_ray:
            stop_ray()
        driver.release()  # releases the folder (the kernel does so too if this process dies)


def stop_in_background(stop_ray: Callable[[], None]) -> threading.Thread:
    """Start ``stop_ray`` in a thread, once the garbage of this thread is collected.

    Tune leaves its objects in reference cycles that hold Ray handles. Freed by a collection in this thread after
    Ray stopped, such a handle makes Ray's core worker end the process on the spot: exit status 1, no message, the
    buffered stdout lost. That happened in about half of the resumed drivers of ``tinyray bench scale`` (2026-12-07:
    a full collection started in the main thread while the stop ran, and never returned), so the cycles are
    collected here, while Ray is up.
    """
    gc.collect()
    stopping = threading.Thread(target=stop_ray, name="tinyray-stop-ray", daemon=True)
    stopping.start()
    return stopping


def _start(config: SearchConfig, start_ray: Any, stop_ray: Any) -> tuple["_Inputs", bool]:
    """Load the search's inputs (:func:`_load_inputs`) in a thread while Ray starts in this one; the inputs, and
    whether this driver started Ray.

    Starting a local Ray is mostly waiting for its processes (5-6 s on 2 cores), and loading the inputs is mostly
    importing torch and timm and reading the data (about 5 s), so side by side they take the longer of the two
    (``tinyray bench overhead``, docs/benchmarks.md, session 13). ``ray.init`` stays on the main thread, where it
    sets its SIGTERM handler. If both fail, the inputs' error is the one raised (it was first when they ran one
    after the other); if the inputs fail, a Ray this driver started is stopped.
    """
    classes = _check_inputs(config)  # a wrong space or data folder is said at once, not after Ray's start
    loading = _Background(_load_inputs, config, classes)
    _quiet_tune_output()
    try:
        started_ray = start_ray(config.address)
    except KeyboardInterrupt:
        raise
    except BaseException:
        loading.result()  # the inputs' error first, as before
        raise
    try:
        return loading.result(), started_ray
    except BaseException:
        if started_ray:
            stop_ray()
        raise


class _Background:
    """``function(*args)`` in a daemon thread; :meth:`result` waits for it and returns its value or raises its
    exception in the caller's thread."""

    def __init__(self, function: Any, *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = function(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
                self._error = exc

        self._thread = threading.Thread(target=run, name=f"tinyray-{getattr(function, '__name__', 'background')}",
                                        daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _admit(config: SearchConfig, resume: bool) -> tuple[SearchConfig, Any]:
    """Check the search before anything is loaded or written: its options, its results folder and ``--address``.

    Returns:
        The configuration without a password in ``tracking_uri``, and on ``resume`` the lock of its results
        folder (one driver a search folder, from here to the end); else ``None`` (the folder does not exist yet).
    """
    from dataclasses import replace

    from tinyray.tracking import use_credentials

    validate(config)
    if config.formula_name is None:
        from tinyray.space import load_space

        config = replace(config, formula_name=default_model_name(load_space(config.space).name))
    # a password in --tracking-uri goes to MLflow's environment variables, never into the config Tune may pickle
    config = replace(config, tracking_uri=use_credentials(config.tracking_uri))
    if not resume:
        _check_results_dir(config)
    _check_address(config)  # before anything is written: a dead --address must not leave a half-made search
    if not resume:
        return config, None
    _check_unfinished(config)  # before the lock: a finished search's folder is left exactly as it is
    return config, _own(config.results_dir)


@dataclass(frozen=True)
class _Inputs:
    """What a search loads before Ray starts: the space, the data (prepared once), the recipe and the searcher."""

    space: Any
    data_spec: Any
    data: Any
    recipe: str
    core: Any


def _check_inputs(config: SearchConfig) -> tuple[str, ...] | None:
    """The quick checks of :func:`_load_inputs`: the space file and the data spec, and a data folder's tree
    (:func:`tinyray.data.check_image_folder`); the folder's class names, which :func:`_load_inputs` hands on so that
    the tree is walked once, or ``None`` for synthetic data."""
    from tinyray.data import FOLDER, check_image_folder, resolve_data
    from tinyray.space import load_space

    load_space(config.space)
    spec = resolve_data(config.data)
    if spec.kind == FOLDER and spec.path is not None:
        return check_image_folder(Path(spec.path))
    return None


def _load_inputs(config: SearchConfig, classes: tuple[str, ...] | None = None) -> _Inputs:
    import numpy as np

    from tinyray.data import load_data, resolve_data
    from tinyray.searchers import make_searcher
    from tinyray.space import load_space

    space = load_space(config.space)
    data_spec = resolve_data(config.data)
    data = load_data(data_spec, classes=classes)  # generates and caches the built-in data once, before any trial
    core = make_searcher(
        config.searcher, space, config.budget, floor=config.floor, seed=config.seed,
        pop_size=config.pop_size, ahead=config.generations_ahead, trials=config.trials, num_classes=data.num_classes,
        resolution_fn=data.train_resolution_fn(space),
    )
    core.band.sample(np.random.default_rng(config.seed))  # a band without networks is refused now, not in Tune
    _import_tracking(config)
    return _Inputs(space, data_spec, data, config.recipe or default_recipe(data), core)


def _import_tracking(config: SearchConfig) -> None:
    """Import what the search's MLflow client will need (about 2.5 s, while Ray starts: :func:`_start`); nothing
    is written (the store is made after Ray has said it can place the trials)."""
    import mlflow  # noqa: F401

    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:"
    if uri.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def _quiet_tune_output() -> None:
    """Ray Tune's environment for tinyray's own progress display (set only where the user did not set it)."""
    # Tune's own console table would fight the progress display; the trial loggers (result.json) stay on.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # a trial's second checkpoint since the last experiment snapshot forces one (CheckpointConfig(num_to_keep=2)):
    # that keeps a resume close to where the driver died, and at scale they are frequent by design, so Tune's
    # warning about it is noise here
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # a failing trial is one line of tinyray's (progress.py) with the path of its full trace, not Ray's 300 lines
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")


@dataclass
class _Driver:
    """What the driver of a running search holds, for the later steps and the error paths: the results folder,
    its lock, ``search.json`` as read or written, and the tracker with the parent run (once tracking started)."""

    results: Path
    lock: Any
    info: dict[str, Any]
    tracker: Any = None
    parent_run_id: str | None = None

    def create(self, config: SearchConfig, inputs: _Inputs, params: dict[str, Any]) -> None:
        """A new search: make its results folder, lock it and write ``search.json``."""
        self.results = _prepare_results_dir(config)
        self.lock = _own(self.results)
        self.info = _write_search_info(config, self.results, inputs.space, inputs.data, inputs.recipe, params)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()


def _open_tracking(config: SearchConfig, driver: _Driver, params: dict[str, Any], resume: bool) -> str:
    """Start the parent MLflow run (a resumed search reopens its own) and note its id in ``search.json``.

    Returns:
        The tracking URI, without credentials.
    """
    try:
        driver.tracker, driver.parent_run_id, tracking_uri = _start_tracking(config, driver.results,
                                                                         driver.info.get("parent_run_id"), params)
    except UserError:
        if not resume:  # nothing ran yet: leave no half-made search behind
            import shutil

            shutil.rmtree(driver.results, ignore_errors=True)
        raise
    if driver.info.get("parent_run_id") != driver.parent_run_id:
        _write_info(driver.results, {**driver.info, "parent_run_id": driver.parent_run_id})
    return tracking_uri


def _run_trials(config: SearchConfig, inputs: _Inputs, driver: _Driver, resume: bool) -> "pd.DataFrame":
    """Run the Tune experiment; its trials table (:func:`tinyray.tune.runtime.trials_table`).

    Raises:
        Interrupted: the search was stopped (Ctrl-C); the parent run is marked and the finished trials are kept.
    """
    from tinyray.tune.runtime import run_tune, trials_table

    try:
        grid, interrupted = run_tune(config, inputs.space, inputs.data, inputs.data_spec, inputs.recipe, inputs.core,
                                     driver.tracker, driver.parent_run_id, resume)
    except KeyboardInterrupt:  # a second Ctrl-C: Tune skipped its last snapshot; the one before it stays
        interrupted = True
    if interrupted:
        _mark_interrupted(driver.tracker, driver.parent_run_id, driver.results)
        raise Interrupted(f"search {config.name!r} stopped; its finished trials are kept. Continue it with: "
                          f"{resume_command(config)}")
    return trials_table(grid, config.max_epochs, config.trainer)


def _disk_full(config: SearchConfig, driver: _Driver, exc: BaseException) -> UserError:
    """Mark the parent run interrupted (if tracking started) and say how to continue once there is space."""
    if driver.tracker is not None:
        _mark_interrupted(driver.tracker, driver.parent_run_id, driver.results)
    return UserError(f"no space left on device for the search {config.name!r} ({str(exc)[:200]}): what finished "
                     f"is kept; free some space under {config.results_dir.parent}, then continue it with: "
                     f"{resume_command(config)}")


def _redact(uri: str | None) -> str | None:
    """A URI without the ``user:password@`` part, fit to be written down or logged."""
    from tinyray.tracking import redact_uri

    return redact_uri(uri)


def _write_search_info(config: SearchConfig, results: Path, space: Any, data: Any, recipe: str,
                       params: dict[str, Any]) -> dict[str, Any]:
    """``search.json``: what the search was, so that its results folder can be read back (and resumed) on its own.

    ``run_params`` are the parent MLflow run's parameters (:func:`search_params`), which ``tinyray publish`` sends
    as they are.
    """
    from dataclasses import asdict

    from tinyray.cost import base_flops

    stored = asdict(config)
    stored["tracking_uri"] = _redact(config.tracking_uri)
    info = {
        "version": SEARCH_INFO_VERSION, "config": stored, "space_file": str(space.source), "space": space.name, "data": data.name,
        "num_classes": data.num_classes, "base_flops": base_flops(space, data.num_classes), "recipe": recipe,
        "run_params": params,
    }
    _write_info(results, info)
    return info


def _write_info(results: Path, info: dict[str, Any]) -> None:
    write_json_atomic(results / "search.json", info)


def _read_info(results: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((results / "search.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot resume: {results / 'search.json'} is unreadable ({exc}); start a new --name") from None


def search_params(config: SearchConfig, space: Any, data: Any, data_spec: Any, recipe: str,
                  floor: float) -> dict[str, Any]:
    """The parameters of the search's MLflow run: its settings, then the data spec's fields as ``data_<field>``.

    The data spec has fields of its own named like the search's (``seed`` is the synthetic generator's seed, not the
    search's), so they are prefixed rather than merged.
    """
    from tinyray.cost import base_flops, format_flops
    from tinyray.data import spec_summary

    return {
        "budget": config.budget, "budget_text": format_flops(config.budget), "space": space.name,
        "space_file": space.source, "data": data.name, "searcher": config.searcher,
        "scheduler": config.scheduler, "seed": config.seed, "trials": config.trials,
        "max_epochs": config.max_epochs, "grace_period": config.grace_period,
        "reduction_factor": config.reduction_factor, "pop_size": config.pop_size, "floor": floor,
        **({"generations_ahead": config.generations_ahead} if config.generations_ahead else {}),
        "recipe": recipe, "cpus_per_trial": config.cpus_per_trial, "gpus_per_trial": config.gpus_per_trial,
        "retries": config.retries, "base_flops": base_flops(space, data.num_classes), "trainer": config.trainer,
        **({"replay_speed": config.replay_speed} if config.trainer == REPLAY else {}),
        "precision": config.precision or "auto", "workers": config.workers,
        "channels_last": config.channels_last,
        **{f"data_{key}": value for key, value in spec_summary(data_spec).items()},
    }


def _start_tracking(config: SearchConfig, results: Path, parent_run_id: str | None,
                    params: dict[str, Any]) -> tuple[Any, str | None, str]:
    from tinyray.tracking import Tracker, local_artifact_root, local_tracking_uri

    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri(config.storage)
    artifacts = None if config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") else local_artifact_root(config.storage)
    # never raises: an unreachable server leaves the tracker offline and the search keeps going (see Tracker)
    tracker = Tracker(uri, config.name, artifact_location=artifacts, journal=results / "tracking.json")
    description = (
        (f"{REPLAY_NOTE}. " if config.trainer == REPLAY else "") +
        f"tinyray search {config.name}: {config.trials} trials of (r, d, w) under {params['budget_text']} FLOPs "
        f"on {params['data']} ({config.searcher} searcher, {config.scheduler} scheduler). "
        f"Child runs are trials; files: trials.csv, front.csv, front.png, formula.json, formula.png and the "
        f"formula_model (an MLflow pyfunc: FLOPs budget -> r, d, w, resolution)."
    )
    # the tracker's URI: without credentials (those went to MLflow's environment variables)
    if parent_run_id and tracker.reopen(parent_run_id):
        return tracker, parent_run_id, tracker.tracking_uri  # a resumed search logs into its own parent run
    parent = tracker.start_search(config.name, params, description)
    return tracker, parent, tracker.tracking_uri


def _write_csv(frame: "pd.DataFrame", path: Path) -> Path:
    return write_text_atomic(path, frame.to_csv(index=False))


def _fit_in_background(config: SearchConfig, front: "pd.DataFrame", space: Any, num_classes: int) -> "_Background | None":
    """Start fitting the tiny formula on the front (GP fits and their leave-one-out, about 2.5 s) in a thread, while
    the driver writes the front's files; None if the front is too small to fit."""
    from tinyray.formula import MIN_POINTS, fit_formula

    if len(front) < MIN_POINTS:
        return None
    return _Background(lambda: fit_formula(front, space, num_classes, seed=config.seed,
                                           source=str(config.results_dir), budget=config.budget))


def _publish_formula(config: SearchConfig, front: "pd.DataFrame", fitting: "_Background | None", tracker: Any,
                     parent_run_id: str) -> tuple[dict[str, Any] | None, str]:
    """Publish the tiny formula fitted on the front (:func:`_fit_in_background`), and answer the search's budget
    (None and why if it cannot)."""
    from tinyray.formula import MIN_POINTS, publish

    if fitting is None:
        return None, f"not fitted: the front has {len(front)} point(s), the formula needs {MIN_POINTS} (run more --trials)"
    formula = fitting.result()
    title = f"{config.name}: tiny formula fitted on {formula.points_note()}"
    if config.trainer == REPLAY:
        title = f"{title} (REPLAY of recorded curves, --trainer replay: not a real search)"
    published = tracker.attempt("publishing the formula", publish, formula, tracker, parent_run_id,
                                config.results_dir, model_name=config.formula_name, title=title, search=config.name)
    if published is None:  # tracking is offline: keep the files; `tinyray publish` sends them and the model later
        from tinyray.formula import plot_formula

        formula.save(config.results_dir / "formula.json")
        plot_formula(formula, config.results_dir / "formula.png", title)
        published = {"model_uri": None, "run_model_uri": None}
    answer = formula.answer(config.budget)
    gp = {row["model"]: row for row in formula.loo}
    best = {target: f"gp {curve.inputs} {curve.kernel}" for target, curve in formula.curves.items()}
    rmse = formula.loo_rmse()
    tracker.log_metrics(parent_run_id, {
        "formula_r": answer.r, "formula_d": answer.d, "formula_w": answer.w, "formula_flops": answer.flops,
        "loo_r_rmse_gp": rmse["r"], "loo_d_rmse_gp": rmse["d"],
        "loo_r_rmse_linear": gp["linear"]["r_rmse"], "loo_d_rmse_linear": gp["linear"]["d_rmse"],
        "loo_r_rmse_loglinear": gp["log-linear"]["r_rmse"], "loo_d_rmse_loglinear": gp["log-linear"]["d_rmse"],
    })
    tracker.set_tags(parent_run_id, {"formula_model_uri": published["model_uri"],
                                     "formula_r_curve": best["r"], "formula_d_curve": best["d"]})
    if published["model_uri"]:  # the experiment links to its model (the report's description says it too)
        tracker.tag_experiment({"formula_model_uri": published["model_uri"]})
    return {"answer": answer.as_dict(), "model_uri": published["model_uri"],
            "run_model_uri": published["run_model_uri"], "curves": best}, ""


def _finish(config: SearchConfig, trials: "pd.DataFrame", tracker: Any, parent_run_id: str, tracking_uri: str,
            started: float, space: Any, num_classes: int) -> SearchResult:
    from tinyray.front import front_table, hypervolume, plot_front
    from tinyray.tracking import front_tags

    results = config.results_dir
    front = front_table(trials)
    volume = hypervolume(front["top1"].to_numpy(), front["flops"].to_numpy(), config.budget) if not front.empty else 0.0
    trials = trials.assign(on_front=trials["trial_id"].isin(set(front["trial_id"])))
    fitting = _fit_in_background(config, front, space, num_classes)  # beside the files and plot below
    files = {
        "trials": _write_csv(trials, results / "trials.csv"),
        "front": _write_csv(front, results / "front.csv"),
        "plot": plot_front(trials, front, config.budget, results / "front.png",
                           title=f"{config.name}: {len(trials)} trials, budget {config.budget / 1e6:g}M FLOPs"),
    }
    tracker.log_artifacts(parent_run_id, files.values())
    formula, formula_note = _publish_formula(config, front, fitting, tracker, parent_run_id)
    if formula is not None:
        files.update(formula_json=results / "formula.json", formula_plot=results / "formula.png")
    known = set(trials["trial_id"])
    for run in tracker.runs():
        trial_id = run.data.tags.get("trial_id")
        if trial_id is None or run.data.tags.get("tinyray.search_id", tracker.search_id) != tracker.search_id:
            continue
        if trial_id in known:
            tracker.set_tags(run.info.run_id, front_tags(trial_id in set(front["trial_id"])))
        elif run.data.tags.get("status") != "lost":
            # the driver died after this trial started but before Ray Tune's last snapshot: Tune restored the
            # search without it, so it has no results; say so rather than leave a run that looks alive
            tracker.set_tags(run.info.run_id, {"status": "lost", **front_tags(False)})
            tracker.finish(run.info.run_id, "KILLED")
    wall = time.monotonic() - started
    tracker.log_metrics(parent_run_id, {"hypervolume_final": volume, "front_size_final": len(front),
                                        "wall_seconds": wall}, step=len(trials))
    result = SearchResult(
        config=config, trials=trials, front=front, hypervolume=volume, wall_seconds=wall,
        tracking_uri=tracking_uri, experiment_id=tracker.experiment_id, parent_run_id=parent_run_id, files=files,
        formula=formula, formula_note=formula_note, tracking_offline=tracker.offline_reason,
    )
    from tinyray.report import finish_search

    files.update(finish_search(result, tracker))  # importance analysis, report.html, the parent run's description
    tracker.finish(parent_run_id)
    _write_info(results, {**_read_info(results), "status": "finished"})  # a later --resume changes nothing
    return result
