"""``tinyray compare``: does the formula's network beat the obvious ones at equal FLOPs? The paper's Table 1.

All contenders are networks of one search space (``--space``, default the search's), whatever its family; the
formula and the search's trials must come from a search on that space (:func:`check_space`). For each budget,
the contenders (:data:`CONTENDERS`, one builder a name) are placed at the budget by the exact analytic count,
each within :data:`tinyray.scaling.TOLERANCE` (1%) below it:

* ``formula``: the tiny formula's answer (:meth:`tinyray.formula.Formula.answer`, under the formula's policy for
  answers outside: refused unless ``--allow-outside``);
* ``compound``: compound scaling run backwards with the coefficients of the base's family, phi < 0 solved for
  the budget (:func:`tinyray.scaling.solve_phi`; on EfficientNet-B0, B-1 and B-2 of the paper); left out, with
  the reason, for a family that defines none;
* ``base-r``, ``base-d``, ``base-w``: the base network (r = d = w = 1) shrunk along one dimension to the step
  just above the budget (:func:`tinyray.scaling.shrink`);
* ``search-best``: the most accurate trial the search trained fully under the budget.

A rule rarely lands within 1% by itself (FLOPs move in steps; see :mod:`tinyray.scaling`), so a contender that
misses is finished by :func:`tinyray.scaling.solve_network` at its r and d: its width, and if that is not enough
the nearest input sides. Its ``note`` says what the rule gave and what was solved, and the table shows the final
r, d and w. A contender that still misses, or whose rule has no network for the budget, is left out with its
reason; a budget that no contender meets is refused.

Every contender is trained as a default trial of the search is (its data, epochs, recipe and one CPU thread,
through :func:`tinyray.fidelity.train_net`) for each seed, as Ray tasks on the cluster a search uses
(:func:`tinyray.tune.runtime.run_tasks`). The verdict compares the formula's mean top-1 with each other
contender's: a difference beyond two standard errors is a win or a loss, anything less a tie. A standard error is
taken from the seeds' spread, but never below the binomial noise of one top-1 on the validation set, so that one
seed (or seeds that happen to agree) does not make noise look like a result.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tinyray.errors import UserError
from tinyray.files import write_json_atomic, write_text_atomic
from tinyray.scaling import TOLERANCE

if TYPE_CHECKING:
    import pandas as pd

    from tinyray.formula import Formula
    from tinyray.space import SearchSpace

#: Format version of ``compare.json``.
COMPARE_VERSION = 1
#: Files a comparison writes into the results folder (the report shows them when present).
FILES = {"table": "compare.csv", "runs": "compare_runs.csv", "plot": "compare.png", "json": "compare.json"}
#: A single-dimension shrink may be trimmed by at most this fraction of its FLOPs to meet the budget; beyond it
#: the trim would change the network more than the shrink did, and the contender is left out.
MAX_TRIM = 0.15
#: Standard errors a difference of mean top-1 must exceed to count as a win or a loss.
VERDICT_SE = 2.0


@dataclass(frozen=True)
class Contender:
    """A network placed at a budget.

    Attributes:
        name: the contender's key in :data:`CONTENDERS` (``formula``, ``compound``, ``base-r``, ...).
        label: how the table names it, e.g. ``compound phi=-1.22``.
        budget: FLOPs asked for (multiply-accumulates of one image).
        r, d, w: the network's multipliers.
        resolution: deployment input side, ``floor(224 r)``.
        flops, params: exact counts at the data's classes.
        note: what the rule gave and what was solved to meet the budget.
    """

    name: str
    label: str
    budget: int
    r: float
    d: float
    w: float
    resolution: int
    flops: int
    params: int
    note: str = ""

    @property
    def gap(self) -> float:
        """How far below the budget it is, as a fraction of the budget (negative: over it)."""
        return (self.budget - self.flops) / self.budget


@dataclass
class Context:
    """What the contenders are built from.

    Attributes:
        space: the search space every contender is a network of.
        num_classes: the data's classes (the FLOPs of every contender count them).
        formula: the tiny formula.
        trials: the search's ``trials.csv`` (None without a results folder).
        allow_outside: take the formula's answer outside its fitted range or the cube.
    """

    space: "SearchSpace"
    num_classes: int
    formula: "Formula | None" = None
    trials: "pd.DataFrame | None" = None
    allow_outside: bool = False


def space_difference(space: "SearchSpace", found: "SearchSpace") -> str | None:
    """None if ``found`` is ``space`` (the same definition: family, base network, resolution and bounds), else how
    it differs, e.g. ``on 'efficientnet_b0', not on 'resnet50'``."""
    mine, theirs = space.to_dict(), found.to_dict()
    if mine == theirs:
        return None
    if found.name != space.name:
        return f"on {found.name!r}, not on {space.name!r}"
    keys = sorted(key for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key))
    return f"on another definition of {space.name!r} than {space.source} (it differs in {', '.join(keys)})"


def searches_on(storage: Path, space: "SearchSpace") -> list[Path]:
    """The results folders in ``storage`` whose formula was fitted on ``space``, newest first."""
    from tinyray.space import parse_space

    found = []
    for path in Path(storage).expanduser().glob("*/formula.json"):
        try:
            definition = json.loads(path.read_text())["space_definition"]
            if space_difference(space, parse_space(definition, str(path))) is None:
                found.append(path)
        except (OSError, ValueError, KeyError, TypeError, UserError):
            continue  # a damaged or foreign file is no search on the space
    return [path.parent for path in sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)]


def check_space(space: "SearchSpace", formula: "Formula", searched: str | None, where: str, fix: str) -> None:
    """Refuse a formula, or a search's results folder, that is not of ``space``.

    Args:
        space: the space the contenders are built in.
        formula: the formula to compare (its ``formula.json`` records the space it was fitted on).
        searched: the space name the results folder's ``search.json`` records (None if it records none).
        where: how to name the folder or formula in the message, e.g. ``the newest search in tinyray-results (b200M)``.
        fix: what to do instead, the end of the message.

    Raises:
        UserError: one line, ``where`` ran or was fitted on another space, and ``fix``.
    """
    if searched is not None and searched != space.name:
        raise UserError(f"{where} ran on {searched!r}, not on {space.name!r}: {fix}")
    other = space_difference(space, formula.space)
    if other:
        raise UserError(f"the formula of {where} was fitted {other}: {fix}")


def _place(ctx: Context, name: str, label: str, budget: int, r: float, d: float, w: float, note: str) -> Contender | str:
    """The contender at (r, d, w) if it is within the tolerance of ``budget``, else solved by
    :func:`~tinyray.scaling.solve_network` at (r, d) with widths inside the cube (a trim must not take a network
    the rule kept inside the cube out of it); a reason string if it still misses."""
    from tinyray.cost import analytic_cost, format_flops
    from tinyray.scaling import WIDTH_RANGE, solve_network

    cost = analytic_cost(ctx.space, r, d, w, ctx.num_classes)
    if not 0 <= budget - cost.flops <= TOLERANCE * budget:
        rule = f"r={r:.3f} d={d:.3f} w={w:.3f} costs {format_flops(cost.flops)}"
        widths = (WIDTH_RANGE[0], max(w, ctx.space.bounds()["w"].high))
        r, w, _, _ = solve_network(ctx.space, r, d, budget, ctx.num_classes, widths=widths)
        cost = analytic_cost(ctx.space, r, d, w, ctx.num_classes)
        note = f"{note}; {rule}, solved to r={r:.3f} w={w:.3f}".lstrip("; ")
    contender = Contender(name, label, budget, float(r), float(d), float(w), cost.resolution, cost.flops, cost.params,
                          note)
    if not 0 <= contender.gap <= TOLERANCE:
        return f"{format_flops(cost.flops)} FLOPs is {abs(contender.gap) * 100:.1f}% {'under' if contender.gap > 0 else 'over'} the budget"
    return contender


def formula_contender(ctx: Context, budget: int) -> Contender | str:
    """The tiny formula's network (refused outside its fitted range or the cube unless ``allow_outside``)."""
    from tinyray.formula import refuse_outside

    if ctx.formula is None:
        return "no formula: give --from a search's results folder or --model-uri"
    other = space_difference(ctx.space, ctx.formula.space)
    if other:  # check_space refuses this at the command line; a caller of plan() gets the reason
        return f"the formula was fitted {other}"
    answer = refuse_outside(ctx.formula.answer(budget, ctx.num_classes), ctx.allow_outside)
    note = f"OUTSIDE: {answer.outside}" if answer.outside else "inside the fitted range and the cube"
    label = "tiny formula (OUTSIDE)" if answer.outside else "tiny formula"
    return _place(ctx, "formula", label, budget, answer.r, answer.d, answer.w, note)


