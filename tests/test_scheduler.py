"""The multi-objective ASHA: rung decisions on hand-made cases, its JSON state, and the Ray Tune adapter."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tinyray.errors import UserError
from tinyray.scheduler import CONTINUE, STOP, MOASHA, rank_positions


class FakeTrial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def fill(scheduler: MOASHA, results: list[tuple[float, int]], epoch: int = 1, prefix: str = "t") -> list[str]:
    return [scheduler.on_result(f"{prefix}{i}", epoch, top1, flops) for i, (top1, flops) in enumerate(results)]


def test_rungs_are_grace_period_times_powers_of_eta_below_max_t():
    assert MOASHA(9, 1, 3).milestones == (1, 3)
    assert MOASHA(10, 1, 2).milestones == (1, 2, 4, 8)
    assert MOASHA(3, 1, 3).milestones == (1,)
    assert MOASHA(3, 3, 3).milestones == ()


def test_rank_positions_are_positions_not_an_argsort():
    # fronts: {0.9@20, 0.5@10, 0.3@5} then {0.6@30}; inside the first front the two ends (infinite crowding)
    # come first, the more accurate end before the cheaper one, then the middle point.
    top1 = np.array([0.5, 0.9, 0.3, 0.6])
    flops = np.array([10, 20, 5, 30])
    positions = rank_positions(top1, flops)
    assert positions.tolist() == [2, 0, 1, 3]
    # an argsort of the same order would be [1, 2, 0, 3]: result 0 would be read as "position 1"
    assert np.argsort(positions).tolist() == [1, 2, 0, 3]
    # ranking only the fronts that hold the first places: theirs exact, the rest beyond
    assert rank_positions(top1, flops, first=2).tolist() == [2, 0, 1, 4]


def test_a_rungs_cut_from_its_first_fronts_only_is_the_cut_from_all_of_them():
    rng = np.random.default_rng(0)
    for number in range(600):
        n = int(rng.integers(1, 60))
        top1 = np.round(rng.uniform(size=n), 2) if number % 2 else rng.uniform(size=n)  # ties, and none
        flops = rng.integers(1, 20, size=n) * 10 if number % 3 == 0 else rng.integers(10, 10_000, size=n)
        for eta in (2, 3, 4):
            kept = -(-n // eta)
            whole, first = rank_positions(top1, flops), rank_positions(top1, flops, kept)
            assert np.array_equal(whole < kept, first < kept)
            assert np.array_equal(whole[first < n], first[first < n])


def test_a_newcomer_that_dominates_every_other_result_always_continues():
    rng = np.random.default_rng(0)
    for size in (3, 5, 10, 30):
        scheduler = MOASHA(9, 1, 3)
        others = [(float(rng.uniform(0.1, 0.8)), int(rng.integers(10, 1000))) for _ in range(size)]
        fill(scheduler, others)
        best_top1 = max(top1 for top1, _ in others) + 0.01
        cheapest = min(flops for _, flops in others) - 1
        # placed last in arrival order, where an argsort misread as ranks would stop it
        assert scheduler.on_result("newcomer", 1, best_top1, cheapest) == CONTINUE


def test_a_dominated_trial_stops_once_the_rung_is_full():
    scheduler = MOASHA(9, 1, 3)
    # two results: fewer than eta, so every trial continues (ASHA promotes early)
    assert fill(scheduler, [(0.6, 100), (0.5, 50)]) == [CONTINUE, CONTINUE]
    # the third is dominated by both: its position 2 is outside the top ceil(3/3) = 1
    assert scheduler.on_result("dominated", 1, 0.4, 200) == STOP
    assert scheduler.decision("dominated", 1) == STOP


def test_the_cheap_end_of_the_front_survives_where_single_metric_asha_would_stop_it():
    scheduler = MOASHA(9, 1, 3)
    fill(scheduler, [(0.6, 400), (0.55, 300), (0.5, 200)])
    # the least accurate so far, but by far the cheapest: it is an end of the first front
    assert scheduler.on_result("tiny", 1, 0.3, 20) == CONTINUE


def test_crowding_distance_breaks_ties_inside_a_front():
    # every result below is on one front (more accurate = more FLOPs). With five, ceil(5/3) = 2 continue: the
    # two ends. With seven, 3 continue: the two ends and the most isolated interior point.
    scheduler = MOASHA(9, 1, 3)
    fill(scheduler, [(0.9, 900), (0.1, 100), (0.2, 200), (0.22, 220)])
    assert scheduler.on_result("crowded", 1, 0.21, 210) == STOP  # squeezed between 0.2 and 0.22
    fill(scheduler, [(0.05, 1000)], prefix="x")  # dominated: fills the rung
    assert scheduler.on_result("isolated", 1, 0.6, 600) == CONTINUE  # alone in the gap 0.22..0.9


def test_flops_alone_never_stop_a_trial_as_accurate_as_the_best():
    # after one epoch every network is at chance: Pareto ranking alone would keep only the cheapest third
    scheduler = MOASHA(9, 1, 3)
    assert fill(scheduler, [(0.1, 100 * (i + 1)) for i in range(6)]) == [CONTINUE] * 6
    assert scheduler.on_result("within-epsilon", 1, 0.105, 900) == CONTINUE
    assert scheduler.on_result("worse", 1, 0.05, 1000) == STOP
    strict = MOASHA(9, 1, 3, epsilon=0.0)
    assert fill(strict, [(0.1, 100), (0.1, 200), (0.1, 300)]) == [CONTINUE] * 3  # exact ties with the best


def test_decisions_are_final_and_a_trial_at_max_t_stops():
    scheduler = MOASHA(9, 1, 3)
    fill(scheduler, [(0.6, 100), (0.5, 50), (0.7, 10)])
    assert scheduler.on_result("t0", 2, 0.0, 100) == CONTINUE  # between rungs
    assert scheduler.on_result("t0", 1, 0.0, 100) == CONTINUE  # already decided at rung 1: not re-ranked
    assert len(scheduler.rungs[1]) == 3
    # a resumed trial reports its rung epoch again: the decision taken then, not a new ranking nor a free pass
    again = MOASHA(9, 1, 3)
    assert fill(again, [(0.6, 100), (0.7, 50), (0.5, 200)]) == [CONTINUE, CONTINUE, STOP]
    assert [again.on_result(f"t{i}", 1, 0.9, 1) for i in range(3)] == [CONTINUE, CONTINUE, STOP]
    assert len(again.rungs[1]) == 3 and again.on_result("t2", 2, 0.9, 1) == CONTINUE  # between rungs: no decision
    assert scheduler.on_result("t0", 9, 0.8, 100) == STOP


def test_state_round_trip_continues_with_the_same_decisions():
    rng = np.random.default_rng(1)
    stream = [(f"t{i % 12}", int(rng.choice([1, 3, 5])), float(rng.uniform()), int(rng.integers(1, 500)))
              for i in range(40)]
    straight = MOASHA(9, 1, 3)
    for item in stream[:20]:
        straight.on_result(*item)
    state = json.loads(json.dumps(straight.to_dict()))
    assert state["version"] == 1
    restored = MOASHA.from_dict(state)
    assert restored.to_dict() == straight.to_dict()
    fresh = MOASHA(9, 1, 3)
    after_restore = [restored.on_result(*item) for item in stream[20:]]
    expected = [straight.on_result(*item) for item in stream[20:]]
    assert after_restore == expected
    assert STOP in expected and CONTINUE in expected
    # the saved rungs decide: a scheduler without them decides the same stream differently
    assert [fresh.on_result(*item) for item in stream[20:]] != expected


def test_from_dict_rejects_other_versions_and_damaged_states():
    with pytest.raises(UserError, match="version"):
        MOASHA.from_dict({"version": 99})
    state = MOASHA(9, 1, 3).to_dict()
    state["rungs"][0]["results"] = [{"trial_id": "a", "top1": 0.5}]
    with pytest.raises(UserError, match="damaged"):
        MOASHA.from_dict(state)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="grace-period"):
        MOASHA(3, 5, 3)
    with pytest.raises(UserError, match="reduction-factor"):
        MOASHA(9, 1, 1)
    with pytest.raises(UserError, match="max_t"):
        MOASHA(0, 1, 3)
    with pytest.raises(UserError, match="epsilon"):
        MOASHA(9, 1, 3, epsilon=-0.1)


def test_tune_adapter_decides_saves_and_a_restored_one_decides_the_same(tmp_path):
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from tinyray.tune.scheduler import MOASHAScheduler, read_state

    path = tmp_path / "scheduler.json"
    adapter = MOASHAScheduler(max_t=9, grace_period=1, reduction_factor=3, state_path=path)
    assert isinstance(adapter, FIFOScheduler)
    assert adapter.set_search_properties("top1", "max") is True
    with pytest.raises(UserError, match="mode 'max'"):
        adapter.set_search_properties("top1", "min")

    def result(epoch: int, top1: float, flops: int) -> dict:
        return {"training_iteration": epoch, "top1": top1, "flops": flops}

    assert adapter.on_trial_result(None, FakeTrial("a"), {"training_iteration": 1}) == TrialScheduler.CONTINUE
    assert not path.exists()  # nothing recorded, nothing written
    for trial_id, top1, flops in [("a", 0.6, 100), ("b", 0.5, 50), ("c", 0.4, 200)]:
        adapter.on_trial_result(None, FakeTrial(trial_id), result(1, top1, flops))
    assert adapter.core.decision("c", 1) == STOP
    assert read_state(path).to_dict() == adapter.core.to_dict()
    # a journal: the state when the first result was recorded, then one line per result recorded since, appended
    state, end = json.JSONDecoder().raw_decode(path.read_text())
    assert [[r["trial_id"] for r in rung["results"]] for rung in state["rungs"]] == [["a"], []]
    assert [json.loads(line)["trial_id"] for line in path.read_text()[end:].splitlines() if line] == ["b", "c"]

    copy = tmp_path / "copy.json"  # a folder has one driver (driver.lock): the restored scheduler gets its own file
    copy.write_text(path.read_text())
    restored = MOASHAScheduler(max_t=9, grace_period=1, reduction_factor=3, state_path=copy)
    assert restored.core.to_dict() == adapter.core.to_dict()
    upcoming = [("d", 1, 0.45, 60), ("e", 1, 0.2, 500), ("a", 3, 0.7, 100), ("b", 3, 0.6, 50), ("d", 3, 0.3, 60)]
    for trial_id, epoch, top1, flops in upcoming:
        expected = adapter.on_trial_result(None, FakeTrial(trial_id), result(epoch, top1, flops))
        assert restored.on_trial_result(None, FakeTrial(trial_id), result(epoch, top1, flops)) == expected
    assert adapter.on_trial_result(None, FakeTrial("a"), result(9, 0.8, 100)) == TrialScheduler.STOP

    with pytest.raises(UserError, match="same options"):
        MOASHAScheduler(max_t=27, grace_period=1, reduction_factor=3, state_path=path)
    before = path.read_text()
    path.write_text(before + '{"epoch": 1, "trial_id": "f", "top')  # a crash in the middle of an append
    folded = MOASHAScheduler(max_t=9, grace_period=1, reduction_factor=3, state_path=path)
    assert folded.core.to_dict() == adapter.core.to_dict() and json.loads(path.read_text()) == adapter.core.to_dict()
    path.write_text(before.replace('"trial_id": "b"', '"trial_id": "b', 1))
    with pytest.raises(UserError, match="damaged"):
        read_state(path)
    adapter.save(str(tmp_path / "saved.json"))
    other = MOASHAScheduler(max_t=9, grace_period=1, reduction_factor=3)
    other.restore(str(tmp_path / "saved.json"))
    assert other.core.to_dict() == adapter.core.to_dict()


def test_the_tune_adapter_chooses_the_trial_fifo_chooses_from_the_live_ones():
    import random

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler

    from tinyray.tune.scheduler import MOASHAScheduler

    class Controller:  # what a scheduler sees of Tune's controller
        def __init__(self) -> None:
            self.trials: list = []

        def get_trials(self) -> list:
            return self.trials

        def get_live_trials(self) -> set:
            return {trial for trial in self.trials if trial.status != Trial.TERMINATED}

    class T(FakeTrial):
        def __hash__(self) -> int:
            return hash(self.trial_id)

    chooser, fifo, controller, draw = MOASHAScheduler(max_t=9), FIFOScheduler(), Controller(), random.Random(0)
    statuses = [Trial.PENDING, Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED, Trial.TERMINATED, Trial.ERROR]
    for step in range(300):
        if draw.random() < 0.3:
            controller.trials.append(T(f"t{step}"))
            controller.trials[-1].status = Trial.PENDING
        for trial in controller.trials:
            if trial.status != Trial.TERMINATED and draw.random() < 0.2:
                trial.status = draw.choice(statuses)
        assert chooser.choose_trial_to_run(controller) is fifo.choose_trial_to_run(controller)
    assert any(trial.status == Trial.TERMINATED for trial in controller.trials)


def test_importing_the_scheduler_imports_neither_ray_nor_pymoo():
    code = "import sys, tinyray.scheduler; print('ray' in sys.modules, 'pymoo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.integration
def test_moasha_in_a_real_tune_run(tmp_path):
    import ray
    from ray import tune

    from tinyray.tune.scheduler import MOASHAScheduler, read_state

    # three trials on a front (more accurate = more FLOPs), then three dominated ones that arrive later
    trials = [(0.1 * (i + 1), 100 * (i + 1)) for i in range(3)] + [(0.05, 10_000 + i) for i in range(3)]

    def trainable(config: dict) -> None:
        quality, flops = trials[config["index"]]
        for epoch in range(1, 10):  # noqa: B007
            tune.report({"top1": quality * epoch / 9, "flops": flops})

    state = tmp_path / "scheduler.json"
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        grid = tune.Tuner(
            trainable,
            param_space={"index": tune.grid_search(list(range(len(trials))))},
            tune_config=tune.TuneConfig(
                metric="top1", mode="max", max_concurrent_trials=1,
                scheduler=MOASHAScheduler(max_t=9, grace_period=1, reduction_factor=3, state_path=state),
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="moasha", verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    epochs = {result.config["index"]: result.metrics["training_iteration"] for result in grid}
    assert all(epochs[i] == 9 for i in range(3))  # the whole front trained to the end
    assert all(epochs[i] == 1 for i in range(3, 6))  # the dominated ones stopped at the first rung
    saved = read_state(state)
    assert len(saved.rungs[1]) == 6 and len(saved.rungs[3]) == 3
