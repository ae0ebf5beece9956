"""``tinyray bench scale``: its arithmetic on made-up samples, its refusals, and (slow) the whole machinery at CI
size: 40 replayed trials on a simulated cluster of 3 raylets, interrupted and resumed, every trial accounted for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tinyray.cli import main
from tinyray.errors import UserError
from tinyray.files import read_results_csv
from tinyray.scale import Driver, ScaleConfig, _driver_phases, _overlap, growth, validate


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


def test_growth_counts_trial_phases_only_and_continues_the_resumed_drivers_count():
    # two drivers of 50 trials each at 10 ms a trial; each pays 5 s of CPU starting and 2 s finishing
    rows = []
    for number, cpu0 in enumerate((0.0, 7.5)):
        rows.append({"driver": number, "done": 50 * number, "driver_cpu_seconds": cpu0 + 5.0, "phase": "start-up"})
        for done in range(0, 51):
            rows.append({"driver": number, "done": 50 * number + done, "driver_cpu_seconds": cpu0 + 5.0 + 0.01 * done,
                         "phase": "trials"})
        rows.append({"driver": number, "done": 50 * number + 50, "driver_cpu_seconds": cpu0 + 7.5, "phase": "finish"})
    samples = pd.DataFrame(rows).assign(driver_rss_bytes=2**20, results_bytes=0.0, mlflow_bytes=0.0)
    table = growth(samples, 100, windows=5)
    assert table["ms_per_trial"].tolist() == pytest.approx([10.0] * 5)


def test_driver_phases_split_start_up_trials_and_finish():
    driver = Driver(process=None, launched=100.0, cpu_seconds=9.0)
    driver.events = [(106.0, {"event": "running", "done": 0}), (108.0, {"event": "complete", "done": 1}),
                     (110.0, {"event": "complete", "done": 2})]
    # 1 CPU second a wall second while starting (to 106), 0.5 while trials run (to 110), then 1 again
    samples = [{"driver": 0, "time": t, "driver_cpu_seconds": c, "done": d}
               for t, c, d in ((102.0, 2.0, 0), (106.0, 6.0, 0), (110.0, 8.0, 2), (111.0, 9.0, 2))]
    phases = _driver_phases([driver], samples)
    assert phases["driver_startup_cpu_seconds"] == pytest.approx([6.0])
    assert phases["driver_trial_phase_cpu_seconds"] == pytest.approx([2.0])
    assert phases["driver_finish_cpu_seconds"] == pytest.approx([1.0])
    assert phases["driver_ms_per_trial_running"] == pytest.approx(1000.0)
    assert [row["phase"] for row in samples] == ["start-up", "trials", "trials", "finish"]


def test_overlap_counts_only_the_window():
    starts, ends = np.array([0.0, 5.0, 9.0]), np.array([4.0, 8.0, 12.0])
    assert _overlap(starts, ends, 2.0, 10.0) == pytest.approx(2.0 + 3.0 + 1.0)


@pytest.mark.parametrize("options, message", [
    (dict(resume_at=40, trials=40), "--resume-at 40 must be below --trials 40"),
    (dict(gpus_per_trial=2.0, gpus_per_node=1.0), "more than a node's 1 GPUs"),
    (dict(tracking=("postgres",)), "subset of sqlite,server"),
    (dict(max_epochs=20), "exceeds the 6 epochs recorded"),
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

    # one declared GPU a node and a whole GPU a trial: a node holds one trial, so trials that run at once run on
    # different nodes (a generation of 4 is handed out at once to 3 slots), whatever Ray's placement policy
    config = ScaleConfig(trials=40, nodes=3, gpus_per_node=1, gpus_per_trial=1.0, tracking=("sqlite",),
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
    trials = read_results_csv(results / "trials.csv")
    front = read_results_csv(results / "front.csv")
    assert len(front) == run["front_size"]
    # every trial ran on a node of the simulated cluster, and they spread over its nodes. (With four slots a node,
    # a loaded CI machine once ran all 40 on one node: Ray fills a node before spreading, so only the one-slot
    # nodes above make the spreading certain.)
    assert trials["node_id"].notna().all() and (trials["node_id"].str.len() == 56).all()
    assert trials["node_id"].nunique() >= 2, trials["node_id"].value_counts()
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


def test_tree_cpu_counts_a_process_and_its_children():
    import os
    import signal
    import subprocess
    import sys
    import time

    from tinyray.scale import tree_cpu_seconds

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\ntime.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time\n"
                               f"subprocess.Popen([sys.executable, '-c', {burn!r}])\ntime.sleep(60)"],
                              start_new_session=True)
    try:
        deadline = time.time() + 30
        while tree_cpu_seconds(parent.pid) < 0.5 + 0.01 and time.time() < deadline:
            time.sleep(0.2)
        # the parent itself burns nearly nothing: the half second is its child's
        assert tree_cpu_seconds(parent.pid) >= 0.5
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert tree_cpu_seconds(parent.pid) == 0.0  # gone: nothing to count
