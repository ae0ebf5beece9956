"""tinyray compare: contenders placed at equal FLOPs in every family's space, inverse compound scaling, the space
a comparison is in, a real run, bad inputs."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from tinyray.cli import main
from tinyray.compare import CONTENDERS, Context, plan, space_difference
from tinyray.cost import analytic_cost, base_flops
from tinyray.data import DataSpec
from tinyray.files import write_json_atomic
from tinyray.formula import fit_formula
from tinyray.scaling import Compound, solve_phi
from tinyray.search import SearchConfig
from tinyray.space import load_space

from test_formula import synthetic_front

CLASSES = DataSpec().num_classes  # the built-in data's (40): the FLOPs every contender is placed by


def fake_trials(space, budgets: list[int]) -> pd.DataFrame:
    """Completed trials at 95% and 60% of each budget (their top-1 made up: only their FLOPs matter here)."""
    from tinyray.scaling import solve_width

    rows = []
    for budget in budgets:
        for share, (r, d), top1 in ((0.95, (0.7, 0.9), 0.2), (0.6, (0.6, 0.5), 0.3)):
            w, flops, params = solve_width(space, r, d, share * budget, CLASSES)
            rows.append({"trial_id": f"t{len(rows)}", "r": r, "d": d, "w": w, "resolution": space.resolution(r),
                         "flops": flops, "params": params, "epochs": 2, "top1": top1, "status": "completed"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def formula(space):
    return fit_formula(synthetic_front(), space, CLASSES, seed=0, source="synthetic")


@pytest.mark.parametrize("mflops", [100, 200])
def test_every_contender_meets_the_budget_within_one_percent(space, formula, mflops):
    budget = mflops * 1_000_000
    # the synthetic front's curves ask for w > 1 at 200M: allowed here, the policy has its own tests
    ctx = Context(space, CLASSES, formula, fake_trials(space, [budget]), allow_outside=True)
    placed, left_out = plan(ctx, [budget], list(CONTENDERS))
    for contender in placed:
        recount = analytic_cost(space, contender.r, contender.d, contender.w, CLASSES)
        assert recount.flops == contender.flops and recount.params == contender.params
        assert recount.resolution == contender.resolution
        assert 0 <= budget - contender.flops <= 0.01 * budget, (contender.name, contender.flops)
    names = {contender.name for contender in placed}
    assert {"formula", "compound", "base-r", "base-w", "search-best"} <= names
    # B0 at d = 0.25 (one block a stage) still costs more than 100M: said, not hidden
    if mflops == 100:
        assert [row["contender"] for row in left_out] == ["base-d"] and "0.25" in left_out[0]["reason"]
    else:
        assert "base-d" in names and not left_out
    shrinks = {c.name: c for c in placed if c.name.startswith("base-")}
    # a one-dimension shrink keeps the other two dimensions at B0's (up to the width trim and a pixel or two)
    assert shrinks["base-r"].d == 1.0 and shrinks["base-r"].w >= 0.85
    assert shrinks["base-w"].d == 1.0
    # the search's best is the most accurate trial within 15% below the budget, not the better one far below it
    best = next(c for c in placed if c.name == "search-best")
    assert best.d == 0.9 and abs(best.r - 0.7) < 0.05 and "top-1 0.200" in best.note


def test_compound_scaling_is_efficientnet_b_minus_1_and_b_minus_2(space):
    # EfficientNet's coefficients: alpha beta^2 gamma^2 ~ 2, so each step of phi halves FLOPs in the ideal count
    compound = space.network.COMPOUND
    assert compound == {"d": 1.2, "w": 1.1, "r": 1.15}
    assert compound["d"] * compound["w"] ** 2 * compound["r"] ** 2 == pytest.approx(1.92, abs=0.01)
    b0 = base_flops(space, 1000)  # the paper counts at ImageNet's 1000 classes
    ideal = {mflops: math.log(mflops * 1e6 / b0) / math.log(1.92) for mflops in (200, 100)}
    assert round(ideal[200]) == -1 and round(ideal[100]) == -2  # the paper's B-1 at 200M, B-2 at 100M
    # B-1 as EfficientNet defines it: r = 1/1.15 (194 px), d = 1/1.2, w = 1/1.1
    minus_one = Compound(-1.0, compound)
    assert (minus_one.r, minus_one.d, minus_one.w) == pytest.approx((0.8696, 0.8333, 0.9091), abs=1e-4)
    assert space.resolution(minus_one.r) == 194
    # The exact count shrinks slower than 2^phi (the head keeps 1280 channels, depth rounds to whole blocks), so
    # the budget needs a somewhat more negative phi: recorded here so that a change to the count or solver shows.
    for mflops, expected in ((200, -1.216), (100, -2.578)):
        point = solve_phi(space, mflops * 1e6, 1000)
        assert point.phi == pytest.approx(expected, abs=0.002)
        assert round(ideal[mflops]) - 0.6 < point.phi < round(ideal[mflops])
        flops = analytic_cost(space, point.r, point.d, point.w, 1000).flops
        assert 0.9 * mflops * 1e6 <= flops <= mflops * 1e6  # 92.6M at 100M: the next step of phi jumps past it


def test_compound_contender_keeps_phi_s_resolution_and_depth(space, formula):
    ctx = Context(space, CLASSES, formula)
    placed, _ = plan(ctx, [200_000_000], ["compound"])  # no formula among the contenders: its policy is not asked
    contender = placed[0]
    point = solve_phi(space, 200_000_000, CLASSES)
    assert contender.d == pytest.approx(point.d) and f"phi={point.phi:.3f}" in contender.note
    assert abs(contender.w - point.w) < 0.05 and abs(contender.resolution - space.resolution(point.r)) <= 12


def formula_on(formula, space):
    """The synthetic formula fitted on ``space``: the synthetic front is given in c, so the fit (curves, points in c)
    is the same for every base and only the space and the points' FLOPs change (as refitting would, in 15 s less)."""
    base = base_flops(space, CLASSES)
    return dataclasses.replace(formula, space=space, points=[{**p, "flops": p["c"] * base} for p in formula.points])


