"""``tinyray bench overhead``: its arithmetic on made-up trial timings, its refusals, and (slow) a real search of 4
short trials, broken down so that the parts add up to the wall clock."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tinyray.cli import main
from tinyray.errors import UserError
from tinyray.files import read_results_csv
from tinyray.overhead import breakdown, process_kind, trial_times


def _result_json(folder, trial_id, epochs):
    """A trial's result.json: ``epochs`` is a list of (epoch_end, epoch_seconds, time_this_iter_s)."""
    folder.mkdir(parents=True)
    total, lines = 0.0, []
    for number, (end, seconds, this_iter) in enumerate(epochs, 1):
        total += this_iter
        lines.append(json.dumps({"trial_id": trial_id, "training_iteration": number, "epoch_end": end,
                                 "epoch_seconds": seconds, "time_this_iter_s": this_iter, "time_total_s": total}))
    (folder / "result.json").write_text("\n".join(lines) + "\n")


def test_trial_times_start_at_the_trainable_and_end_after_its_last_report(tmp_path):
    # starts at 100: 1 s building, epoch 1 to 110 (9 s); 0.5 s reporting, epoch 2 to 120 (9.5 s), 0.5 s reporting
    _result_json(tmp_path / "trial_a", "a", [(110.0, 9.0, 10.0), (120.0, 9.5, 10.0)])
    # a restored trial's result.json repeats epoch 1: counted once
    _result_json(tmp_path / "trial_b", "b", [(105.0, 4.0, 5.0)])
    with open(tmp_path / "trial_b" / "result.json", "a") as out:
        out.write(json.dumps({"trial_id": "b", "training_iteration": 1, "epoch_end": 105.0, "epoch_seconds": 4.0,
                              "time_this_iter_s": 5.0, "time_total_s": 5.0}) + "\nnot json\n")
    table = trial_times(tmp_path).set_index("trial_id")
    assert table.loc["a", ["start", "end", "own_seconds", "epochs", "epoch_seconds"]].tolist() == pytest.approx(
        [100.0, 120.0, 20.0, 2, 18.5])
    assert table.loc["b", ["start", "end", "epochs"]].tolist() == pytest.approx([100.0, 105.0, 1])


def test_breakdown_adds_up_to_the_wall_clock():
    # 2 slots; launched at 0, exits at 40. Trials: [5, 15], [6, 20], [16, 30] (own time 10, 14, 14; epochs 9, 12, 13)
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "start": [5.0, 6.0, 16.0], "end": [15.0, 20.0, 30.0],
                           "own_seconds": [10.0, 14.0, 14.0], "epochs": [2, 2, 2], "epoch_seconds": [9.0, 12.0, 13.0]})
    result = breakdown(trials, launched=0.0, exited=40.0, slots=2)
    assert result["wall_seconds"] == 40.0
    assert (result["startup_seconds"], result["trial_phase_seconds"], result["finish_seconds"]) == (5.0, 25.0, 10.0)
    slot = result["slot_seconds"]
    # before the last start (5..16): 22 slot-s, trials busy 10 + 10 = 20; after (16..30): 28 slot-s, busy 4 + 14
    assert slot["idle_while_trials_remain"] == pytest.approx(2.0)
    assert slot["tail"] == pytest.approx(10.0)
    assert slot["epochs"] == 34.0 and slot["in_trials"] == 4.0
    assert sum(slot.values()) == pytest.approx(2 * result["trial_phase_seconds"])
    assert result["per_trial_seconds"] == pytest.approx((40.0 - 38.0 / 2) / 3)
    assert result["per_trial_fixed_seconds"] + result["per_trial_growing_seconds"] == pytest.approx(
        result["per_trial_seconds"])
    assert result["utilisation"] == pytest.approx(38.0 / 80.0)


def test_breakdown_of_no_trial_is_refused():
    empty = pd.DataFrame(columns=["trial_id", "start", "end", "own_seconds", "epochs", "epoch_seconds"])
    with pytest.raises(UserError, match="no trial"):
        breakdown(empty, 0.0, 1.0, 2)