def compound_contender(ctx: Context, budget: int) -> Contender | str:
    """Inverse compound scaling by the coefficients of the base's family: the largest phi < 0 under the budget
    (a family without coefficients has no such contender: the reason says so)."""
    from tinyray.scaling import solve_phi

    try:
        point = solve_phi(ctx.space, budget, ctx.num_classes)
    except ValueError as exc:
        return str(exc)
    alpha, beta, gamma = (point.coefficients[key] for key in ("d", "w", "r"))
    return _place(ctx, "compound", f"compound phi={point.phi:+.2f}", budget, point.r, point.d, point.w,
                  f"phi={point.phi:.3f}: r={gamma:g}^phi={point.r:.3f} d={alpha:g}^phi={point.d:.3f} "
                  f"w={beta:g}^phi={point.w:.3f}")


def _shrink_contender(factor: str) -> Callable[[Context, int], Contender | str]:
    def build(ctx: Context, budget: int) -> Contender | str:
        from tinyray.cost import analytic_cost, format_flops
        from tinyray.scaling import shrink

        low = ctx.space.bounds()[factor].low
        floor = analytic_cost(ctx.space, **{"r": 1.0, "d": 1.0, "w": 1.0, factor: low}, num_classes=ctx.num_classes).flops
        if floor > budget:
            return (f"{ctx.space.name} with {factor} alone at its bound {low:g} still costs {format_flops(floor)}, "
                    f"more than {format_flops(budget)}")
        reasons = []
        # the step at or just above the budget (trimmed down by width), else the step just below it
        for at_least, where in ((True, "at or just above"), (False, "just below")):
            value = shrink(ctx.space, factor, budget, ctx.num_classes, at_least=at_least)
            if value is None:
                reasons.append(f"no {factor} {where} it inside the cube")
                continue
            point = {"r": 1.0, "d": 1.0, "w": 1.0, factor: value}
            step = analytic_cost(ctx.space, **point, num_classes=ctx.num_classes).flops
            if abs(step - budget) > MAX_TRIM * budget:
                reasons.append(f"the {factor} step {where} it costs {format_flops(step)}, more than {MAX_TRIM:.0%} off")
                continue
            placed = _place(ctx, f"base-{factor}", f"base, {factor} only", budget, point["r"], point["d"], point["w"],
                            f"{factor}={value:.3f} is the step {where} the budget")
            if isinstance(placed, Contender):
                return placed
            reasons.append(f"the {factor} step {where} it, trimmed, {placed}")
        return f"{ctx.space.name} shrunk along {factor} alone cannot meet {format_flops(budget)}: " + "; ".join(reasons)

    build.__doc__ = f"The base shrunk along {factor} alone to the step nearest the budget, then trimmed to meet it."
    return build


