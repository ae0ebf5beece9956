"""``tinyray bench scale``: its arithmetic on made-up samples, its refusals, and (slow) the whole machinery at CI
size: 40 replayed trials on a simulated cluster of 3 raylets, interrupted and resumed, every trial accounted for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tinyray.cli import main
from tinyray.errors import UserError
from tinyray.scale import ScaleConfig, _overlap, growth, validate


def test_slots_pack_four_trials_a_gpu():
    config = ScaleConfig(trials=500, nodes=8, gpus_per_node=4, gpus_per_trial=0.25)
    assert config.slots_per_node == 16 and config.slots == 128 and config.interrupt_at == 250


def test_growth_is_cpu_per_trial_in_windows_of_trials_done():
    done = np.arange(0, 101)
    # 10 ms a trial for the first half, 30 ms a trial after: a cost that grows
    cpu = np.where(done <= 50, 0.010 * done, 0.5 + 0.030 * (done - 50))
    samples = pd.DataFrame({"done": done, "driver_cpu_seconds": cpu, "driver_rss_bytes": 2**20 * (100 + done),
                            "results_bytes": 2**20 * done, "mlflow_bytes": 2**20 * done / 2})
    table = growth(samples, 100, windows=2)
    assert table["ms_per_trial"].tolist() == pytest.approx([10.0, 30.0])
    assert table["rss_mb"].tolist() == pytest.approx([150.0, 200.0])
    assert table["results_mb"].tolist() == pytest.approx([50.0, 100.0])


def test_overlap_counts_only_the_window():
    starts, ends = np.array([0.0, 5.0, 9.0]), np.array([4.0, 8.0, 12.0])
    assert _overlap(starts, ends, 2.0, 10.0) == pytest.approx(2.0 + 3.0 + 1.0)


@pytest.mark.parametrize("options, message", [
    (dict(resume_at=40, trials=40), "--resume-at 40 must be below --trials 40"),
    (dict(gpus_per_trial=2.0, gpus_per_node=1.0), "more than a node's 1 GPUs"),
    (dict(tracking=("postgres",)), "subset of sqlite,server"),
    (dict(max_epochs=20), "exceeds the 9 epochs recorded"),
])
def test_bad_options_are_refused_before_anything_starts(tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        validate(ScaleConfig(out=tmp_path / "out", **options))
    assert not (tmp_path / "out").exists()


def test_an_out_folder_with_a_benchmark_is_refused_in_one_line(tmp_path, capfd):
    (tmp_path / "scale.json").write_text("{}")
    code = main(["bench", "scale", "--out", str(tmp_path)])
    _, err = capfd.readouterr()
    assert code == 2 and err.count("\n") == 1 and "already holds a scale benchmark" in err


@pytest.mark.slow
@pytest.mark.integration
def test_forty_replayed_trials_on_three_raylets_are_all_accounted_for(tmp_path):
    from mlflow import MlflowClient

    from tinyray.scale import run_scale

    config = ScaleConfig(trials=40, nodes=3, gpus_per_node=1, gpus_per_trial=0.25, tracking=("sqlite",),
                         replay_speed=0.05, resume_at=20, out=tmp_path / "scale")
    result = run_scale(config)
    run = result["runs"][0]
    # every trial exactly once, across an interruption and a resume: in trials.csv and as one MLflow run
    assert run["complete"], run
    assert run["trials"] == run["trials_unique"] == run["mlflow_trial_runs"] == run["mlflow_trials_unique"] == 40
    assert run["mlflow_matches_trials"] and run["resume_seconds"] is not None
    # every record says replay
    assert run["all_replay"] and run["replay_tagged_runs"] == 40
    # the front and the registered formula
    assert run["front_size"] >= 3 and run["formula_model_uri"], run
    results = config.out / "sqlite" / "scale40"
    trials = pd.read_csv(results / "trials.csv")
    front = pd.read_csv(results / "front.csv")
    assert len(front) == run["front_size"]
    assert trials["node_id"].nunique() > 1  # the trials spread over the simulated nodes
    client = MlflowClient(tracking_uri=f"sqlite:///{(config.out / 'sqlite' / 'mlflow.db').resolve()}")
    name = run["formula_model_uri"].split("/")[1]
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == 1
    parent = client.get_run(client.search_runs(
        [client.get_experiment_by_name("scale40").experiment_id], "tags.`tinyray.kind` = 'search'")[0].info.run_id)
    assert parent.data.tags["setting.trainer"] == "replay" and "REPLAY" in parent.data.tags["mlflow.note.content"]
    # the benchmark's own files
    assert {p.name for p in config.out.iterdir()} >= {"scale.json", "scale_samples.csv", "scale.png"}
    assert run["busy"] > 0 and run["driver_ms_per_trial"] > 0 and run["peak_driver_rss_bytes"] > 0