@pytest.mark.parametrize(("cmdline", "name", "kind"), [
    (["ray::ImplicitFunc.train"], "ray::ImplicitFunc", "trials"),
    (["ray::IDLE"], "ray::IDLE", "ray"),
    (["/usr/bin/raylet", "--node"], "raylet", "ray"),
    (["/v/bin/python", "/v/lib/site-packages/ray/_private/log_monitor.py"], "python", "ray"),
    (["sshd"], "sshd", "other"),
])
def test_processes_are_told_apart(cmdline, name, kind):
    assert process_kind(12345678, 1, cmdline, name) == kind
    assert process_kind(1, 1, cmdline, name) == "driver"


def test_search_args_that_the_benchmark_sets_are_refused_in_one_line(tmp_path, capfd):
    code = main(["bench", "overhead", "--out", str(tmp_path / "o"), "--search-args", "--trials 5"])
    err = capfd.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--trials" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_real_search_is_broken_down(tmp_path, capfd):
    out = tmp_path / "bench"
    code = main(["bench", "overhead", "--trials", "4", "--budget", "60M", "--out", str(out), "--json", "--search-args",
                 "--max-epochs 1 --data synthetic:120/60 --pop-size 4 --scheduler fifo"])
    assert code == 0
    result = json.loads(capfd.readouterr().out)
    assert result == json.loads((out / "overhead.json").read_text())
    assert result["trials"] == 4 and result["slots"] >= 1
    parts = result["startup_seconds"] + result["trial_phase_seconds"] + result["finish_seconds"]
    assert parts == pytest.approx(result["wall_seconds"], abs=1e-6)
    assert sum(result["slot_seconds"].values()) == pytest.approx(result["slots"] * result["trial_phase_seconds"])
    assert result["slot_seconds"]["epochs"] > 0 and result["startup_seconds"] > 0 and result["finish_seconds"] > 0
    assert 0 < result["utilisation"] <= 1 and result["cpu_seconds"]["trials"] > 0 and result["cpu_seconds"]["driver"] > 0
    assert len(read_results_csv(out / "overhead_trials.csv")) == 4
    # a second run into the same folder would mix two searches: refused
    assert main(["bench", "overhead", "--trials", "4", "--out", str(out)]) == 2


# -- the start-up: the inputs load in a thread while Ray starts in the driver's main thread (session 13) ----------
def _start_with(monkeypatch, load, ray_error=None):
    """run search._start with ``load`` as the input loader and a stand-in Ray (the ordering is what is tested;
    the real Ray start is exercised by every search test); the calls made, in order."""
    import threading

    from tinyray import search

    calls = []
    def check(config):
        calls.append("check")
        return ("cat", "dog")  # a folder's checked classes, handed to the loader

    monkeypatch.setattr(search, "_check_inputs", check)
    monkeypatch.setattr(search, "_load_inputs", load)

    def start_ray(address):
        calls.append(("start_ray", threading.current_thread() is threading.main_thread()))
        if ray_error is not None:
            raise ray_error
        return True

    config = search.SearchConfig(budget=60e6, name="x")
    try:
        return search._start(config, start_ray, lambda: calls.append("stop_ray")), calls
    except Exception as exc:  # noqa: BLE001 - the test looks at which error came out
        return exc, calls


def test_the_inputs_load_beside_ray_and_ray_starts_on_the_main_thread(monkeypatch):
    import threading

    seen = []

    def load(config, classes):
        seen.append((threading.current_thread() is threading.main_thread(), classes))
        return "inputs"

    (inputs, started), calls = _start_with(monkeypatch, load)
    assert (inputs, started) == ("inputs", True)
    assert calls == ["check", ("start_ray", True)]  # ray.init sets its SIGTERM handler only on the main thread
    assert seen == [(False, ("cat", "dog"))]  # the folder is walked once, by the check, not again by the loader


def test_a_failing_input_stops_the_ray_it_started_and_its_error_comes_first(monkeypatch):
    from tinyray.errors import UserError

    def load(config, classes):
        raise UserError("the band holds no network")

    error, calls = _start_with(monkeypatch, load)
    assert isinstance(error, UserError) and "holds no network" in str(error)
    assert calls == ["check", ("start_ray", True), "stop_ray"]
    # both fail: the inputs' error, as when they ran one after the other
    error, calls = _start_with(monkeypatch, load, ray_error=UserError("cannot connect to Ray"))
    assert "holds no network" in str(error) and "stop_ray" not in calls
    # only Ray fails: its error
    error, calls = _start_with(monkeypatch, lambda config, classes: "inputs", ray_error=UserError("cannot connect to Ray"))
    assert "cannot connect to Ray" in str(error)