def search_best_contender(ctx: Context, budget: int) -> Contender | str:
    """The most accurate trial the search trained fully with FLOPs in ``[budget (1 - MAX_TRIM), budget]``, grown
    to the budget by width if it is further than the tolerance below (a network much further below is another
    size class: growing it would make a network the search never measured)."""
    from tinyray.cost import format_flops
    from tinyray.report import best_per_budget, completed_trials

    if ctx.trials is None:
        return "no results folder: give --from a search's results folder"
    near = completed_trials(ctx.trials)
    near = near[near["flops"] >= budget * (1 - MAX_TRIM)]
    best = best_per_budget(near, [budget])
    if best.empty:
        under = best_per_budget(ctx.trials, [budget])
        found = (f"its best under it: top-1 {float(under.iloc[0]['top1']):.3f} at {format_flops(under.iloc[0]['flops'])}"
                 if not under.empty else "none under it")
        return f"the search trained no network fully within {MAX_TRIM:.0%} below {format_flops(budget)} ({found})"
    trial = best.iloc[0]
    return _place(ctx, "search-best", f"search's best ({trial['trial_id']})", budget, float(trial["r"]),
                  float(trial["d"]), float(trial["w"]),
                  f"trial {trial['trial_id']}: top-1 {float(trial['top1']):.3f} at {format_flops(trial['flops'])} "
                  f"in the search")


