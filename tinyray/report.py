"""What a search found, for people: the paper's r/d/w importance analysis and a self-contained HTML report.

**Importance** answers the paper's first question: among networks of similar FLOPs, how strongly does each of
resolution r, depth d and width w go with top-1? Comparing networks of different cost would mostly measure
cost (every multiplier raises FLOPs, and FLOPs raise accuracy), so completed trials are first put into FLOPs
bins and Spearman's rank correlation of r, d and w with top-1 is taken inside each bin. The bins are FLOPs
quantiles (``pandas.qcut``), not fixed bands: a search concentrates its trials near the front, so equal-count
bins keep every bin's correlation estimated from as many trials as possible. There are as many bins as give at
least :data:`MIN_PER_BIN` trials each, at most :data:`MAX_BINS`. Two summary rows follow: ``within bins``, the
bins' correlations pooled by Fisher's z (each weighted by trials - 3), which is the answer to the question,
and ``all trials``, the plain correlation over every completed trial, which mixes in cost.

**The report** (``tinyray report RESULTS_DIR``) is one HTML file with its images inlined, readable offline and
as an MLflow artifact: the search's summary, the front, the tiny formula's curves (when the results folder has
``formula.json`` / ``formula.png``), the importance table and plot, and the best trial per budget.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyray.errors import UserError
from tinyray.files import FORMULA_VERSION, SUMMARY_VERSION, read_results_csv, write_text_atomic
from tinyray.status import COMPLETED

if TYPE_CHECKING:
    import pandas as pd

MIN_PER_BIN = 5
MAX_BINS = 4
FACTORS = ("r", "d", "w")
#: The paper's TinyNet-E..A budgets (FLOPs); the report gives the best trial under each one the search covers.
STANDARD_BUDGETS = (24_000_000, 52_000_000, 100_000_000, 202_000_000, 339_000_000)
REQUIRED_COLUMNS = ("trial_id", "r", "d", "w", "resolution", "flops", "params", "epochs", "top1", "status")


# -- the analysis ----------------------------------------------------------------------------------------------


def completed_trials(trials: "pd.DataFrame") -> "pd.DataFrame":
    """The fully trained trials with a top-1 (early-stopped accuracies are partial and would mislead)."""
    return trials[(trials["status"] == COMPLETED) & trials["top1"].notna()].copy()


def flops_bins(flops: "pd.Series", min_per_bin: int = MIN_PER_BIN, max_bins: int = MAX_BINS) -> "pd.Series":
    """Bin number (0, 1, ...) of each trial by FLOPs quantile, as many bins as keep ``min_per_bin`` trials each."""
    import pandas as pd

    count = max(1, min(max_bins, len(flops) // max(1, min_per_bin)))
    if count == 1:
        return pd.Series(0, index=flops.index)
    return pd.qcut(flops.rank(method="first"), count, labels=False).astype(int)


def _spearman(x: "pd.Series", y: "pd.Series") -> tuple[float, float]:
    from scipy.stats import spearmanr

    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return math.nan, math.nan
    result = spearmanr(x.to_numpy(dtype=float), y.to_numpy(dtype=float))
    return float(result.statistic), float(result.pvalue)


def _fisher_pool(rhos: list[float], sizes: list[int], pvalues: list[float]) -> tuple[float, float]:
    """Correlations of independent groups pooled by Fisher's z, weighted by n - 3; and the pooled p-value.

    A single group is its own pool (even below 4 trials, where Fisher's weight would be zero).
    """
    from scipy.stats import norm

    if len(rhos) == 1:
        return rhos[0], pvalues[0]
    pairs = [(math.atanh(max(-1 + 1e-12, min(1 - 1e-12, rho))), n - 3) for rho, n in zip(rhos, sizes)
             if math.isfinite(rho) and n > 3]
    if not pairs:
        return math.nan, math.nan
    weight = sum(w for _, w in pairs)
    z = sum(z * w for z, w in pairs) / weight
    return math.tanh(z), float(2 * norm.sf(abs(z) * math.sqrt(weight)))


def importance(trials: "pd.DataFrame", min_per_bin: int = MIN_PER_BIN, max_bins: int = MAX_BINS) -> "pd.DataFrame":
    """Spearman correlation of r, d and w with top-1 among completed trials of similar FLOPs.

    Args:
        trials: one row a trial with ``r, d, w, flops, top1, status`` (``trials.csv``).
        min_per_bin: fewest trials in a FLOPs bin.
        max_bins: most FLOPs bins.

    Returns:
        One row per FLOPs bin (``group`` ``bin 1`` ... by FLOPs), then ``within bins`` (the bins pooled by Fisher's
        z) and ``all trials`` (no binning), with columns ``group, flops_min, flops_max, trials`` and, for each
        factor f of r, d, w, ``rho_f`` (Spearman's rho, NaN where undefined) and ``p_f`` (its p-value).
    """
    import pandas as pd

    done = completed_trials(trials)
    rows: list[dict[str, Any]] = []
    if not done.empty:
        done["bin"] = flops_bins(done["flops"], min_per_bin, max_bins)
        for number, group in done.groupby("bin", sort=True):
            row: dict[str, Any] = {"group": f"bin {number + 1}", "flops_min": group["flops"].min(),
                                   "flops_max": group["flops"].max(), "trials": len(group)}
            for factor in FACTORS:
                row[f"rho_{factor}"], row[f"p_{factor}"] = _spearman(group[factor], group["top1"])
            rows.append(row)
        pooled: dict[str, Any] = {"group": "within bins", "flops_min": done["flops"].min(),
                                  "flops_max": done["flops"].max(), "trials": len(done)}
        every: dict[str, Any] = dict(pooled, group="all trials")
        for factor in FACTORS:
            pooled[f"rho_{factor}"], pooled[f"p_{factor}"] = _fisher_pool(
                [row[f"rho_{factor}"] for row in rows], [row["trials"] for row in rows],
                [row[f"p_{factor}"] for row in rows])
            every[f"rho_{factor}"], every[f"p_{factor}"] = _spearman(done[factor], done["top1"])
        rows += [pooled, every]
    columns = ["group", "flops_min", "flops_max", "trials"] + [f"rho_{f}" for f in FACTORS] + [f"p_{f}" for f in FACTORS]
    return pd.DataFrame(rows, columns=columns)


def plot_importance(table: "pd.DataFrame", path: Path, title: str = "") -> Path:
    """Bars of Spearman's rho of r, d and w with top-1, per FLOPs bin and pooled, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tinyray.cost import format_flops
    from tinyray.front import save_figure

    labels = []
    for row in table.itertuples():
        if row.group.startswith("bin"):
            labels.append(f"{format_flops(row.flops_min)}-{format_flops(row.flops_max)}\n(n={row.trials})")
        else:
            labels.append(f"{row.group}\n(n={row.trials})")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    x = np.arange(len(table))
    colours = {"r": "tab:blue", "d": "tab:green", "w": "tab:orange"}
    names = {"r": "resolution r", "d": "depth d", "w": "width w"}
    for offset, factor in zip((-0.27, 0.0, 0.27), FACTORS):
        values = table[f"rho_{factor}"].to_numpy(dtype=float) if len(table) else np.array([])
        ax.bar(x + offset, np.nan_to_num(values), width=0.26, color=colours[factor], label=names[factor])
    if len(table) > 2:
        ax.axvline(len(table) - 2.5, color="k", lw=0.8, ls=":")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel("FLOPs bin of completed trials" if len(table) else "no completed trials")
    ax.set_ylabel("Spearman rho with top-1")
    ax.set_title(title or "r, d, w against top-1 among networks of similar FLOPs", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def report_budgets(trials: "pd.DataFrame", budget: float | None = None) -> list[int]:
    """The budgets the report answers: the paper's TinyNet budgets within the search's range, and its own budget."""
    done = completed_trials(trials)
    if done.empty:
        return [int(budget)] if budget else []
    top = float(budget) if budget else float(done["flops"].max())
    low = float(done["flops"].min())
    return sorted({int(b) for b in STANDARD_BUDGETS if low <= b <= top} | {int(top)})


def best_per_budget(trials: "pd.DataFrame", budgets: list[int]) -> "pd.DataFrame":
    """For each budget, the most accurate completed trial with FLOPs at most that budget (fewer FLOPs on a tie).

    Returns:
        One row per budget that some trial meets: ``budget`` then the trial's ``trial_id, r, d, w, resolution,
        flops, params, top1``.
    """
    import pandas as pd

    done = completed_trials(trials).sort_values(["top1", "flops"], ascending=[False, True])
    columns = ["budget", "trial_id", "r", "d", "w", "resolution", "flops", "params", "top1"]
    rows = []
    for budget in budgets:
        under = done[done["flops"] <= budget]
        if not under.empty:
            rows.append({"budget": budget, **under.iloc[0][columns[1:]].to_dict()})
    return pd.DataFrame(rows, columns=columns)


# -- a results folder ------------------------------------------------------------------------------------------


@dataclass
class Results:
    """What a search left in its results folder, as read by :func:`read_results`."""

    folder: Path
    trials: "pd.DataFrame"
    front: "pd.DataFrame"
    summary: dict[str, Any] = field(default_factory=dict)
    formula: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    compare: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or self.folder.name)

    @property
    def budget(self) -> float | None:
        budget = self.summary.get("budget")
        return float(budget) if budget else None

    @property
    def replayed(self) -> bool:
        """Whether the search replayed recorded curves (``--trainer replay``): as ``summary.json`` or any row of
        ``trials.csv`` says (a folder may lack the summary, or predate the ``trainer`` column)."""
        from tinyray.replay import REPLAY

        column = self.trials["trainer"] if "trainer" in self.trials.columns else ()
        return self.summary.get("trainer") == REPLAY or any(str(value) == REPLAY for value in column)


def read_results(folder: str | Path) -> Results:
    """Read ``trials.csv`` (required), ``front.csv``, ``summary.json`` and ``formula.json`` of a results folder.

    Raises:
        UserError: the folder or its ``trials.csv`` is missing or unreadable.
    """

    from tinyray.front import front_table

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"results folder {folder} does not exist: pass the folder a search printed (<storage>/<name>)")
    folder = folder.resolve()
    path = folder / "trials.csv"
    if not path.is_file():
        raise UserError(f"{folder} has no trials.csv: pass the results folder of one search (<storage>/<name>)")
    try:
        trials = read_results_csv(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in trials.columns]
    if missing:
        raise UserError(f"{path} lacks the columns {missing}: it was not written by tinyray search")
    notes: list[str] = []
    summary = _read_json(folder / "summary.json", SUMMARY_VERSION, notes) or {}
    formula = _read_json(folder / "formula.json", FORMULA_VERSION, notes)
    from tinyray.compare import COMPARE_VERSION, FILES

    compare = _read_json(folder / FILES["json"], COMPARE_VERSION, notes)
    return Results(folder=folder, trials=trials, front=front_table(trials), summary=summary, formula=formula,
                   notes=notes, compare=compare)


def _read_json(path: Path, version: int, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} could not be read ({exc}); left out")
        return None
    if not isinstance(data, dict) or data.get("version") != version:
        notes.append(f"{path.name} is not version {version}; left out")
        return None
    return data


# -- the HTML report -------------------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table.data { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
table.data th, table.data td { padding: 3px 9px; border-bottom: 1px solid #eee; text-align: right; }
table.data th { background: #f5f5f5; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #666; font-size: 13px; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 2px 1.5em; }
dl.summary dt { color: #666; } dl.summary dd { margin: 0; }
.replay { background: #fff3cd; border: 2px solid #c77c00; color: #5c3a00; padding: .7em 1em; font-size: 15px; }
"""


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _img(path: Path, alt: str) -> str:
    return f'<img src="{_png(path)}" alt="{html.escape(alt)}">'


def _table(frame: "pd.DataFrame", table_id: str) -> str:
    return frame.to_html(index=False, escape=True, na_rep="-", border=0, classes="data", table_id=table_id)


def _format_trials(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Human units for a table of trials: FLOPs as 52.3M, parameters in millions, three decimals."""
    from tinyray.cost import format_flops

    out = frame.copy()
    for column in ("budget", "flops", "flops_min", "flops_max"):
        if column in out:
            out[column] = out[column].map(lambda v: format_flops(v) if v == v else v)
    if "params" in out:
        out["params"] = out["params"].map(lambda v: f"{v / 1e6:.2f}M" if v == v else v)
    for column in ("r", "d", "w", "top1", "c", "r_lo", "r_hi", "d_lo", "d_hi", "top1_mean", "top1_sd"):
        if column in out:
            out[column] = out[column].map(lambda v: f"{v:.3f}" if isinstance(v, (int, float)) and v == v else v)
    for column in ("resolution", "epochs"):
        if column in out:
            out[column] = out[column].map(lambda v: f"{int(v)}" if v == v else v)
    for column in out.columns:
        if column.startswith("rho_"):
            out[column] = out[column].map(lambda v: f"{v:+.2f}" if v == v else v)
        elif column.startswith("p_"):
            out[column] = out[column].map(lambda v: f"{v:.2g}" if v == v else v)
    return out


def _browse_command(results: Results) -> str | None:
    """``tinyray ui`` on the folder being reported, which may be a copy: not the folder ``summary.json`` names."""
    from tinyray.tracking import ui_command

    summary = results.summary
    if not summary.get("tracking_uri") or not summary.get("results_dir"):
        return summary.get("ui_command")  # a summary without them: its own line is all there is
    return ui_command(results.folder, str(summary["tracking_uri"]), summary.get("experiment_id"),
                      Path(summary["results_dir"]).parent)


def render_report(results: Results, importance_table: "pd.DataFrame", front_png: Path, importance_png: Path) -> str:
    """The report page: one HTML document with every image inlined (no external file, script or style); a replayed
    search's page opens with a banner that says so."""
    from tinyray.cost import format_flops
    from tinyray.search import REPLAY_NOTE

    esc = html.escape
    trials, summary = results.trials, results.summary
    status = trials["status"].value_counts()
    facts = [
        ("results folder", str(results.folder)),
        ("budget", f"{format_flops(results.budget)} FLOPs" if results.budget else "not recorded (no summary.json)"),
        ("trials", f"{len(trials)}: {int(status.get('completed', 0))} completed, "
                   f"{int(status.get('early-stopped', 0))} early-stopped, {int(status.get('failed', 0))} failed"),
        ("front", f"{len(results.front)} networks"),
    ]
    if "hypervolume" in summary:
        facts.append(("hypervolume", f"{float(summary['hypervolume']):.4f} (normalised: 1 - top-1 vs FLOPs / budget)"))
    if "wall_seconds" in summary:
        facts.append(("wall time", f"{float(summary['wall_seconds']) / 60:.1f} min"))
    browse = _browse_command(results)
    if browse:
        facts.append(("browse the runs", browse))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tinyray report: {'REPLAY: ' if results.replayed else ''}{esc(results.name)}</title>"
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>tinyray search <code>{esc(results.name)}</code></h1>",
        *([f'<p id="replay-banner" class="replay" role="alert"><strong>{esc(REPLAY_NOTE)}.</strong> The accuracies '
           "are recorded learning curves with recorded noise, replayed to rehearse the machinery: they say nothing "
           "about these networks.</p>"] if results.replayed else []),
        '<section id="summary"><dl class="summary">',
        *[f"<dt>{esc(key)}</dt><dd>{esc(value)}</dd>" for key, value in facts],
        "</dl>",
        *[f'<p class="note">{esc(note)}</p>' for note in results.notes],
        "</section>",
        '<section id="front"><h2>Accuracy / FLOPs front</h2>',
        '<p class="note">Fully trained trials that no other trial beats on both top-1 and FLOPs.</p>',
        _img(front_png, "front plot"),
        _table(_format_trials(results.front[["trial_id", "r", "d", "w", "resolution", "flops", "params", "top1"]]),
               "front-table") if not results.front.empty else '<p class="note">No trial was trained fully.</p>',
        "</section>",
    ]
    parts += _formula_section(results)
    parts += _compare_section(results)
    parts += [
        '<section id="importance"><h2>Which of r, d, w matters: Spearman correlation with top-1</h2>',
        '<p class="note">Among completed trials of similar FLOPs (FLOPs-quantile bins of at least '
        f"{MIN_PER_BIN} trials, at most {MAX_BINS} bins): Spearman's rho of each multiplier with top-1 per bin; "
        "<em>within bins</em> pools the bins by Fisher's z (weights n - 3), the paper's question; "
        "<em>all trials</em> ignores FLOPs, so it mostly measures cost. p: two-sided p-value.</p>",
        _img(importance_png, "importance plot"),
        _table(_format_trials(importance_table), "importance-table"),
        "</section>",
    ]
    budgets = report_budgets(trials, results.budget)
    best = best_per_budget(trials, budgets)
    parts += [
        '<section id="best"><h2>Best trial per budget</h2>',
        '<p class="note">The most accurate fully trained trial with FLOPs at most the budget: the paper\'s '
        "TinyNet budgets (24M, 52M, 100M, 202M, 339M) that the search covers, and its own budget.</p>",
        _table(_format_trials(best), "best-table") if not best.empty else '<p class="note">No completed trial.</p>',
        "</section>",
        '<section id="trials"><h2>Every trial</h2><details><summary>'
        f"{len(trials)} trials (trials.csv)</summary>",
        _table(_format_trials(trials), "trials-table"),
        "</details></section>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _formula_section(results: Results) -> list[str]:
    import pandas as pd

    png = results.folder / "formula.png"
    if results.formula is None and not png.is_file():
        return []
    from tinyray.cost import format_flops

    formula = results.formula or {}
    used, front = len(formula.get("points") or []), int(formula.get("front_size") or 0)
    fitted = f"{used} front points" + (f" (of {front}: {front - used} at the same FLOPs as a more accurate or equal "
                                       f"one left out)" if front > used else "")
    parts = ['<section id="formula"><h2>The tiny formula</h2>',
             f'<p class="note">r = R(c) and d = D(c) fitted on {html.escape(fitted) if used else "the front"} '
             "(c = FLOPs / FLOPs of the base network), w = sqrt(c / (r<sup>2</sup> d)). Rows marked "
             "<em>fitted: False</em> lie beyond the front's highest point, up to the search's budget: there the "
             "curves are extrapolated, and <code>tinyray formula</code> refuses them without "
             "<code>--allow-outside</code>.</p>"]
    answer = (results.summary.get("formula") or {}).get("answer")
    if isinstance(answer, dict) and "r" in answer:
        where = f" OUTSIDE: {answer['outside']}." if answer.get("outside") else " Inside the fitted range and the cube."
        if answer.get("note"):
            where = f" Note: {answer['note']}.{where}"
        parts.append(f'<p id="formula-answer">For the search\'s budget {format_flops(answer["budget"])}: '
                     f"r={answer['r']:.3f} d={answer['d']:.3f} w={answer['w']:.3f}, {answer['resolution']} px, "
                     f"{format_flops(answer['flops'])} FLOPs.{html.escape(where)}</p>")
    if png.is_file():
        parts.append(_img(png, "formula curves"))
    table = formula.get("table")
    if isinstance(table, list) and table and all(isinstance(row, dict) for row in table):
        frame = pd.DataFrame(table)
        wanted = [c for c in ("c", "flops", "r", "r_lo", "r_hi", "d", "d_lo", "d_hi", "w", "resolution", "fitted")
                  if c in frame]
        parts.append(_table(_format_trials(frame[wanted]), "formula-table"))
    parts.append("</section>")
    return parts


def _compare_section(results: Results) -> list[str]:
    """``tinyray compare``'s table, verdicts and plot, when the results folder has them."""
    import pandas as pd

    from tinyray.compare import FILES

    compare = results.compare
    if not compare or not isinstance(compare.get("table"), list) or not compare["table"]:
        return []
    frame = pd.DataFrame(compare["table"])
    wanted = [c for c in ("budget", "label", "top1_mean", "top1_sd", "seeds", "flops", "params", "r", "d", "w",
                          "resolution", "note") if c in frame]
    esc = html.escape
    parts = ['<section id="compare"><h2>The formula against the obvious networks (tinyray compare)</h2>',
             f'<p class="note">{esc(str(compare.get("header", "")))}</p>',
             _table(_format_trials(frame[wanted]), "compare-table"),
             "<ul>", *[f"<li>{esc(str(line))}</li>" for line in compare.get("verdicts", [])], "</ul>",
             *[f'<p class="note">left out at {esc(str(row.get("budget")))}: {esc(str(row.get("contender")))}: '
               f'{esc(str(row.get("reason")))}</p>' for row in compare.get("left_out", [])]]
    png = results.folder / FILES["plot"]
    if png.is_file():
        parts.append(_img(png, "compare plot"))
    parts.append("</section>")
    return parts


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """``tinyray report``: write the HTML report of a results folder (default ``<folder>/report.html``).

    Raises:
        UserError: the folder is not a search's results folder, or ``out`` cannot be written.
    """
    results = read_results(folder)
    target = Path(out).expanduser() if out is not None else results.folder / "report.html"
    if target.is_dir():
        raise UserError(f"--out {target} is a folder: give a file name such as report.html")
    with tempfile.TemporaryDirectory(prefix="tinyray-report-") as scratch:
        html_text = _render(results, Path(scratch))
    return _write_text(target, html_text)


def _render(results: Results, scratch: Path) -> str:
    """Render the report, drawing into ``scratch`` whatever plot the results folder lacks."""
    from tinyray.front import plot_front

    table = importance(results.trials)
    front_png = results.folder / "front.png"
    if not front_png.is_file():
        budget = results.budget or float(results.trials["flops"].max())
        front_png = plot_front(results.trials, results.front, budget, scratch / "front.png", title=results.name)
    importance_png = results.folder / "importance.png"
    if not importance_png.is_file():
        importance_png = plot_importance(table, scratch / "importance.png")
    return render_report(results, table, front_png, importance_png)


def _write_text(target: Path, text: str) -> Path:
    try:
        write_text_atomic(target, text)
    except OSError as exc:
        raise UserError(f"cannot write the report to {target}: {exc.strerror}; choose another --out") from None
    return target


# -- the search's hook -----------------------------------------------------------------------------------------


def finish_search(result: Any, tracker: Any) -> dict[str, Path]:
    """At the end of a search: write and log the summary, importance table and plot, and report; describe the run.

    Writes ``summary.json``, ``importance.csv``, ``importance.png`` and ``report.html`` into the results folder,
    logs them (with ``formula.json`` / ``formula.png`` if present) to the parent run, logs the pooled
    correlations as ``spearman_r``, ``spearman_d``, ``spearman_w``, and rewrites the parent run's description to
    say what the search found and which artifacts it has. Returns the files written, by role.

    Args:
        result: the search's ``tinyray.search.SearchResult`` (its parent run still open).
        tracker: the search's ``tinyray.tracking.Tracker``.
    """
    from tinyray.tracking import plain_text

    folder = result.results_dir
    summary = {"version": SUMMARY_VERSION, **result.summary()}
    files = {"summary": _write_text(folder / "summary.json", json.dumps(summary, indent=1, default=_json_default) + "\n")}
    trials = result.trials
    table = importance(trials)
    files["importance"] = write_text_atomic(folder / "importance.csv", table.to_csv(index=False))
    files["importance_plot"] = plot_importance(table, folder / "importance.png",
                                               title=f"{result.config.name}: r, d, w against top-1 at similar FLOPs")
    files["report"] = write_report(folder)
    extra = [folder / name for name in ("formula.json", "formula.png") if (folder / name).is_file()]
    tracker.log_artifacts(result.parent_run_id, [*files.values(), *extra])
    pooled = table[table["group"] == "within bins"]
    if not pooled.empty:
        tracker.log_metrics(result.parent_run_id, {f"spearman_{f}": pooled.iloc[0][f"rho_{f}"] for f in FACTORS},
                            step=len(trials))
    findings = search_findings(result, table)
    tracker.describe(result.parent_run_id, describe_search(result, findings))
    model_uri = (result.formula or {}).get("model_uri")
    model = (f" Its tiny formula is the registered model {model_uri} (the Models tab; "
             f"tinyray formula --model-uri {model_uri})." if model_uri else "")
    tracker.describe_experiment(  # plain text: the list of experiments shows it raw, the runs page as Markdown
        f"{plain_text(findings)} The search's own run, {result.config.name}, has the report (report.html) and the "
        f"files.{model}")
    return files


def search_findings(result: Any, table: "pd.DataFrame") -> str:
    """What a search was and what it found, in a few Markdown lines (the runs' descriptions start with it; a
    replayed search's first line says it was a replay)."""
    from tinyray.cost import format_flops
    from tinyray.replay import REPLAY
    from tinyray.search import REPLAY_NOTE

    config, counts = result.config, result.counts()
    lines = [f"**{REPLAY_NOTE}.**", ""] if getattr(config, "trainer", "train") == REPLAY else []
    lines += [
        f"**tinyray search `{config.name}`**: {len(result.trials)} trials of (r, d, w) under "
        f"{format_flops(config.budget)} FLOPs ({config.searcher} searcher, {config.scheduler} scheduler, "
        f"{config.max_epochs} epochs at full fidelity).",
        "",
        f"{counts['completed']} completed, {counts['early-stopped']} early-stopped, {counts['failed']} failed; "
        f"front of {len(result.front)} networks, hypervolume {result.hypervolume:.4f}.",
    ]
    best = result.best()
    if best is not None:
        lines.append(f"Best under the budget: `{best['trial_id']}` r={best['r']:.3f} d={best['d']:.3f} "
                     f"w={best['w']:.3f}, {format_flops(best['flops'])} FLOPs, top-1 {best['top1']:.3f}.")
    pooled = table[table["group"] == "within bins"]
    if not pooled.empty:
        rho = pooled.iloc[0]
        lines.append("Spearman rho with top-1 at similar FLOPs: " + ", ".join(
            f"{f} {rho[f'rho_{f}']:+.2f}" if rho[f"rho_{f}"] == rho[f"rho_{f}"] else f"{f} n/a" for f in FACTORS) + ".")
    return "\n".join(lines)


def describe_search(result: Any, findings: str) -> str:
    """The parent run's description (Markdown): the findings, how to read the runs, which artifacts hold what."""
    lines = [
        findings,
        "",
        "Child runs are the trials, named `r<r>-d<d>-w<w>`: columns `flops`, `params`, `resolution`, `r`, `d`, `w`, "
        "`top1` (last epoch) and `epochs` are metrics (sort and filter numerically, e.g. `metrics.flops < 1e8`), "
        "`status` and `on_front` are tags (`tags.on_front = 'true'`).",
        "",
        "Artifacts:",
        "- `report.html`: this search in one page (front, formula, correlations, best trial per budget)",
        "- `trials.csv`: one row a trial; `front.csv`, `front.png`: the accuracy/FLOPs front",
        "- `importance.csv`, `importance.png`: Spearman rho of r, d, w with top-1 per FLOPs bin",
        "- `summary.json`: the numbers above, for scripts",
    ]
    if (result.results_dir / "formula.json").is_file() or (result.results_dir / "formula.png").is_file():
        lines.append("- `formula.json`, `formula.png`: the tiny formula r = R(c), d = D(c) fitted on the front")
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