#: Each base at a budget that suits it (40 classes): about a quarter of ResNet-50's 4.1G, a third of GhostNet's
#: 140M, half of MobileNetV3-Large's 215M and a quarter of EfficientNet-B0's 385M.
FAMILY_BUDGETS = {"resnet50": 1_000_000_000, "ghostnet": 50_000_000, "mobilenetv3_large": 100_000_000,
                  "efficientnet_b0": 100_000_000}


@pytest.mark.parametrize("name", list(FAMILY_BUDGETS))
def test_every_family_s_contenders_meet_the_budget_or_say_why_not(formula, name):
    space, budget = load_space(name), FAMILY_BUDGETS[name]
    ctx = Context(space, CLASSES, formula_on(formula, space), fake_trials(space, [budget]), allow_outside=True)
    placed, left_out = plan(ctx, [budget], list(CONTENDERS))
    assert sorted([c.name for c in placed] + [row["contender"] for row in left_out]) == sorted(CONTENDERS)
    for contender in placed:  # each a network of this space, within 1% below the budget by its exact count
        recount = analytic_cost(space, contender.r, contender.d, contender.w, CLASSES)
        assert (recount.flops, recount.params) == (contender.flops, contender.params)
        assert 0 <= budget - contender.flops <= 0.01 * budget, (name, contender.name, contender.flops)
    placed_names = {contender.name for contender in placed}
    assert {"formula", "base-r", "base-w", "search-best"} <= placed_names
    shrinks = {c.name: c for c in placed if c.name.startswith("base-")}
    assert shrinks["base-r"].d == 1.0 and shrinks["base-w"].d == 1.0 and "r only" in shrinks["base-r"].label
    reasons = {row["contender"]: row["reason"] for row in left_out}
    # one block a stage still costs more than these budgets in every base: said, with the bound and the FLOPs
    assert f"{name} with d alone at its bound 0.25 still costs" in reasons["base-d"]
    if space.network.COMPOUND is None:  # only EfficientNet defines compound coefficients; the others say so
        assert "defines no compound scaling coefficients" in reasons["compound"] and space.family in reasons["compound"]
    else:
        assert "compound" in placed_names
    assert not set(reasons) - {"base-d", "compound"}


def test_compound_rule_is_the_family_s_and_mobilenetv3_does_not_inherit_efficientnet_s(space):
    assert load_space("mobilenetv3_large").network.COMPOUND is None  # a subclass of the EfficientNet family
    assert load_space("resnet50").network.COMPOUND is None
    with pytest.raises(ValueError, match="resnet family of resnet50 defines no compound"):
        solve_phi(load_space("resnet50"), 1e9, CLASSES)
    # a family's coefficients are what solve_phi scales by
    point = solve_phi(space, 200_000_000, CLASSES)
    assert point.coefficients is space.network.COMPOUND and point.r == pytest.approx(1.15 ** point.phi)


def test_a_formula_of_another_space_is_no_contender(space, formula):
    resnet = load_space("resnet50")
    ctx = Context(resnet, CLASSES, formula, allow_outside=True)  # the formula is B0's
    placed, left_out = plan(ctx, [1_000_000_000], ["formula", "base-w"])
    assert [c.name for c in placed] == ["base-w"]
    assert left_out[0]["reason"] == "the formula was fitted on 'efficientnet_b0', not on 'resnet50'"
    assert space_difference(space, load_space(str(space.source))) is None