#: The contenders, in the table's order: name -> builder ``(context, budget) -> Contender or reason``.
CONTENDERS: dict[str, Callable[[Context, int], Contender | str]] = {
    "formula": formula_contender,
    "compound": compound_contender,
    "base-r": _shrink_contender("r"),
    "base-d": _shrink_contender("d"),
    "base-w": _shrink_contender("w"),
    "search-best": search_best_contender,
}


def plan(ctx: Context, budgets: list[int], names: list[str]) -> tuple[list[Contender], list[dict[str, Any]]]:
    """The contenders of every budget, and those left out (``budget``, ``contender``, ``reason``).

    Raises:
        UserError: if some budget has no contender, or the formula's answer is outside and not allowed.
    """
    from tinyray.cost import base_flops, format_flops

    placed, left_out = [], []
    for budget in budgets:
        here = []
        for name in names:
            built = CONTENDERS[name](ctx, budget)
            if isinstance(built, Contender):
                here.append(built)
            else:
                left_out.append({"budget": budget, "contender": name, "reason": built})
        if not here:
            reasons = "; ".join(f"{row['contender']}: {row['reason']}" for row in left_out if row["budget"] == budget)
            raise UserError(f"no contender meets {format_flops(budget)} within {TOLERANCE:.0%} ({reasons}): "
                            f"give a budget between the search's smallest networks and the FLOPs of "
                            f"{ctx.space.name} ({format_flops(base_flops(ctx.space, ctx.num_classes))})")
        placed += here
    return placed, left_out


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareConfig:
    """A comparison (the CLI's options, resolved).

    Attributes:
        budgets: FLOPs budgets.
        results_dir: the search's results folder (outputs go there, runs into its MLflow experiment).
        contenders: names of :data:`CONTENDERS`.
        seeds: seeds 0..seeds-1 per contender.
        data: the dataset (a ``DataSpec``); epochs, recipe: the training of a default trial of the search.
        data_name: the dataset as people read it; val_size: its validation images (the verdict's binomial noise).
        space: the search space's name or file.
        tracking_uri: the MLflow store; experiment: its experiment (the search's name).
        artifact_location: where a new experiment keeps artifacts (the embedded store's folder), or None.
        address: a Ray cluster to join (default: ``RAY_ADDRESS`` or a local Ray).
        cpus_per_trial: Ray CPUs (and torch threads) of one training.
        quiet: no progress lines on stderr.
    """

    budgets: tuple[int, ...]
    results_dir: Path
    contenders: tuple[str, ...]
    seeds: int
    data: Any
    epochs: int
    recipe: str
    space: str
    tracking_uri: str
    experiment: str
    artifact_location: str | None = None
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    quiet: bool = False
    data_name: str = ""
    val_size: int = 0


@dataclass
class Comparison:
    """What a comparison measured.

    Attributes:
        table: one row a (budget, contender): its network, ``top1_mean``, ``top1_sd``, ``seeds``, ``note``.
        runs: one row a (budget, contender, seed) with its final top-1 and training time.
        verdicts: one line a budget.
        left_out: contenders that could not be placed, with why.
        files: what was written, by role.
        parent_run_id: the MLflow parent run (None if tracking was offline).
    """

    table: "pd.DataFrame"
    runs: "pd.DataFrame"
    verdicts: list[str]
    left_out: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    header: str = ""

    def text(self) -> str:
        """The table like the paper's, budget by budget, each followed by its verdict."""
        from tinyray.cost import format_flops

        lines = [self.header] if self.header else []
        for budget, rows in self.table.groupby("budget", sort=False):
            lines.append(f"{format_flops(budget)} FLOPs:")
            lines.append(f"  {'contender':<32} {'top-1':>15} {'FLOPs':>8} {'params':>7} {'r':>5} {'d':>5} {'w':>5} {'px':>4}")
            for row in rows.itertuples():
                spread = f"{row.top1_sd:.3f}" if row.seeds > 1 else "  -  "  # one seed has no spread to show
                lines.append(f"  {row.label:<32} {row.top1_mean:.3f} +- {spread} {format_flops(row.flops):>8} "
                             f"{row.params / 1e6:6.2f}M {row.r:5.3f} {row.d:5.3f} {row.w:5.3f} {row.resolution:4d}")
            lines += [line for line in self.verdicts if line.startswith(f"{format_flops(budget)}:")]
        for row in self.left_out:
            lines.append(f"left out at {format_flops(row['budget'])}: {row['contender']}: {row['reason']}")
        for role in ("table", "runs", "plot", "json"):
            if role in self.files:
                lines.append(f"{role}: {self.files[role]}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"version": COMPARE_VERSION, "header": self.header, "table": self.table.to_dict(orient="records"),
                "runs": self.runs.to_dict(orient="records"), "verdicts": self.verdicts, "left_out": self.left_out,
                "files": self.files, "parent_run_id": self.parent_run_id}


