"""The replay trainer: recorded curves with their recorded noise, the trainer's callback contract, its checkpoint,
and the option that selects it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tinyray.cli import main
from tinyray.errors import UserError
from tinyray.replay import ReplayCurves, check_replay, replay_candidate, replay_curves

POINT = (0.6, 0.8, 0.6)


def test_replay_plays_the_landscape_and_its_noise_is_a_recorded_repeat_of_a_near_network():
    from tinyray.landscape import LANDSCAPE_FILE, NOISE_NEIGHBOURS, Landscape

    curves = replay_curves()
    assert curves.epochs == 6  # the landscape's runs
    landscape = Landscape.load()
    mean, seconds = curves.curves.curve(*POINT)
    exact, exact_seconds = landscape.curve(*POINT)
    np.testing.assert_allclose(mean, exact, atol=0.01)  # the shipped grid is the landscape's GP, interpolated
    np.testing.assert_allclose(seconds, exact_seconds, rtol=0.02)
    # every draw is the mean curve plus +-(seed 0 - seed 1) / sqrt 2 of one of the nearest networks with two seeds
    runs = pd.read_csv(LANDSCAPE_FILE).pivot_table(index=["net", "epoch"], columns="seed", values="top1")
    differences = ((runs[0] - runs[1]) / np.sqrt(2)).unstack("epoch")
    point = (np.array(POINT) - landscape._low) / (landscape._high - landscape._low)
    distance = pd.Series(np.linalg.norm(landscape._x - point, axis=1), index=landscape.names)
    near = differences.loc[distance.nsmallest(NOISE_NEIGHBOURS).index].to_numpy()
    allowed = np.concatenate([near, -near])
    seen = set()
    for seed in range(60):
        top1, _ = curves.replay(*POINT, seed=seed)
        match = np.flatnonzero(np.abs(allowed - (top1 - mean)).max(axis=1) < 1e-9)
        assert len(match) >= 1, f"seed {seed}: not a recorded repeat of a near network"
        seen.add(int(match[0]))
    assert len(seen) == 2 * NOISE_NEIGHBOURS  # every neighbour, both signs
    # the simulator of tinyray bench search draws from the same repeats
    assert landscape.repeats.differences.shape == (len(landscape.repeats), 6)


def test_replay_is_seeded_by_the_search_seed_and_the_candidate():
    curves = replay_curves()
    a, seconds = curves.replay(*POINT, seed=3)
    np.testing.assert_array_equal(a, curves.replay(*POINT, seed=3)[0])
    assert not np.array_equal(a, curves.replay(*POINT, seed=4)[0])
    assert not np.array_equal(a, curves.replay(0.61, 0.8, 0.6, seed=3)[0])
    np.testing.assert_array_equal(seconds, curves.curves.curve(*POINT)[1])  # time: the recorded seconds, no noise


def test_replay_sleeps_the_scaled_recorded_time_and_follows_the_trainer_callback_contract():
    slept: list[float] = []
    reported = []

    def stop_after_first(epoch, checkpoint):
        reported.append((epoch, checkpoint()))
        return True

    history = replay_candidate(*POINT, epochs=3, seed=1, speed=0.1, callback=stop_after_first, sleep=slept.append)
    assert [e.epoch for e in history] == [1]  # a True return stops the run, like train_candidate's
    _, seconds = replay_curves().replay(*POINT, seed=1)
    assert slept == pytest.approx([0.1 * seconds[0]])
    epoch, state = reported[0]
    assert state["epoch"] == 1 and state["run"]["epochs"] == 3
    assert np.isnan(epoch.val_loss) and epoch.images_per_second == 0.0  # not recorded: MLflow skips NaN

    # continuing from the checkpoint replays the rest, exactly as an uninterrupted run
    rest = replay_candidate(*POINT, epochs=3, seed=1, speed=0.0, state=state, sleep=lambda s: None)
    whole = replay_candidate(*POINT, epochs=3, seed=1, speed=0.0, sleep=lambda s: None)
    assert [e.epoch for e in rest] == [2, 3]
    assert [e.top1 for e in history + rest] == [e.top1 for e in whole]
    with pytest.raises(ValueError, match="another run"):
        replay_candidate(0.5, 0.8, 0.6, epochs=3, seed=1, speed=0.0, state=state, sleep=lambda s: None)


def test_replay_checkpoint_is_json_in_the_same_tune_checkpoint(tmp_path):
    from ray import tune

    from tinyray.tune.trainable import _load_state, _save_state

    state = {"version": 1, "run": {"r": 0.5}, "epoch": 2}
    _save_state(state, tmp_path, "replay")
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no torch in a replay's process
    assert _load_state(tune.Checkpoint.from_directory(str(tmp_path))) == state


def test_replay_refuses_what_was_not_recorded():
    with pytest.raises(UserError, match="exceeds the 6 epochs recorded"):
        check_replay(7, 0.1)
    with pytest.raises(UserError, match="--replay-speed"):
        check_replay(2, 1000.0)
    assert isinstance(replay_curves(), ReplayCurves)


def test_search_replay_options_are_one_line_errors(tmp_path, capfd):
    storage = tmp_path / "results"
    code = main(["search", "--budget", "200M", "--trainer", "replay", "--max-epochs", "12", "--storage", str(storage)])
    _, err = capfd.readouterr()
    assert code == 2 and err.count("\n") == 1 and "--max-epochs 12 exceeds the 6 epochs recorded" in err
    with pytest.raises(SystemExit) as exit_:  # argparse's choices: a usage error, one line
        main(["search", "--budget", "200M", "--trainer", "dream", "--storage", str(storage)])
    code = exit_.value.code
    _, err = capfd.readouterr()
    assert code == 2 and err.count("\n") == 1 and "--trainer" in err
    assert not storage.exists()


# what a replay trial's process runs: Tune's session and Ray's node id stood in for, the trial's config as the
# driver describes it; prints the heavy modules imported and whether the data was loaded
TRIAL_PROCESS = """
import json, sys
from types import SimpleNamespace

