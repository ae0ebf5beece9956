"""The tiny formula: GP fits recover known curves, the width solve meets budgets, state and the MLflow model round-trip."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tinyray.cli import main
from tinyray.cost import analytic_cost, base_flops
from tinyray.errors import UserError
from tinyray.formula import (
    FITTED_RANGE_TOLERANCE, Formula, _linear_loo, fit_formula, find_formula, load_front, load_from_uri, paper_width, solve_network,
    solve_width, width_inside_cube,
)

NUM_CLASSES = 10


def true_r(c: np.ndarray) -> np.ndarray:
    """A resolution curve shaped like the paper's: steep at small budgets, flattening towards B0."""
    return 0.42 + 0.18 * np.log10(np.asarray(c) / 0.04)


def true_d(c: np.ndarray) -> np.ndarray:
    return 0.45 + 0.45 * np.sqrt(np.asarray(c))


def synthetic_front(n: int = 12, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    c = np.geomspace(0.04, 0.8, n)
    r = true_r(c) + rng.normal(0, noise, n)
    d = true_d(c) + rng.normal(0, noise, n)
    return pd.DataFrame({"c": c, "r": r, "d": d, "w": paper_width(c, r, d), "top1": np.linspace(0.4, 0.8, n)})


@pytest.fixture(scope="module")
def formula(space) -> Formula:
    return fit_formula(synthetic_front(), space, NUM_CLASSES, seed=0, source="synthetic")


def test_fit_recovers_known_curves(formula):
    c = np.geomspace(0.05, 0.75, 15)
    values = formula.curve_values(c)
    assert np.abs(values["r"] - true_r(c)).max() < 0.02
    assert np.abs(values["d"] - true_d(c)).max() < 0.02
    assert (values["r_hi"] > values["r_lo"]).all()


def test_band_holds_95_percent_of_the_gp_posterior(formula):
    import torch

    from tinyray.formula import _features, _tensor

    # inside the fitted range, where the space's bounds do not clamp the band
    c = np.geomspace(0.06, 0.6, 5)
    values = formula.curve_values(c)
    draws = 4000
    # one Bernoulli trial per posterior draw and point: coverage ~ Binomial(draws, 0.95) / draws
    tolerance = 4 * np.sqrt(0.95 * 0.05 / draws)  # 0.014
    torch.manual_seed(0)
    for target in ("r", "d"):
        curve = formula.curves[target]
        assert (values[f"{target}_lo"] > formula.space.bounds()[target].low).all()
        assert (values[f"{target}_hi"] < formula.space.bounds()[target].high).all()
        x = _tensor(_features(c, curve.inputs)).reshape(-1, 1)
        with torch.no_grad():
            samples = curve.model.posterior(x).rsample(torch.Size([draws])).reshape(draws, -1).numpy()
        inside = (values[f"{target}_lo"] <= samples) & (samples <= values[f"{target}_hi"])
        assert np.abs(inside.mean(axis=0) - 0.95).max() < tolerance, (target, inside.mean(axis=0))


def test_fit_prefers_log_c_on_log_shaped_curves(formula):
    # r is linear in log c: the LOO selection must pick a log-c GP for it
    assert formula.curves["r"].inputs == "log_c"
    loo = pd.DataFrame(formula.loo).set_index("model")
    assert loo.loc["linear", "r_rmse"] > 2 * loo.loc[f"gp log_c {formula.curves['r'].kernel}", "r_rmse"]


def test_answers_meet_the_budget_and_flag_extrapolation(formula):
    base = base_flops(formula.space, NUM_CLASSES)
    inside = formula.answer(0.3 * base)
    assert not inside.extrapolates
    assert inside.flops <= inside.budget and inside.budget - inside.flops <= 0.01 * inside.budget
    assert analytic_cost(formula.space, inside.r, inside.d, inside.w, NUM_CLASSES).flops == inside.flops
    assert inside.resolution == formula.space.resolution(inside.r)
    assert inside.r_lo <= inside.r <= inside.r_hi + 0.01
    assert formula.answer(0.01 * base).extrapolates
    assert formula.answer(1.5 * base).extrapolates
    # A budget a little past the front's highest network (no network sits exactly at a budget) is fitted;
    # one twice as far is not.
    top = formula.c_range[1] * base
    assert not formula.answer(top * (1 + 0.9 * FITTED_RANGE_TOLERANCE)).extrapolates
    assert formula.answer(top * (1 + 2 * FITTED_RANGE_TOLERANCE)).extrapolates


@pytest.mark.parametrize("mflops", [15, 24, 40, 52, 75, 100, 150, 202, 280, 339, 400])
def test_width_solve_meets_budgets_within_one_percent(space, mflops):
    budget = mflops * 1e6
    c = budget / base_flops(space, 1000)
    r, w, flops, params = solve_network(space, float(true_r(c)), float(true_d(c)), budget, 1000)
    assert flops <= budget
    assert (budget - flops) / budget <= 0.01, f"{mflops}M: {flops} at r={r} w={w}"
    assert analytic_cost(space, r, float(true_d(c)), w, 1000).params == params


def test_network_solve_keeps_the_side_within_the_range_it_is_given(space):
    # A real search's answer (2026-12-06, seed 0, 40 classes): the GP gave r inside the cube, and the pixel search
    # for a closer fit to 200M moved it to 227 px (r = 1.013), outside. It stays inside now.
    for r in (0.97, 0.98, 0.99, 1.0):
        r_solved, w, flops, _ = solve_network(space, r, 0.6775, 200e6, 40, r_range=(0.93, 1.0))
        assert 0.93 <= r_solved <= 1.0 and flops <= 200e6
    assert solve_network(space, 0.967, 0.6775, 200e6, 40)[0] > 1.0  # unconstrained, the side search leaves the cube


#: The front of a default search (`tinyray bench overhead --seed 2`, 2026-12-07, 40 classes): r, d, w, FLOPs, top-1.
SEED2_FRONT = [
    (0.4269, 0.3333, 0.4983, 12535696, 0.0725),
    (0.2909, 0.7254, 0.5166, 12592864, 0.0900),
    (0.5627, 0.4099, 0.3700, 16775872, 0.1075),
    (0.7933, 0.3678, 0.3382, 31669472, 0.1100),
    (0.5634, 0.4248, 0.7397, 42605632, 0.1450),
    (1.0000, 0.3232, 0.4249, 58167616, 0.2325),
    (0.8436, 1.2500, 0.3740, 78619664, 0.2400),
    (0.7649, 0.3604, 0.9996, 111215088, 0.3700),
    (0.9550, 0.6397, 0.6873, 154371264, 0.4200),
    (0.8616, 0.7500, 1.0000, 196393984, 0.4350),
]


def test_width_inside_cube_moves_the_side_within_the_band_only(space):
    # the curves of SEED2_FRONT at 200M: r = 0.839, d = 0.677 leave 200M to w = 1.028, above the cube
    assert solve_width(space, 0.839, 0.677, 200e6, 40)[0] > 1.0
    r, w, flops, params = width_inside_cube(space, 0.839, 0.677, 200e6, 40, (0.57, 1.0))
    assert 0.839 < r <= 1.0 and 0.25 <= w <= 1.0 and 0.99 * 200e6 <= flops <= 200e6
    assert analytic_cost(space, r, 0.677, w, 40).flops == flops
    # the nearest such side: every side between the curve's and this one needs a width outside the cube or misses
    for pixels in range(space.resolution(0.839) + 1, space.resolution(r)):
        _, flops_try, _ = solve_width(space, pixels / space.base_resolution, 0.677, 200e6, 40, (0.25, 1.0))
        assert flops_try < 0.99 * 200e6
    assert width_inside_cube(space, 0.839, 0.677, 200e6, 40, (0.80, 0.845)) is None  # a narrow band: no move
    assert width_inside_cube(space, 0.9, 0.677, 200e6, 40, (0.57, 1.0)) is None  # w already inside: nothing to do


def test_answer_whose_width_leaves_the_cube_moves_r_within_its_band(space):
    front = pd.DataFrame(SEED2_FRONT, columns=["r", "d", "w", "flops", "top1"])
    answer = fit_formula(front, space, 40, seed=0).answer(200e6)
    assert answer.outside == "" and answer.in_bounds and not answer.extrapolates
    assert answer.w <= 1.0 and answer.r_lo <= answer.r <= answer.r_hi and 0.99 * 200e6 <= answer.flops <= 200e6
    # the curves' own network would be r = 0.84 at w = 1.03 (the front's rounded numbers)
    found = re.fullmatch(r"r raised from the curve's (0\.8\d+) to (\S+) \(within its 95% band \S+\) so that "
                         r"w=(1\.0\d+) comes inside the cube's 0\.25-1", answer.note)
    assert found and float(found[1]) < answer.r and f"{answer.r:.3f}" == found[2], answer.note
    assert f"({answer.note})" in answer.line()


def test_width_solve_is_the_widest_under_budget(space):
    w, flops, _ = solve_width(space, 0.6, 0.7, 80e6, 1000)
    assert flops <= 80e6
    assert analytic_cost(space, 0.6, 0.7, w + 0.002, 1000).flops > 80e6 or w >= 3.0


def test_linear_leave_one_out_matches_refitting():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, 8), rng.normal(0, 1, 8)
    brute = []
    for i in range(8):
        keep = np.arange(8) != i
        slope, intercept = np.polyfit(x[keep], y[keep], 1)
        brute.append(intercept + slope * x[i])
    assert np.allclose(_linear_loo(x, y), brute)


