"""The search: Ray Tune trials over the cube, proposed by the searcher, pruned by the scheduler, tracked in MLflow.

``run_search(SearchConfig(...))`` (and :func:`search`, its keyword-argument twin) does, in order:

1. validate everything a user gave (budget, space, data, sizes, results folder) before anything is started;
2. start or join Ray, prepare the dataset once (cached on disk; each trial process loads it once);
3. run the Tune experiment: :mod:`tinyray.searcher` proposes (r, d, w) under the budget, ASHA (or FIFO) stops
   trials early, :mod:`tinyray.trial` trains them, :mod:`tinyray.tracking` mirrors them into MLflow;
4. write ``trials.csv``, ``front.csv`` and ``front.png`` into the results folder and onto the parent run.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyray.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SEARCHERS = ("nsga3", "random")
SCHEDULERS = ("asha", "fifo")
TRIAL_COLUMNS = [
    "trial_id", "r", "d", "w", "resolution", "train_resolution", "flops", "params", "epochs", "top1",
    "status", "node_id", "train_seconds",
]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
        searcher: ``nsga3`` or ``random`` (the paper's protocol: random sampling under the FLOPs budget).
        scheduler: ``asha`` or ``fifo`` (train every trial fully).
        seed: seed of the searcher and of every trial.
        floor: lowest FLOPs a candidate may have (default budget / 16).
        pop_size: NSGA-III population per generation.
        cpus_per_trial, gpus_per_trial: resources of one trial (fractional GPUs share a device).
        recipe: training recipe (default: ``proxy`` on built-in data, ``paper`` on folders).
        address: an existing Ray cluster (``auto`` or ``host:port``); default ``RAY_ADDRESS`` or a local Ray.
        tracking_uri: MLflow server; default ``MLFLOW_TRACKING_URI`` or the local store in ``storage``.
        progress: ``live``, ``quiet`` or ``json``.
    """

    budget: int
    name: str = "search"
    storage: Path = Path("tinyray-results")
    space: str | None = None
    data: str | None = None
    trials: int = 30
    max_epochs: int = 3
    grace_period: int = 1
    reduction_factor: int = 3
    searcher: str = "nsga3"
    scheduler: str = "asha"
    seed: int = 0
    floor: int | None = None
    pop_size: int = 10
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    recipe: str | None = None
    address: str | None = None
    tracking_uri: str | None = None
    progress: str = "live"

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
    experiment_id: str
    parent_run_id: str
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def results_dir(self) -> Path:
        return self.config.results_dir

    def ui_command(self) -> str:
        """The command that opens the MLflow UI on this search's runs."""
        import shlex

        from tinyray.tracking import experiment_page, local_tracking_uri

        if self.tracking_uri.startswith(("http://", "https://")):
            return f"open '{experiment_page(self.tracking_uri, self.experiment_id)}'"
        command = f"tinyray ui {shlex.quote(str(self.results_dir))}"
        if self.tracking_uri != local_tracking_uri(self.config.storage):
            command += f" --tracking-uri {shlex.quote(self.tracking_uri)}"
        return command

    def counts(self) -> dict[str, int]:
        status = self.trials["status"].value_counts()
        return {key: int(status.get(key, 0)) for key in ("completed", "early-stopped", "failed")}

    def best(self) -> dict[str, Any] | None:
        """The most accurate completed trial under the budget."""
        done = self.trials[(self.trials["status"] == "completed") & (self.trials["flops"] <= self.config.budget)]
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
        }

    def report(self) -> str:
        """Human-readable closing lines: the front, the best trial, where the results are, how to browse them."""
        from tinyray.cost import format_flops

        counts = self.counts()
        lines = [
            f"search {self.config.name!r}: {len(self.trials)} trials in {self.wall_seconds / 60:.1f} min "
            f"({counts['completed']} completed, {counts['early-stopped']} early-stopped, {counts['failed']} failed)",
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
        lines += [
            f"results: {self.results_dir} (report.html, trials.csv, front.csv, front.png)",
            f"browse:  {self.ui_command()}",
        ]
        return "\n".join(lines)


def search(budget: str | int | float, **options: Any) -> SearchResult:
    """Run a search from Python, with the CLI's options as keywords.

    Example:
        >>> result = tinyray.search("200M", trials=12, max_epochs=3)  # doctest: +SKIP
        >>> result.front[["r", "d", "w", "flops", "top1"]]  # doctest: +SKIP
    """
    from tinyray.cost import parse_budget

    if "storage" in options:
        options["storage"] = Path(options["storage"])
    return run_search(SearchConfig(budget=parse_budget(budget), **options))


def default_recipe(data: Any) -> str:
    """``proxy`` on the built-in data (fast, learns in a few epochs), the paper's recipe on real image folders."""
    return "proxy" if data.spec.kind == "synthetic" else "paper"


def validate(config: SearchConfig) -> None:
    """Check every option that does not need a running service; raise :class:`UserError` on the first bad one."""
    if not _NAME_RE.match(config.name):
        raise UserError(f"--name {config.name!r} must be letters, digits, '.', '_' or '-' (up to 64), e.g. --name b200")
    checks = [
        ("--trials", config.trials, 1), ("--max-epochs", config.max_epochs, 1), ("--grace-period", config.grace_period, 1),
        ("--reduction-factor", config.reduction_factor, 2), ("--pop-size", config.pop_size, 4),
    ]
    for option, value, low in checks:
        if not isinstance(value, int) or value < low:
            raise UserError(f"{option} must be a whole number of at least {low}, got {value!r}")
    if config.grace_period > config.max_epochs:
        raise UserError(f"--grace-period {config.grace_period} exceeds --max-epochs {config.max_epochs}: lower it or raise --max-epochs")
    if config.searcher not in SEARCHERS:
        raise UserError(f"--searcher {config.searcher!r} is not one of {list(SEARCHERS)}")
    if config.scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler {config.scheduler!r} is not one of {list(SCHEDULERS)}")
    if not config.cpus_per_trial > 0:
        raise UserError(f"--cpus-per-trial must be positive, got {config.cpus_per_trial}")
    if not config.gpus_per_trial >= 0:
        raise UserError(f"--gpus-per-trial must be zero or positive, got {config.gpus_per_trial}")
    if config.gpus_per_trial > 1 and config.gpus_per_trial != int(config.gpus_per_trial):
        raise UserError(f"--gpus-per-trial {config.gpus_per_trial} must be a fraction below 1 or a whole number")
    if config.progress not in ("live", "quiet", "json"):
        raise UserError(f"progress mode {config.progress!r} is not one of live, quiet, json")


def _prepare_results_dir(config: SearchConfig) -> Path:
    results = config.results_dir
    if results.exists() and any(results.iterdir()):
        raise UserError(
            f"a search named {config.name!r} already exists in {results}: choose another --name, "
            f"or delete that folder to start over"
        )
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write results to {results}: {exc.strerror}; choose a writable --storage")
    return results


def _start_ray(config: SearchConfig) -> bool:
    """Connect to the cluster at ``--address``/``RAY_ADDRESS``, or start a local Ray; return True if we started it."""
    import ray

    address = config.address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                                  configure_logging=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot connect to Ray at {where} ({first[:160]}): start it with 'ray start --head' or fix --address"
        ) from None
    return True


