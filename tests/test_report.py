"""The report: r/d/w importance on trials with known correlations, best trial per budget, and the HTML page."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from tinyray.cli import main
from tinyray.errors import UserError
from tinyray.report import best_per_budget, flops_bins, importance, read_results, report_budgets, write_report
from tinyray.search import TRIAL_COLUMNS


def make_trials(count: int = 40, seed: int = 0) -> pd.DataFrame:
    """Completed trials whose top-1 rises with r, falls with d, and ignores w; plus stopped and failed ones.

    FLOPs grow with the row number, so a FLOPs bin is a run of consecutive rows.
    """
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.3, 1.0, count)
    rows = pd.DataFrame({
        "trial_id": [f"t{i:03d}" for i in range(count)], "r": r, "d": 1.6 - r, "w": rng.uniform(0.3, 1.0, count),
        "resolution": (224 * r).astype(int), "train_resolution": (64 * r).round().astype(int),
        "flops": (10e6 * 1.06 ** np.arange(count)).round(), "params": rng.integers(1_000_000, 5_000_000, count),
        "epochs": 3, "top1": 0.3 + 0.5 * r, "status": "completed", "node_id": "n1", "train_seconds": 10.0,
        "failure": None, "trainer": "train",
    })
    # Early-stopped and failed trials that would reverse every correlation if they were counted.
    others = rows.head(6).assign(trial_id=[f"x{i}" for i in range(6)], top1=lambda f: 1.2 - f["top1"], epochs=1,
                                 status=["early-stopped"] * 4 + ["failed"] * 2)
    others.loc[others["status"] == "failed", "top1"] = np.nan
    trials = pd.concat([rows, others], ignore_index=True)[TRIAL_COLUMNS]
    return trials.assign(on_front=False)


def test_importance_recovers_known_correlations_per_bin_and_pooled():
    trials = make_trials()
    table = importance(trials).set_index("group")
    bins = [group for group in table.index if group.startswith("bin")]
    assert bins == ["bin 1", "bin 2", "bin 3", "bin 4"]  # 40 trials, at least 5 a bin, at most 4 bins
    assert list(table.loc[bins, "trials"]) == [10, 10, 10, 10]
    # bins are consecutive FLOPs ranges
    assert (table.loc[bins, "flops_max"].to_numpy()[:-1] < table.loc[bins, "flops_min"].to_numpy()[1:]).all()
    for group in bins + ["within bins", "all trials"]:
        assert table.loc[group, "rho_r"] == pytest.approx(1.0)
        assert table.loc[group, "rho_d"] == pytest.approx(-1.0)
        assert abs(table.loc[group, "rho_w"]) < 1.0
    assert table.loc["all trials", "trials"] == 40  # early-stopped and failed trials are left out
    done = trials[trials["status"] == "completed"]
    first = done.nsmallest(10, "flops")
    assert table.loc["bin 1", "rho_w"] == pytest.approx(spearmanr(first["w"], first["top1"]).statistic)
    assert table.loc["all trials", "rho_w"] == pytest.approx(spearmanr(done["w"], done["top1"]).statistic)
    assert table.loc["bin 1", "p_r"] < 1e-6


def test_binning_holds_flops_and_so_separates_width_from_cost():
    # Top-1 rises with FLOPs (and w with it), but among similar FLOPs wider is worse: only binning shows it.
    rng = np.random.default_rng(1)
    frames = []
    for level in range(4):
        w = np.sort(rng.uniform(0.3, 1.0, 10)) + level
        frames.append(pd.DataFrame({
            "trial_id": [f"l{level}-{i}" for i in range(10)], "r": rng.uniform(0.3, 1, 10), "d": rng.uniform(0.3, 1, 10),
            "w": w, "flops": 1e7 * (level + 1) + np.arange(10), "top1": 0.2 * level + 0.1 - 0.01 * np.arange(10),
            "status": "completed",
        }))
    table = importance(pd.concat(frames, ignore_index=True)).set_index("group")
    assert table.loc["within bins", "rho_w"] == pytest.approx(-1.0, abs=1e-3)
    assert table.loc["all trials", "rho_w"] > 0.5


@pytest.mark.parametrize("count, expected_bins", [(0, 0), (4, 1), (7, 1), (12, 2), (19, 3), (100, 4)])
def test_bin_count_keeps_five_trials_a_bin(count, expected_bins):
    flops = pd.Series(np.arange(count, dtype=float) * 1e6)
    bins = flops_bins(flops) if count else pd.Series([], dtype=int)
    assert bins.nunique() == expected_bins
    if count >= 5:
        assert bins.value_counts().min() >= 5


def test_one_bin_is_its_own_pool():
    table = importance(make_trials(8)).set_index("group")  # 8 trials: one bin, below Fisher's useful size
    assert list(table.index) == ["bin 1", "within bins", "all trials"]
    for column in ("rho_r", "rho_d", "rho_w", "p_w"):
        assert table.loc["within bins", column] == pytest.approx(table.loc["bin 1", column])


def test_importance_of_too_few_trials_is_undefined_not_an_error():
    table = importance(make_trials().head(2))
    assert table["rho_r"].isna().all()
    assert importance(make_trials().iloc[0:0]).empty


def test_best_per_budget_and_budgets_in_range():
    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"], "r": 0.5, "d": 0.5, "w": 0.5, "resolution": 112, "params": 1e6,
        "flops": [20e6, 23e6, 50e6, 90e6, 51e6], "top1": [0.50, 0.55, 0.60, 0.70, 0.99],
        "status": ["completed", "completed", "completed", "completed", "early-stopped"],
    })
    assert report_budgets(trials, 100e6) == [24_000_000, 52_000_000, 100_000_000]
    assert report_budgets(trials) == [24_000_000, 52_000_000, 90_000_000]  # no budget recorded: the largest trial
    best = best_per_budget(trials, [10_000_000, 24_000_000, 52_000_000, 100_000_000])
    assert list(best["budget"]) == [24_000_000, 52_000_000, 100_000_000]  # nothing fits 10M
    assert list(best["trial_id"]) == ["b", "c", "d"]  # the early-stopped 0.99 never counts


def write_results(folder, trials: pd.DataFrame, formula: bool = True, tracking_uri: str | None = None) -> None:
    from tinyray.front import front_table
    from tinyray.tracking import local_tracking_uri, ui_command

    folder.mkdir(parents=True, exist_ok=True)
    trials.to_csv(folder / "trials.csv", index=False)
    front_table(trials).to_csv(folder / "front.csv", index=False)
    tracking_uri = tracking_uri or local_tracking_uri(folder.parent)
    (folder / "summary.json").write_text(json.dumps({  # the keys a search writes that the report reads
        "version": 1, "name": folder.name, "budget": 60_000_000, "hypervolume": 0.4321, "wall_seconds": 90.0,
        "results_dir": str(folder), "tracking_uri": tracking_uri, "experiment_id": "1",
        "ui_command": ui_command(folder, tracking_uri, "1", folder.parent),
    }))
    if formula:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        (folder / "formula.json").write_text(json.dumps({"version": 1, "budget_range": [0.05, 0.2], "table": [
            {"c": 0.1, "flops": 38e6, "r": 0.6, "r_lo": 0.55, "r_hi": 0.65, "d": 0.7, "d_lo": 0.6, "d_hi": 0.8,
             "w": 0.6, "resolution": 134}]}))
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        fig.savefig(folder / "formula.png")
        plt.close(fig)


def test_report_is_one_self_contained_page_with_every_section(tmp_path):
    trials = make_trials()
    trials.loc[0, "trial_id"] = "<script>alert(1)</script>"  # hostile text must come out escaped
    folder = tmp_path / "b60M"
    write_results(folder, trials)
    path = write_report(folder)
    assert path == folder / "report.html"
    page = path.read_text()
    for section in ("summary", "front", "formula", "importance", "best", "trials"):
        assert f'<section id="{section}">' in page
    for table in ("front-table", "formula-table", "importance-table", "best-table", "trials-table"):
        assert f'id="{table}"' in page
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)  # front, formula, importance
    assert "<link" not in page and "http://" not in page and "https://" not in page
    assert "60M FLOPs" in page and "0.4321" in page


@pytest.mark.parametrize("tracking_uri, option", [
    (None, ""),  # the default store next to the results: `tinyray ui` finds it from the folder
    ("sqlite:////srv/mlflow/runs.db", " --tracking-uri sqlite:////srv/mlflow/runs.db"),
])
def test_report_of_a_copied_folder_browses_the_copy(tmp_path, tracking_uri, option):
    original = tmp_path / "there" / "b60M"
    write_results(original, make_trials(), formula=False, tracking_uri=tracking_uri)
    copy = Path(shutil.copytree(original, tmp_path / "here" / "b60M"))
    page = write_report(copy).read_text()
    browse = re.search(r"<dt>browse the runs</dt><dd>([^<]*)</dd>", page)
    assert html.unescape(browse.group(1)) == f"tinyray ui {copy}{option}"
    assert str(original) not in page


def test_report_of_a_replayed_search_opens_with_a_banner(tmp_path):
    from tinyray.search import REPLAY_NOTE

    real = tmp_path / "real"
    write_results(real, make_trials(), formula=False)
    page = write_report(real).read_text()
    assert 'id="replay-banner"' not in page and "REPLAY" not in page

    replayed = tmp_path / "replayed"
    trials = make_trials().assign(trainer="replay")
    write_results(replayed, trials, formula=False)
    summary = json.loads((replayed / "summary.json").read_text())
    (replayed / "summary.json").write_text(json.dumps({**summary, "trainer": "replay"}))
    page = write_report(replayed).read_text()
    banner = re.search(r'<p id="replay-banner"[^>]*>(.*?)</p>', page)
    assert banner and html.escape(REPLAY_NOTE) in banner.group(1)
    assert page.index('id="replay-banner"') < page.index('<section id="summary">')  # the first thing read
    assert "<title>tinyray report: REPLAY: replayed</title>" in page

    (replayed / "summary.json").unlink()  # the trials alone still say so
    assert 'id="replay-banner"' in write_report(replayed).read_text()


def test_report_of_a_search_on_a_server_opens_its_page(tmp_path):
    folder = tmp_path / "s" / "b60M"
    write_results(folder, make_trials(), formula=False, tracking_uri="http://127.0.0.1:5000")
    page = write_report(folder).read_text()
    assert "<dt>browse the runs</dt><dd>open &#x27;http://127.0.0.1:5000/#/experiments/1" in page


def test_report_without_formula_or_summary_still_reads(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    make_trials(12).to_csv(folder / "trials.csv", index=False)  # nothing else: plots are drawn on the spot
    page = write_report(folder, tmp_path / "out" / "r.html").read_text()
    assert '<section id="formula">' not in page
    assert "not recorded (no summary.json)" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2
    assert not (folder / "report.html").exists()


def test_read_results_rejects_what_a_search_did_not_write(tmp_path):
    with pytest.raises(UserError, match="has no trials.csv"):
        read_results(tmp_path)
    (tmp_path / "trials.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="lacks the columns"):
        read_results(tmp_path)
    make_trials(6).to_csv(tmp_path / "trials.csv", index=False)
    (tmp_path / "formula.json").write_text("{not json")
    results = read_results(tmp_path)
    assert results.formula is None and "formula.json could not be read" in results.notes[0]


def test_cli_report_prints_the_file(tmp_path, capsys):
    folder = tmp_path / "s"
    write_results(folder, make_trials(), formula=False)
    assert main(["report", str(folder), "--out", str(tmp_path / "x.html")]) == 0
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'x.html'}"
    assert (tmp_path / "x.html").read_text().startswith("<!DOCTYPE html>")


def test_report_shows_a_comparison_and_the_formula_answer_for_the_search_budget(tmp_path):
    trials = make_trials()
    folder = tmp_path / "b60M"
    write_results(folder, trials)
    summary = json.loads((folder / "summary.json").read_text())
    summary["formula"] = {"answer": {"budget": 60_000_000, "r": 0.6, "d": 0.7, "w": 1.2, "resolution": 134,
                                     "flops": 59_700_000, "outside": "w=1.200 is above the cube's bound 1"}}
    (folder / "summary.json").write_text(json.dumps(summary))
    assert 'id="compare"' not in write_report(folder).read_text()  # no comparison yet: no section
    (folder / "compare.json").write_text(json.dumps({
        "version": 1, "header": "compare at 60M FLOPs (20 classes): 1 seed(s) each",
        "table": [{"budget": 60_000_000, "label": "tiny formula", "top1_mean": 0.25, "top1_sd": 0.0, "seeds": 1,
                   "flops": 59_700_000, "params": 1_200_000, "r": 0.6, "d": 0.7, "w": 0.6, "resolution": 134,
                   "note": "inside"}],
        "verdicts": ["60M: the formula's network (0.250) beats compound (+0.050, 2 se 0.040): 1 wins"],
        "left_out": [{"budget": 60_000_000, "contender": "b0-d", "reason": "B0 with d alone <at its bound>"}]}))
    page = write_report(folder).read_text()
    assert '<section id="compare">' in page and 'id="compare-table"' in page
    assert "beats compound" in page and "&lt;at its bound&gt;" in page and "0.250" in page
    assert 'id="formula-answer"' in page and "OUTSIDE: w=1.200 is above the cube&#x27;s bound 1" in page