def test_json_round_trip_rebuilds_the_same_formula(formula, tmp_path):
    path = formula.save(tmp_path / "formula.json")
    raw = json.loads(path.read_text())
    assert raw["version"] == 1 and len(raw["table"]) == 60 and raw["num_classes"] == NUM_CLASSES
    assert {"c", "flops", "r", "r_lo", "r_hi", "d", "d_lo", "d_hi", "w", "resolution"} <= set(raw["table"][0])
    again = Formula.load(path)
    for budget in (20e6, 90e6, 250e6):
        assert again.answer(budget) == formula.answer(budget)


def test_damaged_or_missing_formula_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no formula"):
        Formula.load(tmp_path / "formula.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        Formula.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(UserError, match="version"):
        Formula.load(tmp_path / "old.json")


def test_too_small_or_wrong_front_is_a_user_error(space):
    with pytest.raises(UserError, match="at least 3"):
        fit_formula(synthetic_front().head(2), space, NUM_CLASSES)
    with pytest.raises(UserError, match="lacks the column"):
        fit_formula(synthetic_front().drop(columns=["d"]), space, NUM_CLASSES)


def _results_folder(tmp_path: Path, space) -> Path:
    """A results folder as a search leaves it: search.json and trials.csv/front.csv with real FLOPs."""
    folder = tmp_path / "b100M"
    folder.mkdir()
    front = synthetic_front(8)
    base = base_flops(space, NUM_CLASSES)
    front["flops"] = (front["c"] * base).round().astype(int)
    trials = pd.concat([front.assign(status="completed"), front.assign(top1=front["top1"] - 0.2, status="completed"),
                        front.assign(status="early-stopped", top1=0.99)])
    trials.drop(columns=["c"]).to_csv(folder / "trials.csv", index=False)
    front.drop(columns=["c"]).to_csv(folder / "front.csv", index=False)
    (folder / "search.json").write_text(json.dumps({"version": 1, "space_file": str(space.source),
                                                    "num_classes": NUM_CLASSES}))
    return folder


def test_load_front_from_folder_and_trials_csv(space, tmp_path):
    folder = _results_folder(tmp_path, space)
    from_folder = load_front(folder)
    assert from_folder.num_classes == NUM_CLASSES and len(from_folder.points) == 8
    from_trials = load_front(folder / "trials.csv")  # reduced to the front of the completed trials
    assert len(from_trials.points) == 8 and from_trials.points["top1"].max() < 0.9
    with pytest.raises(UserError, match="does not exist"):
        load_front(tmp_path / "nowhere")
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="lacks the column"):
        fit_formula(load_front(tmp_path / "junk.csv").points, space, NUM_CLASSES)