def standard_error(top1: "pd.Series", val_size: int) -> float:
    """Standard error of a mean top-1 over seeds: the seeds' spread, at least the binomial noise of one top-1."""
    mean = float(top1.mean())
    binomial = mean * (1 - mean) / max(1, val_size)
    spread = float(top1.var(ddof=1)) if len(top1) > 1 else 0.0
    return math.sqrt(max(spread, binomial) / len(top1))


def verdicts(runs: "pd.DataFrame", val_size: int) -> list[str]:
    """One line a budget: how the formula's network fares against each other contender (see the module
    docstring), e.g. ``100M: the formula (0.231) beats compound (+0.030), ties base-w (-0.004): 1 win, 1 tie, 0 losses``."""
    from tinyray.cost import format_flops

    lines = []
    for budget, at_budget in runs.groupby("budget", sort=False):
        by = {name: group["top1"] for name, group in at_budget.groupby("contender", sort=False)}
        if "formula" not in by:
            lines.append(f"{format_flops(budget)}: no verdict (the formula's network is not among the contenders)")
            continue
        ours, ours_se = float(by["formula"].mean()), standard_error(by["formula"], val_size)
        counts = {"beats": 0, "ties": 0, "loses to": 0}
        parts = []
        for name, top1 in by.items():
            if name == "formula":
                continue
            difference = ours - float(top1.mean())
            limit = VERDICT_SE * math.hypot(ours_se, standard_error(top1, val_size))
            word = "beats" if difference > limit else "loses to" if difference < -limit else "ties"
            counts[word] += 1
            parts.append(f"{word} {name} ({difference:+.3f}, 2 se {limit:.3f})")
        lines.append(f"{format_flops(budget)}: the formula's network ({ours:.3f}) " + ", ".join(parts)
                     + f": {counts['beats']} wins, {counts['ties']} ties, {counts['loses to']} losses")
    return lines


def summarise(contenders: list[Contender], runs: "pd.DataFrame") -> "pd.DataFrame":
    """One row a contender: its network and the mean and sd of its final top-1 over the seeds."""
    import pandas as pd

    rows = []
    for contender in contenders:
        top1 = runs[(runs["budget"] == contender.budget) & (runs["contender"] == contender.name)]["top1"]
        rows.append({**asdict(contender), "top1_mean": float(top1.mean()),
                     "top1_sd": float(top1.std(ddof=1)) if len(top1) > 1 else 0.0, "seeds": len(top1)})
    return pd.DataFrame(rows)