def _trial_params(space: Any, data: Any) -> Any:
    from tinyray.cost import analytic_cost
    from tinyray.cube import Candidate

    def describe(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        r, d, w = float(config["r"]), float(config["d"]), float(config["w"])
        cost = analytic_cost(space, r, d, w, data.num_classes)
        params = {"r": r, "d": d, "w": w, "resolution": cost.resolution, "flops": cost.flops, "params": cost.params,
                  "train_resolution": data.train_resolution(space, r)}
        return Candidate(r, d, w).label, params

    return describe


def run_search(config: SearchConfig) -> SearchResult:
    """Run a whole search and write its results (see the module docstring)."""
    started = time.monotonic()
    validate(config)

    from tinyray.cost import base_flops, format_flops
    from tinyray.data import load_data, resolve_data, spec_summary
    from tinyray.searcher import make_core
    from tinyray.space import load_space

    space = load_space(config.space)
    data_spec = resolve_data(config.data)
    data = load_data(data_spec)  # generates and caches the built-in data once, before any trial
    recipe = config.recipe or default_recipe(data)
    core = make_core(
        config.searcher, space, config.budget, floor=config.floor, seed=config.seed,
        pop_size=config.pop_size, num_classes=data.num_classes,
    )
    results = _prepare_results_dir(config)

    # Tune's own console table would fight the progress display; the trial loggers (result.json) stay on.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    started_ray = _start_ray(config)
    try:
        tracker, parent_run_id, tracking_uri = _start_tracking(config, results, {
            "budget": config.budget, "budget_text": format_flops(config.budget), "space": space.name,
            "space_file": space.source, "data": data.name, "searcher": config.searcher, "scheduler": config.scheduler,
            "seed": config.seed, "trials": config.trials, "max_epochs": config.max_epochs,
            "grace_period": config.grace_period, "reduction_factor": config.reduction_factor,
            "pop_size": config.pop_size, "floor": core.band.floor, "recipe": recipe,
            "cpus_per_trial": config.cpus_per_trial, "gpus_per_trial": config.gpus_per_trial,
            "base_flops": base_flops(space, data.num_classes), **spec_summary(data_spec),
        })
        grid = _run_tune(config, space, data, data_spec, recipe, core, tracker, parent_run_id)
        trials = _trials_table(grid, config)
        return _finish(config, trials, tracker, parent_run_id, tracking_uri, started)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _start_tracking(config: SearchConfig, results: Path, params: dict[str, Any]) -> tuple[Any, str, str]:
    from tinyray.tracking import Tracker, local_artifact_root, local_tracking_uri

    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri(config.storage)
    artifacts = None if config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") else local_artifact_root(config.storage)
    tracker = Tracker(uri, config.name, artifact_location=artifacts)
    description = (
        f"tinyray search {config.name}: {config.trials} trials of (r, d, w) under {params['budget_text']} FLOPs "
        f"on {params['data']} ({config.searcher} searcher, {config.scheduler} scheduler). "
        f"Child runs are trials; files: trials.csv, front.csv, front.png."
    )
    parent = tracker.start_search(config.name, params, description)
    return tracker, parent, uri


def _run_tune(config: SearchConfig, space: Any, data: Any, data_spec: Any, recipe: str, core: Any,
              tracker: Any, parent_run_id: str) -> Any:
    from ray import tune

    from tinyray.progress import Progress, make_monitor_callback
    from tinyray.searcher import make_tune_searcher
    from tinyray.tracking import make_tracking_callback
    from tinyray.trial import TrialSettings, run_trial

    settings = TrialSettings(
        space=str(space.source), data=data_spec, max_epochs=config.max_epochs, recipe=recipe, seed=config.seed,
        threads=max(1, int(config.cpus_per_trial)),
    )
    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings), resources)
    if config.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="training_iteration", max_t=config.max_epochs, grace_period=config.grace_period,
            reduction_factor=config.reduction_factor,
        )
    else:
        from ray.tune.schedulers import FIFOScheduler

        scheduler = FIFOScheduler()

    progress = Progress(budget=config.budget, max_epochs=config.max_epochs)

    def on_update(state: Progress) -> None:
        tracker.log_metrics(parent_run_id, {
            "hypervolume": state.hypervolume, "trials_done": state.done, "front_size": state.front_size,
            "trials_completed": state.completed, "trials_early_stopped": state.stopped, "trials_failed": state.failed,
            "elapsed_seconds": state.elapsed,
        }, step=state.done)

    callbacks = [
        make_tracking_callback(tracker, parent_run_id, config.max_epochs, _trial_params(space, data)),
        make_monitor_callback(progress, config.progress, on_update),
    ]
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric="top1", mode="max", search_alg=make_tune_searcher(core, max_epochs=config.max_epochs),
            scheduler=scheduler, num_samples=config.trials, reuse_actors=True,
            # one folder a trial, named by its id, so a trial that never reported is still identified
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=config.name, storage_path=str(Path(config.storage).expanduser().resolve()), callbacks=callbacks,
            verbose=0, failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    return tuner.fit()