def test_cli_formula_fits_from_folder_and_finds_newest(space, tmp_path, capsys):
    folder = _results_folder(tmp_path, space)
    # the synthetic curves ask for w = 1.1 at 100M: outside the cube, so refused unless allowed (and then labelled)
    assert main(["formula", "--budget", "60M", "100M", "--from", str(folder), "--json", "--report"]) == 2
    assert "no fitted answer for 100M: w=" in capsys.readouterr().err
    assert main(["formula", "--budget", "60M", "100M", "--from", str(folder), "--json", "--report",
                 "--allow-outside"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["answers"]) == 2 and {row["model"] for row in out["loo"]} >= {"linear", "log-linear"}
    for answer in out["answers"]:
        assert answer["flops"] <= answer["budget"]
    assert out["answers"][0]["outside"] == "" and "above the cube's bound 1" in out["answers"][1]["outside"]
    # once a formula.json sits in the folder, a bare query finds it through --storage
    fit = fit_formula(load_front(folder).points, space, NUM_CLASSES, source=str(folder))
    fit.save(folder / "formula.json")
    assert find_formula(tmp_path) == folder / "formula.json"
    assert main(["formula", "--budget", "60M", "--storage", str(tmp_path)]) == 0
    assert "60M: r=" in capsys.readouterr().out


def test_formula_command_prints_no_torch_jit_future_warning(tmp_path):
    # linear_operator (under BoTorch) calls @torch.jit.script at import: a FutureWarning on every formula fit
    synthetic_front().to_csv(tmp_path / "front.csv", index=False)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    # 60M: inside the synthetic curves' fitted range and the cube (at 150M they ask for w = 1.3: refused)
    done = subprocess.run([sys.executable, "-m", "tinyray", "formula", "--budget", "60M", "--from", "front.csv"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "60M: r=" in done.stdout
    assert "FutureWarning" not in done.stderr and "torch.jit" not in done.stderr


def test_cli_formula_names_the_folder_it_read_not_the_one_it_was_fitted_in(space, tmp_path, capsys):
    import shutil

    (tmp_path / "there").mkdir()
    original = _results_folder(tmp_path / "there", space)
    fit_formula(load_front(original).points, space, NUM_CLASSES, source=str(original)).save(original / "formula.json")
    copy = Path(shutil.copytree(original, tmp_path / "here" / "b100M"))
    assert main(["formula", "--budget", "60M", "--from", str(copy)]) == 0
    out = capsys.readouterr().out
    assert f"tiny formula from {copy / 'formula.json'}:" in out and str(original) not in out
    assert main(["formula", "--budget", "60M", "--storage", str(tmp_path / "here"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == str(copy / "formula.json")


@pytest.mark.parametrize("argv, message", [
    (["formula", "--budget", "100M", "--storage", "{empty}"], "no formula found"),
    (["formula", "--storage", "{empty}"], "give --budget"),
    (["formula", "--budget", "lots", "--storage", "{empty}"], "not a number of FLOPs"),
    (["formula", "--budget", "100M", "--from", "{empty}/nope.csv"], "does not exist"),
    (["formula", "--budget", "100M", "--from", "x", "--model-uri", "models:/x/1"], "either --from or --model-uri"),
    (["export", "--budget", "100M", "--out", "{empty}", "--storage", "{empty}"], "no formula found"),
])
def test_formula_cli_errors_are_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "e").mkdir()
    argv = [arg.replace("{empty}", str(tmp_path / "e")) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_export_round_trip(formula, tmp_path, capsys):
    import torch

    from tinyray.export import load_exported

    (tmp_path / "f").mkdir()
    formula.save(tmp_path / "f" / "formula.json")
    out = tmp_path / "net"
    assert main(["export", "--budget", "50M", "--out", str(out), "--from", str(tmp_path / "f"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    model, config = load_exported(out)
    answer = formula.answer(50e6)
    assert (config["r"], config["d"], config["w"]) == (answer.r, answer.d, answer.w) == (summary["r"], summary["d"], summary["w"])
    assert config["input_size"] == [3, answer.resolution, answer.resolution] and config["num_classes"] == NUM_CLASSES
    from tinyray.files import EXPORT_VERSION

    assert config["tinyray_export"] == EXPORT_VERSION == 1  # kept in tinyray.files with the other formats (issue 14)
    assert sum(p.numel() for p in model.parameters()) == answer.params == config["params"]
    # the same weights come back: the saved network and the reloaded one agree on an input
    again, _ = load_exported(out)
    x = torch.randn(2, 3, answer.resolution, answer.resolution)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert main(["export", "--budget", "50M", "--out", str(out), "--from", str(tmp_path / "f")]) == 2
    assert "not an empty folder" in capsys.readouterr().err


@pytest.mark.slow
def test_export_trained_matches_its_weights(formula, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    from tinyray.export import load_exported

    (tmp_path / "f").mkdir()
    formula.save(tmp_path / "f" / "formula.json")
    out = tmp_path / "trained"
    assert main(["export", "--budget", "20M", "--out", str(out), "--from", str(tmp_path / "f"), "--train-epochs", "1"]) == 0
    model, config = load_exported(out)
    assert config["trained"] and config["training"]["epochs"] == 1
    weights = load_file(str(out / "model.safetensors"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key])


@pytest.mark.integration
def test_pyfunc_model_round_trips_through_mlflow_registry(formula, tmp_path, monkeypatch):
    import mlflow.pyfunc

    from tinyray.formula import fit_metrics, publish
    from tinyray.tracking import Tracker, local_artifact_root, local_tracking_uri

    uri = local_tracking_uri(tmp_path)
    workdir = tmp_path / "workdir"  # the working folder: nothing may appear in it (MLflow's ./mlflow.db, ./mlruns)
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    tracker = Tracker(uri, "formula-test", artifact_location=local_artifact_root(tmp_path))
    run_id = tracker.start_search("formula-test", {"budget": 1})
    published = publish(formula, tracker, run_id, tmp_path, model_name="tinynet-formula-test")
    assert published["model_uri"] == "models:/tinynet-formula-test/1"
    assert (tmp_path / "formula.json").is_file() and (tmp_path / "formula.png").stat().st_size > 10_000
    artifacts = {item.path for item in tracker.client.list_artifacts(run_id)}
    assert {"formula.json", "formula.png", "formula_model"} <= artifacts
    # an MLflow 3 logged model of the run (the experiment's Models tab), linked to the registered version
    client = tracker.client
    (logged,) = client.search_logged_models([tracker.experiment_id])
    assert logged.model_id == published["model_id"] and logged.name == "formula_model"
    assert logged.source_run_id == run_id and str(logged.status) == "READY" and logged.model_type == "tiny-formula"
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "tinynet-formula-test", "version": "1"}]
    assert logged.tags["search"] == "formula-test" and float(logged.tags["loo_r_rmse"]) >= 0
    assert [output.model_id for output in client.get_run(run_id).outputs.model_outputs] == [logged.model_id]
    assert {item.path for item in client.list_logged_model_artifacts(logged.model_id)} >= {"MLmodel", "data"}
    # its fit quality as metrics of the logged model (the Models tab's columns), the same numbers as the version's tags
    metrics = {metric.key: metric.value for metric in client.get_logged_model(logged.model_id).metrics}
    assert metrics == pytest.approx(fit_metrics(formula))
    assert {"loo_r_rmse", "loo_d_rmse", "front_points", "points_fitted", "flops_low_M", "flops_high_M"} <= set(metrics)
    assert metrics["loo_r_rmse"] == pytest.approx(float(logged.tags["loo_r_rmse"]), abs=1e-4)
    assert metrics["points_fitted"] == len(formula.points) and metrics["flops_low_M"] < metrics["flops_high_M"]
    assert all(metric.model_id == logged.model_id for metric in client.get_logged_model(logged.model_id).metrics)

    # mlflow.set_registry_uri sets $MLFLOW_REGISTRY_URI and set_registry_uri(None) leaves it set (MLflow 3.x): the
    # monkeypatch takes it back, else every later search's driver registered its formula in this test's store
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(published["model_uri"])
        predicted = model.predict(pd.DataFrame({"flops": [2e8, 5e7]}))
        for other in (f"models:/{logged.model_id}", f"runs:/{run_id}/formula_model"):
            assert mlflow.pyfunc.load_model(other).predict(pd.DataFrame({"flops": [2e8]})).loc[0, "r"] == predicted.loc[0, "r"]
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    expected = formula.answer(2e8)
    assert list(predicted.columns[:4]) == ["budget", "c", "r", "d"]
    assert predicted.loc[0, "r"] == expected.r and predicted.loc[0, "w"] == expected.w
    assert predicted.loc[0, "resolution"] == expected.resolution and predicted.loc[1, "flops"] <= 5e7

    # no pickle anywhere in the published model: the loader rebuilds from JSON
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=client.get_logged_model(logged.model_id).artifact_location,
                                                         dst_path=str(tmp_path / "dl")))
    assert not [p for p in model_dir.rglob("*") if p.suffix in (".pkl", ".pickle")]
    assert "loader_module: tinyray.formula" in (model_dir / "MLmodel").read_text()

    loaded = load_from_uri(published["model_uri"], uri)
    assert loaded.answer(1e8) == formula.answer(1e8)
    with pytest.raises(UserError, match="cannot load the formula"):
        load_from_uri("models:/no-such-model/1", uri)

    # as `tinyray formula --model-uri ... --tracking-uri ...` runs, without MLflow variables: models:/ resolves in
    # the store's own registry (before, in MLflow's default ./mlflow.db, which it created, and found nothing)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert load_from_uri(published["model_uri"], uri).answer(1e8) == formula.answer(1e8)
    for other in (f"models:/{logged.model_id}", f"runs:/{run_id}/formula_model", f"runs:/{run_id}/formula.json"):
        assert load_from_uri(other, uri).answer(1e8) == formula.answer(1e8), other
    with pytest.raises(UserError, match="needs the MLflow store it was published to"):
        load_from_uri(published["model_uri"])
    # the README's command, in a fresh process: the answer on stdout, nothing on stderr (no progress bar)
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run([sys.executable, "-m", "tinyray", "formula", "--budget", "100M", "--model-uri",
                           published["model_uri"], "--tracking-uri", uri], capture_output=True, text=True, env=env,
                          cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert f"tiny formula from {published['model_uri']}" in done.stdout and "Downloading" not in done.stderr
    assert sorted(p.name for p in workdir.iterdir()) == []


@pytest.mark.integration
def test_search_end_publishes_formula_and_reports_it(space, tmp_path):
    """What every search does after its trials: fit on the front, publish, answer the search's budget."""
    from mlflow import MlflowClient

    from tinyray.search import SearchConfig, SearchResult, _fit_in_background, _publish_formula
    from tinyray.tracking import Tracker, local_artifact_root, local_tracking_uri

    config = SearchConfig(budget=100_000_000, name="pub", storage=tmp_path, formula_name="tinynet-formula-pub")
    config.results_dir.mkdir(parents=True)
    front = synthetic_front(7)
    front["flops"] = (front["c"] * base_flops(space, NUM_CLASSES)).round().astype(int)
    tracker = Tracker(local_tracking_uri(tmp_path), "pub", artifact_location=local_artifact_root(tmp_path))
    run_id = tracker.start_search("pub", {"budget": config.budget})
    points = front.drop(columns=["c"])
    fitting = _fit_in_background(config, points, space, NUM_CLASSES)  # in a thread, beside the front's files
    formula, note = _publish_formula(config, points, fitting, tracker, run_id)
    assert note == "" and formula["model_uri"] == "models:/tinynet-formula-pub/1"
    assert formula["answer"]["flops"] <= 100_000_000 and not formula["answer"]["extrapolates"]
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    run = client.get_run(run_id)
    assert run.data.tags["formula_model_uri"] == formula["model_uri"]
    # the version says where it came from and how good the fit is; the experiment links to it
    version = client.get_model_version("tinynet-formula-pub", "1")
    assert "search `pub`" in version.description and "100M FLOPs" in version.description
    assert "7 front points" in version.description and "leave-one-out RMSE: r " in version.description
    assert version.tags["search"] == "pub" and version.tags["budget"] == "100000000"
    assert version.tags["front_size"] == "7" and float(version.tags["loo_r_rmse"]) >= 0
    assert client.get_experiment(tracker.experiment_id).tags["formula_model_uri"] == formula["model_uri"]
    assert run.data.metrics["loo_r_rmse_linear"] > 0 and run.data.metrics["formula_flops"] == formula["answer"]["flops"]
    trials = front.assign(trial_id=[f"t{i}" for i in range(7)], status="completed", resolution=100, params=1, epochs=3)
    result = SearchResult(config=config, trials=trials, front=trials, hypervolume=0.5, wall_seconds=1.0,
                          tracking_uri=tracker.tracking_uri, experiment_id=tracker.experiment_id,
                          parent_run_id=run_id, formula=formula)
    report = result.report()
    assert "formula for 100M: r=" in report and "models:/tinynet-formula-pub/1" in report
    assert "best under 100M" in report
    two = front.head(2).drop(columns=["c"])
    small, why = _publish_formula(config, two, _fit_in_background(config, two, space, NUM_CLASSES), tracker, run_id)
    assert small is None and "needs 3" in why


# -- where an answer stands (issue 16) ---------------------------------------------------------------------------


def test_answer_outside_the_fitted_range_or_the_cube_says_so(formula):
    base = base_flops(formula.space, NUM_CLASSES)
    inside = formula.answer(0.3 * base)
    assert inside.outside == "" and "OUTSIDE" not in inside.line()
    above = formula.answer(1.5 * base)
    assert above.extrapolates and "above the fitted range" in above.outside and "r and d are extrapolated" in above.outside
    assert f"(OUTSIDE: {above.outside})" in above.line()
    assert (above.fitted_low, above.fitted_high) == (round(formula.c_range[0] * base), round(formula.c_range[1] * base))
    below = formula.answer(0.01 * base)
    assert "below the fitted range" in below.outside
    # w beyond the cube (the space's bound 1.0) is named with its bound
    wide = next(a for a in (formula.answer(f * base) for f in (0.5, 0.6, 0.7, 0.8)) if not a.in_bounds)
    assert "above the cube's bound 1" in wide.outside


def test_formula_refuses_outside_unless_allowed_and_text_says_what_json_says(formula, tmp_path, capsys):
    formula.save(tmp_path / "formula.json")
    base = base_flops(formula.space, NUM_CLASSES)
    budget = str(int(1.5 * base))
    assert main(["formula", "--budget", budget, "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no fitted answer" in err and "--allow-outside" in err and "above the fitted range" in err
    assert main(["export", "--budget", budget, "--from", str(tmp_path), "--out", str(tmp_path / "net")]) == 2
    assert "no fitted answer" in capsys.readouterr().err and not (tmp_path / "net").exists()
    assert main(["formula", "--budget", budget, "--from", str(tmp_path), "--allow-outside", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)["answers"][0]
    assert answer["extrapolates"] and answer["outside"]
    assert main(["formula", "--budget", budget, "--from", str(tmp_path), "--allow-outside"]) == 0
    assert f"OUTSIDE: {answer['outside']}" in capsys.readouterr().out
    inside = str(int(0.3 * base))
    assert main(["formula", "--budget", inside, "--from", str(tmp_path)]) == 0
    assert "OUTSIDE" not in capsys.readouterr().out


def test_fit_keeps_the_most_accurate_of_equal_flops_and_says_how_many_it_used(space):
    front = synthetic_front()
    twin = front.iloc[[4]].assign(r=front["r"].iloc[4] + 0.2, top1=front["top1"].iloc[4] - 0.1)
    fit = fit_formula(pd.concat([front, twin], ignore_index=True), space, NUM_CLASSES, seed=0)
    assert len(fit.points) == len(front) and fit.front_size == len(front) + 1
    assert fit.points[4]["r"] == pytest.approx(front["r"].iloc[4])  # the more accurate twin is the one kept
    assert fit.points_note() == (f"{len(front)} front points (of {len(front) + 1}: 1 at the same FLOPs as a more "
                                 "accurate or equal one left out)")
    assert Formula.from_dict(fit.to_dict()).points_note() == fit.points_note()


def test_table_reaches_the_search_budget_and_marks_the_extrapolated_rows(space, tmp_path):
    front = synthetic_front()
    budget = int(1.5 * front["c"].max() * base_flops(space, NUM_CLASSES))
    fit = fit_formula(front, space, NUM_CLASSES, seed=0, budget=budget)
    table = fit.table()
    assert table["flops"].iloc[-1] == pytest.approx(budget, rel=1e-6)
    assert table["fitted"].iloc[0] and not table["fitted"].iloc[-1]
    assert (table.loc[table["fitted"], "c"] <= fit.c_range[1] * (1 + FITTED_RANGE_TOLERANCE)).all()
    again = Formula.load(fit.save(tmp_path / "formula.json"))
    assert again.budget == budget and again.table()["flops"].iloc[-1] == table["flops"].iloc[-1]