def plot(table: "pd.DataFrame", path: Path, title: str = "") -> Path:
    """Mean top-1 +- sd of every contender, one panel a budget (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyray.cost import format_flops
    from tinyray.front import save_figure

    budgets = list(dict.fromkeys(table["budget"]))
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 3.6), dpi=110, squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        rows = table[table["budget"] == budget].iloc[::-1]
        colours = ["tab:orange" if name == "formula" else "tab:blue" for name in rows["name"]]
        spread = rows["top1_sd"].where(rows["seeds"] > 1)  # one seed has no spread to draw
        ax.barh(rows["label"], rows["top1_mean"], xerr=spread.fillna(0), color=colours, alpha=0.8, capsize=3)
        ax.set_xlabel("validation top-1 (mean +- sd over seeds)")
        ax.set_title(f"{format_flops(budget)} FLOPs", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title or "contenders at equal FLOPs", fontsize=10)
    return save_figure(fig, path)


def run_compare(config: CompareConfig, ctx: Context) -> Comparison:
    """Place the contenders, train every (contender, seed) as a Ray task, track it in MLflow and write the files.

    Raises:
        UserError: for a budget no contender meets, a formula answer outside (unless allowed), or Ray trouble.
    """
    import pandas as pd

    from tinyray.cost import format_flops
    from tinyray.data import spec_summary
    from tinyray.fidelity import PanelNet, Protocol, train_net
    from tinyray.tracking import Tracker
    from tinyray.tune.runtime import check_resources, run_tasks, start_ray, stop_ray

    contenders, left_out = plan(ctx, list(config.budgets), list(config.contenders))
    protocol = Protocol(name="compare", data=config.data, epochs=config.epochs, recipe=config.recipe,
                        threads=max(1, int(config.cpus_per_trial)))
    budgets_text = " ".join(format_flops(b) for b in config.budgets)
    header = (f"compare on {ctx.space.name} at {budgets_text} FLOPs ({ctx.num_classes} classes): {config.seeds} seed(s) each, "
              f"{config.epochs} epochs on {config.data_name}, {config.recipe} recipe, as a trial of the search")
    tracker = Tracker(config.tracking_uri, config.experiment, artifact_location=config.artifact_location)
    parent = tracker.start_run(f"compare {budgets_text}", {"tinyray.kind": "compare"}, {
        "budgets": budgets_text, "space": ctx.space.name, "seeds": config.seeds, "epochs": config.epochs, "recipe": config.recipe,
        "contenders": ",".join(config.contenders), **{f"data_{k}": v for k, v in spec_summary(config.data).items()},
    }, description=header)
    jobs = [(contender, seed) for contender in contenders for seed in range(config.seeds)]
    rows: list[dict[str, Any]] = []

    def finished(index: int, epochs: list[dict[str, Any]]) -> None:
        contender, seed = jobs[index]
        last = epochs[-1]
        rows.append({"job": index, "budget": contender.budget, "contender": contender.name, "seed": seed, "top1": last["top1"],
                     "train_seconds": last["seconds"], "train_resolution": last["train_resolution"]})
        child = tracker.start_run(f"{contender.name}@{format_flops(contender.budget)}-seed{seed}", {
            "mlflow.parentRunId": parent, "tinyray.kind": "compare-run", "contender": contender.name,
            "budget": str(contender.budget), "seed": str(seed),
        }, {**{k: v for k, v in asdict(contender).items() if k != "label"}, "seed": seed}) if parent else None
        for epoch in epochs:
            tracker.log_metrics(child, {"top1": epoch["top1"], "val_loss": epoch["val_loss"],
                                        "train_loss": epoch["train_loss"]}, step=int(epoch["epoch"]))
        tracker.finish(child)
        if not config.quiet:
            print(f"[{len(rows)}/{len(jobs)}] {contender.name} at {format_flops(contender.budget)}, seed {seed}: "
                  f"top-1 {last['top1']:.3f}", file=sys.stderr, flush=True)

    calls = [(PanelNet(contender.name, "compare", contender.r, contender.d, contender.w), protocol, seed, config.space)
             for contender, seed in jobs]
    started = start_ray(config.address)
    try:
        check_resources(config)
        run_tasks(train_net, calls, config.cpus_per_trial, config.gpus_per_trial, finished)
    except BaseException:
        tracker.finish(parent, "KILLED")
        raise
    finally:
        if started:
            stop_ray()
    runs = pd.DataFrame(rows).sort_values("job").drop(columns="job").reset_index(drop=True)  # in the table's order
    table = summarise(contenders, runs)
    lines = verdicts(runs, config.val_size)
    result = Comparison(table, runs, lines, left_out, parent_run_id=parent, header=header)
    folder = Path(config.results_dir)
    result.files = {
        "table": str(write_text_atomic(folder / FILES["table"], table.to_csv(index=False))),
        "runs": str(write_text_atomic(folder / FILES["runs"], runs.to_csv(index=False))),
        "plot": str(plot(table, folder / FILES["plot"], f"{config.experiment}: {header.split(':')[0]}")),
    }
    result.files["json"] = str(folder / FILES["json"])
    write_json_atomic(folder / FILES["json"], result.as_dict())
    tracker.log_artifacts(parent, [Path(path) for path in result.files.values()])
    tracker.log_metrics(parent, {f"top1_{row.name}_{format_flops(row.budget)}": row.top1_mean
                                 for row in table.itertuples()})
    tracker.describe(parent, header + "\n\n" + "\n".join(f"- {line}" for line in lines))
    tracker.finish(parent)
    if (folder / "trials.csv").is_file():
        from tinyray.report import write_report

        result.files["report"] = str(write_report(folder))
    return result