# -- the command -------------------------------------------------------------------------------------------------


def results_folder(root: Path, space, formula, budget: int, name: str = "cmp") -> Path:
    """A search's results folder as ``tinyray search`` leaves it, for what compare reads: search.json (data
    synthetic 200/100, 1 epoch), trials.csv and formula.json."""
    folder = root / "results" / name
    folder.mkdir(parents=True)
    data = DataSpec(train_size=200, val_size=100, cache_dir=root / "cache")
    config = SearchConfig(budget=budget, name=name, storage=root / "results", data=data, max_epochs=1,
                          space=None if space.name == "efficientnet_b0" else space.name)
    write_json_atomic(folder / "search.json", {"version": 1, "config": asdict(config), "space_file": str(space.source),
                                               "space": space.name, "num_classes": CLASSES})
    fake_trials(space, [budget]).to_csv(folder / "trials.csv", index=False)
    formula.save(folder / "formula.json")
    return folder


@pytest.mark.slow
@pytest.mark.integration
def test_small_real_compare_run_ends_with_table_csv_and_mlflow_runs(space, formula, tmp_path, capsys):
    from mlflow import MlflowClient

    folder = results_folder(tmp_path, space, formula, 25_000_000)
    code = main(["compare", "--budget", "25M", "--from", str(folder), "--contenders", "formula,compound",
                 "--seeds", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "compare on efficientnet_b0" in out and "tiny formula" in out and "compound phi=-" in out
    assert "25M: the formula's network" in out
    table = pd.read_csv(folder / "compare.csv")
    assert list(table["name"]) == ["formula", "compound"] and table["seeds"].tolist() == [1, 1]
    assert table["top1_mean"].between(0, 1).all() and (table["flops"] <= 25_000_000).all()
    assert ((25_000_000 - table["flops"]) <= 250_000).all()
    runs = pd.read_csv(folder / "compare_runs.csv")
    assert len(runs) == 2 and runs["top1"].between(0, 1).all()
    assert (folder / "compare.png").stat().st_size > 0
    saved = json.loads((folder / "compare.json").read_text())
    assert saved["version"] == 1 and len(saved["verdicts"]) == 1
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cmp")
    every = client.search_runs([experiment.experiment_id])
    parents = [run for run in every if run.data.tags.get("tinyray.kind") == "compare"]
    children = [run for run in every if run.data.tags.get("tinyray.kind") == "compare-run"]
    assert len(parents) == 1 and parents[0].info.run_id == saved["parent_run_id"]
    assert parents[0].info.status == "FINISHED"
    assert sorted(run.data.tags["contender"] for run in children) == ["compound", "formula"]
    assert all(run.data.tags["mlflow.parentRunId"] == saved["parent_run_id"] for run in children)
    assert all("top1" in run.data.metrics and run.info.status == "FINISHED" for run in children)
    assert "compare.csv" in {item.path for item in client.list_artifacts(saved["parent_run_id"])}
    page = (folder / "report.html").read_text()
    assert 'id="compare"' in page and "25M: the formula&#x27;s network" in page


@pytest.mark.parametrize("argv, message", [
    (["--budget", "lots"], "budget 'lots' is not a number of FLOPs"),
    (["--budget", "1k", "--allow-outside"], "no contender meets 1k within 1%"),
    (["--budget", "1k"], "the formula has no fitted answer for 1k"),
    (["--budget", "100M", "--contenders", "formula,bogus"], "bogus not among"),
    (["--budget", "100M", "--from", "MISSING"], "does not exist"),
])
def test_bad_inputs_are_one_line_and_exit_2(space, formula, tmp_path, capsys, argv, message):
    folder = results_folder(tmp_path, space, formula, 100_000_000)
    if "--from" not in argv:
        argv = [*argv, "--from", str(folder)]
    argv = [str(tmp_path / "missing") if part == "MISSING" else part for part in argv]
    code = main(["compare", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err and message in err, err
    assert not (folder / "compare.csv").exists()


def one_line_error(capsys, argv: list[str]) -> str:
    code = main(["compare", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_search_on_another_space_is_refused_with_how_to_fix_it(space, formula, tmp_path, capsys):
    b0 = results_folder(tmp_path, space, formula, 100_000_000, name="b100M")
    storage = str(tmp_path / "results")
    # the newest (only) search is B0's: say so, and how to get a search on resnet50
    err = one_line_error(capsys, ["--space", "resnet50", "--budget", "1G", "--storage", storage])
    assert f"the newest search in {storage} (b100M) ran on 'efficientnet_b0', not on 'resnet50'" in err
    assert "run 'tinyray search --space resnet50 --budget 1G' first" in err
    err = one_line_error(capsys, ["--space", "resnet50", "--budget", "1G", "--from", str(b0)])
    assert f"the search in {b0} ran on 'efficientnet_b0', not on 'resnet50'" in err
    # once a search on resnet50 is there, the fix names it
    resnet = load_space("resnet50")
    folder = results_folder(tmp_path, resnet, formula_on(formula, resnet), 1_000_000_000, name="b1G")
    err = one_line_error(capsys, ["--space", "resnet50", "--budget", "1G", "--from", str(b0)])
    assert f"give --from {folder} (a search on resnet50)" in err
    # a search whose formula.json is of another space than its search.json is refused as well
    shutil.copy(b0 / "formula.json", folder / "formula.json")
    err = one_line_error(capsys, ["--space", "resnet50", "--budget", "1G", "--from", str(folder)])
    assert f"the formula of the search in {folder} was fitted on 'efficientnet_b0', not on 'resnet50'" in err
    assert not (b0 / "compare.csv").exists() and not (folder / "compare.csv").exists()


def test_a_space_of_the_same_name_but_another_definition_is_refused(tmp_path, formula, capsys):
    resnet = load_space("resnet50")
    folder = results_folder(tmp_path, resnet, formula_on(formula, resnet), 1_000_000_000, name="b1G")
    wider = tmp_path / "resnet50_wide.yaml"
    wider.write_text(Path(resnet.source).read_text().replace("w: [0.25, 1.0]", "w: [0.25, 1.5]"))
    err = one_line_error(capsys, ["--space", str(wider), "--budget", "1G", "--from", str(folder)])
    assert f"fitted on another definition of 'resnet50' than {wider} (it differs in bounds)" in err
    assert "--space" in err and "'nowhere'" in one_line_error(capsys, ["--space", "nowhere", "--budget", "1G"])


@pytest.mark.parametrize("space_option", [["--space", "resnet50"], []])
def test_compare_builds_every_contender_in_the_chosen_space(formula, tmp_path, monkeypatch, capsys, space_option):
    import tinyray.compare

    resnet = load_space("resnet50")
    results_folder(tmp_path, resnet, formula_on(formula, resnet), 1_000_000_000, name="b1G")
    seen = {}

    class Planned:  # the run trains through Ray: here only what it is given, and the plan
        def __init__(self, config, ctx):
            seen["config"], seen["ctx"] = config, ctx
            seen["plan"] = plan(ctx, list(config.budgets), list(config.contenders))

        def text(self) -> str:
            return "planned"

    monkeypatch.setattr(tinyray.compare, "run_compare", Planned)
    # the newest search is found, and (without --space) its space taken
    assert main(["compare", *space_option, "--budget", "1G", "--storage", str(tmp_path / "results"),
                 "--allow-outside"]) == 0
    assert capsys.readouterr().out == "planned\n"
    assert seen["ctx"].space.name == "resnet50" and seen["ctx"].formula.space.name == "resnet50"
    assert load_space(seen["config"].space).name == "resnet50"  # what every Ray task builds its network from
    placed, left_out = seen["plan"]
    assert {c.name for c in placed} == {"formula", "base-r", "base-w", "search-best"}
    assert all(0 <= 1_000_000_000 - c.flops <= 10_000_000 for c in placed)
    assert {row["contender"] for row in left_out} == {"compound", "base-d"}


@pytest.mark.slow
@pytest.mark.integration
def test_small_real_compare_run_on_resnet50(formula, tmp_path, capsys):
    resnet = load_space("resnet50")
    folder = results_folder(tmp_path, resnet, formula_on(formula, resnet), 300_000_000, name="b300M")
    code = main(["compare", "--space", "resnet50", "--budget", "300M", "--from", str(folder),
                 "--contenders", "formula,base-r,compound", "--seeds", "1", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "compare on resnet50 at 300M FLOPs" in out and "300M: the formula's network" in out
    assert "left out at 300M: compound: the resnet family of resnet50 defines no compound" in out
    table = pd.read_csv(folder / "compare.csv")
    assert list(table["name"]) == ["formula", "base-r"] and table["top1_mean"].between(0, 1).all()
    for row in table.itertuples():  # the networks trained are ResNet-50s at the budget
        assert analytic_cost(resnet, row.r, row.d, row.w, CLASSES).flops == row.flops
        assert 0 <= 300_000_000 - row.flops <= 3_000_000