import ray
from ray import tune

from tinyray.data import DataSpec
from tinyray.space import load_space
from tinyray.tune import trainable

config, reports = json.loads(sys.argv[1]), []
tune.report = lambda metrics, checkpoint=None: reports.append(metrics)
tune.get_checkpoint = lambda: None
ray.get_runtime_context = lambda: SimpleNamespace(get_node_id=lambda: "local")
settings = trainable.TrialSettings(space=str(load_space().source), data=DataSpec(), max_epochs=2, recipe="proxy",
                                   seed=0, threads=1, trainer="replay", replay_speed=0.0)
trainable.run_trial(config, settings)
print(json.dumps({"imported": [m for m in ("torch", "timm", "scipy") if m in sys.modules],
                  "data_loaded": trainable._data.cache_info().currsize, "reports": reports}))
"""


def test_a_replay_trials_process_imports_no_torch_and_loads_no_data(space):
    """128 replay slots must fit one machine: the driver describes the trial, so its process stays small."""
    import json
    import os
    import subprocess
    import sys
    from functools import partial
    from pathlib import Path

    import tinyray
    from tinyray.data import DataSpec, load_data
    from tinyray.tracking import TRIAL_PARAMS
    from tinyray.tune.runtime import _describe
    from tinyray.tune.searcher import TinySearcher

    class OneCandidate:
        def ask(self, trial_id):
            return type("Candidate", (), dict(zip("rdw", POINT)))()

    describe = partial(_describe, space, load_data(DataSpec()))
    config = TinySearcher(OneCandidate(), max_epochs=2, describe=describe).suggest("t1")  # as a replay search's
    assert set(config) == set(TRIAL_PARAMS) and config["flops"] > 0
    assert TinySearcher(OneCandidate(), max_epochs=2).suggest("t2") == dict(zip("rdw", POINT))  # a real search's

    here = os.pathsep.join([str(Path(tinyray.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", TRIAL_PROCESS, json.dumps(config)], capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": here})
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["imported"] == [] and found["data_loaded"] == 0
    assert [r["epoch"] for r in found["reports"]] == [1, 2]
    assert all({key: r[key] for key in TRIAL_PARAMS} == config and r["trainer"] == "replay" for r in found["reports"])