def _trials_table(grid: Any, config: SearchConfig) -> "pd.DataFrame":
    import pandas as pd

    rows = []
    for result in grid:
        metrics = result.metrics or {}
        conf = result.config or {}
        epochs = int(metrics.get("training_iteration", 0) or 0)
        if result.error is not None:
            status = "failed"
        elif epochs >= config.max_epochs:
            status = "completed"
        else:
            status = "early-stopped"
        rows.append({
            "trial_id": metrics.get("trial_id") or Path(result.path).name.removeprefix("trial_"),
            "r": conf.get("r"), "d": conf.get("d"), "w": conf.get("w"),
            "resolution": metrics.get("resolution"), "train_resolution": metrics.get("train_resolution"),
            "flops": metrics.get("flops"), "params": metrics.get("params"), "epochs": epochs,
            "top1": metrics.get("top1"), "status": status, "node_id": metrics.get("node_id"),
            "train_seconds": metrics.get("time_total_s"),
        })
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def _write_csv(frame: "pd.DataFrame", path: Path) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def _finish(config: SearchConfig, trials: "pd.DataFrame", tracker: Any, parent_run_id: str, tracking_uri: str,
            started: float) -> SearchResult:
    from tinyray.front import front_table, hypervolume, plot_front

    results = config.results_dir
    front = front_table(trials)
    volume = hypervolume(front["top1"].to_numpy(), front["flops"].to_numpy(), config.budget) if not front.empty else 0.0
    trials = trials.assign(on_front=trials["trial_id"].isin(set(front["trial_id"])))
    files = {
        "trials": _write_csv(trials, results / "trials.csv"),
        "front": _write_csv(front, results / "front.csv"),
        "plot": plot_front(trials, front, config.budget, results / "front.png",
                           title=f"{config.name}: {len(trials)} trials, budget {config.budget / 1e6:g}M FLOPs"),
    }
    tracker.log_artifacts(parent_run_id, files.values())
    for run in tracker.runs():
        trial_id = run.data.tags.get("trial_id")
        if trial_id is not None:
            tracker.set_tags(run.info.run_id, {"on_front": str(trial_id in set(front["trial_id"])).lower()})
    wall = time.monotonic() - started
    tracker.log_metrics(parent_run_id, {"hypervolume_final": volume, "front_size_final": len(front),
                                        "wall_seconds": wall}, step=len(trials))
    result = SearchResult(
        config=config, trials=trials, front=front, hypervolume=volume, wall_seconds=wall,
        tracking_uri=tracking_uri, experiment_id=tracker.experiment_id, parent_run_id=parent_run_id, files=files,
    )
    from tinyray.report import finish_search

    files.update(finish_search(result, tracker))  # importance analysis, report.html, the parent run's description
    tracker.finish(parent_run_id)
    return result
