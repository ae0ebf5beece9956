"""End to end: a small search with a real local Ray, real training and a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyray.cost import analytic_cost
from tinyray.data import DataSpec
from tinyray.errors import UserError
from tinyray.files import read_results_csv
from tinyray.search import SearchConfig, run_search
from tinyray.space import load_space

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    # Settings whose front has at least 3 points (the formula needs 3). On data version 5, with the multi-objective
    # ASHA, 8 trials of 600-1200 images left fronts of 2 (a cheap network that learns fast dominates the trials the
    # scheduler let finish); every trial trained fully (fifo) on 900 images gave a front of 4 (2026-12-06). Data
    # version 6 has 40 classes, so the trials train on the default 1800 images (FRONT_NOTE). Early stopping through
    # Tune is tested in tests/test_scheduler.py and tests/test_tune.py. Training is seeded.
    data = DataSpec(train_size=1800, val_size=400, cache_dir=root / "cache")
    config = SearchConfig(
        budget=60_000_000, name="e2e", storage=root / "results", data=data, trials=8, max_epochs=2,
        grace_period=1, reduction_factor=2, pop_size=4, seed=1, progress="quiet", scheduler="fifo",
    )
    return run_search(config)


def test_outputs_on_disk(finished):
    results = finished.results_dir
    trials = read_results_csv(results / "trials.csv")
    front = read_results_csv(results / "front.csv")
    assert len(trials) == 8
    assert set(trials["status"]) <= {"completed", "early-stopped", "failed"}
    assert (trials["status"] != "failed").all()
    assert trials["trial_id"].is_unique
    assert (trials["status"] == "completed").any()
    completed = trials[trials["status"] == "completed"]
    assert (completed["epochs"] == 2).all()
    assert (trials.loc[trials["status"] == "early-stopped", "epochs"] < 2).all()
    assert trials["node_id"].notna().all()
    # the front holds only fully trained trials, and they are marked in trials.csv
    assert set(front["trial_id"]) <= set(completed["trial_id"])
    assert set(trials.loc[trials["on_front"], "trial_id"]) == set(front["trial_id"])
    assert (results / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert 0.0 < finished.hypervolume <= 1.0


def test_every_candidate_is_under_the_budget_and_counted_right(finished):
    space = load_space()
    for row in finished.trials.itertuples():
        cost = analytic_cost(space, row.r, row.d, row.w, DataSpec().num_classes)  # the built-in data's classes
        assert row.flops == cost.flops <= 60_000_000
        assert row.resolution == cost.resolution
    # no network was measured twice: two trials at one training side, FLOPs count and size would be one network
    assert not finished.trials.duplicated(["train_resolution", "flops", "params"]).any()


def test_mlflow_parent_and_nested_children_without_duplicates(finished):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=finished.tracking_uri)
    runs = client.search_runs([finished.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tinyray.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("tinyray.kind") == "trial"]
    assert [p.info.run_id for p in parents] == [finished.parent_run_id]
    assert len(children) == len(finished.trials)
    assert all(c.data.tags["mlflow.parentRunId"] == finished.parent_run_id for c in children)
    trial_ids = [c.data.tags["trial_id"] for c in children]
    assert sorted(trial_ids) == sorted(finished.trials["trial_id"])
    by_trial = finished.trials.set_index("trial_id")
    for child in children:
        row = by_trial.loc[child.data.tags["trial_id"]]
        assert child.data.tags["status"] == row["status"]
        assert child.data.tags["on_front"] == str(bool(row["on_front"])).lower()
        assert int(child.data.params["flops"]) == row["flops"]
        history = client.get_metric_history(child.info.run_id, "top1")
        assert [m.step for m in history] == list(range(1, int(row["epochs"]) + 1))
        assert child.data.tags["mlflow.runName"].startswith("r")
    parent = client.get_run(finished.parent_run_id)
    assert parent.data.tags["setting.budget"] == "60000000"  # settings are tags: the params are the trials'
    assert parent.data.tags["setting.searcher"] == "nsga3" and not parent.data.params
    assert parent.info.status == "FINISHED"
    assert client.get_metric_history(finished.parent_run_id, "hypervolume")
    artifacts = {a.path for a in client.list_artifacts(finished.parent_run_id)}
    assert {"trials.csv", "front.csv", "front.png"} <= artifacts


def test_formula_is_fitted_published_and_answers_the_budget(finished):
    from mlflow import MlflowClient

    from tinyray.formula import MIN_POINTS, Formula

    results = finished.results_dir
    assert len(finished.front) >= MIN_POINTS, finished.front
    formula = Formula.load(results / "formula.json")
    # one point a distinct FLOPs count (two input sides can give the same FLOPs: 193 and 194 px both halve to 97)
    assert len(formula.points) == finished.front["flops"].nunique() and formula.front_size == len(finished.front)
    assert formula.num_classes == DataSpec().num_classes
    answer = finished.formula["answer"]
    assert answer == formula.answer(60_000_000).as_dict()
    assert answer["flops"] <= 60_000_000
    client = MlflowClient(tracking_uri=finished.tracking_uri)
    parent = client.get_run(finished.parent_run_id)
    assert parent.data.tags["formula_model_uri"] == finished.formula["model_uri"]
    assert {"formula.json", "formula.png", "formula_model"} <= {a.path for a in client.list_artifacts(finished.parent_run_id)}
    name = finished.formula["model_uri"].split("/")[1]
    assert client.get_registered_model(name).latest_versions
    assert "formula for 60M" in finished.report()


def test_same_name_again_is_refused_without_touching_results(finished):
    config = finished.config
    before = sorted(p.name for p in finished.results_dir.iterdir())
    with pytest.raises(UserError, match="already exists"):
        run_search(config)
    assert sorted(p.name for p in finished.results_dir.iterdir()) == before


# ---- a search on an image folder (issue 18): generated JPEG and PNG files, grayscale, CMYK, one corrupt ----------


@pytest.fixture(scope="module")
def folder_searches(tmp_path_factory):
    """Two tiny searches through the command line on the mixed folder of tests/conftest.py, one reading the files
    and one through the decode-once cache (``decoded:FOLDER``), with one Ray for both: name -> its JSON summary."""
    import contextlib
    import io
    import json
    import os

    from conftest import mixed_folder

    from tinyray.cli import main
    from tinyray.tune.runtime import start_ray, stop_ray

    root = tmp_path_factory.mktemp("folder-search")
    folder, _ = mixed_folder(root / "mixed")
    saved = os.environ.get("TINYRAY_CACHE")
    os.environ["TINYRAY_CACHE"] = str(root / "cache")  # before Ray starts: its workers build the decoded cache there
    started = start_ray(None)
    searches = {}
    try:
        for name, data in (("files", str(folder)), ("decoded", f"decoded:{folder}")):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(["search", "--budget", "40M", "--data", data, "--name", name, "--storage",
                             str(root / "results"), "--trials", "3", "--max-epochs", "1", "--scheduler", "fifo",
                             "--pop-size", "4", "--seed", "2", "--precision", "bf16", "--workers", "0",
                             "--no-channels-last", "--json"])
            assert code == 0, out.getvalue()[-2000:]
            searches[name] = json.loads(out.getvalue().strip().splitlines()[-1])
    finally:
        if started:
            stop_ray()
        if saved is None:
            os.environ.pop("TINYRAY_CACHE", None)
        else:
            os.environ["TINYRAY_CACHE"] = saved
    return searches


@pytest.mark.parametrize("name", ["files", "decoded"])
def test_a_search_on_an_image_folder_runs_to_its_end(folder_searches, name):
    import json

    import torch

    summary = folder_searches[name]
    results = Path(summary["results_dir"])
    assert summary["trials"] == 3 and summary["completed"] == 3, summary
    # Tune's trial ids are 8 hex digits: one of all decimal digits (about 2% of them) is not a number
    trials = read_results_csv(results / "trials.csv")
    front = read_results_csv(results / "front.csv")
    assert len(trials) == 3 and (trials["status"] == "completed").all() and (trials["epochs"] == 1).all()
    assert (trials["flops"] <= 40_000_000).all()
    assert 1 <= len(front) == len(summary["front"]) and set(front["trial_id"]) <= set(trials["trial_id"])
    assert (results / "front.png").is_file() and (results / "report.html").is_file()
    info = json.loads((results / "search.json").read_text())
    assert info["num_classes"] == 2 and info["recipe"] == "paper"
    assert (info["config"]["precision"], info["config"]["workers"], info["config"]["channels_last"]) == ("bf16", 0, False)
    for trial_id in trials["trial_id"]:
        rows = [json.loads(line) for line in (results / f"trial_{trial_id}" / "result.json").read_text().splitlines()]
        # the corrupt JPEG is skipped and counted in every trial (from the files, or when the cache was built)
        assert [row["skipped_images"] for row in rows] == [1], rows
        # every trial trained in the precision the search was given (its checkpoint records the run)
        (checkpoint,) = (results / f"trial_{trial_id}").glob("checkpoint_*/state.pt")
        assert torch.load(checkpoint, weights_only=True)["run"]["precision"] == "bf16"


def test_the_default_formula_model_is_one_per_base(tmp_path):
    """A search's formula is registered under tinynet-formula for EfficientNet-B0's space and under
    tinynet-formula-<space> for another base (one MLflow store's model versions never mix bases); a name given is
    kept; the name is decided at the start and stored, so a resume keeps it."""
    from tinyray.search import _admit

    def admitted(**options):
        config, _ = _admit(SearchConfig(**{"budget": 100_000_000, "name": "n", "storage": tmp_path, **options}),
                           resume=False)
        return config.formula_name

    assert admitted() == "tinynet-formula"
    assert admitted(space="resnet50", budget=1_000_000_000) == "tinynet-formula-resnet50"
    assert admitted(space="ghostnet", formula_name="mine") == "mine"


def test_ray_stops_only_after_the_cycles_of_the_search_are_collected():
    # A cycle freed after Ray stopped could hold a Ray handle, whose release then ends the process (exit 1):
    # stop_in_background collects this thread's garbage before the stop starts.
    import gc

    from tinyray.search import stop_in_background

    events: list[str] = []

    class Handle:  # stands for a Tune object that holds a Ray handle, in a reference cycle
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            events.append("handle freed")

    Handle()
    gc.disable()  # no automatic collection may free the cycle first
    try:
        stop_in_background(lambda: events.append("ray stopped")).join()
    finally:
        gc.enable()
    assert events == ["handle freed", "ray stopped"]
