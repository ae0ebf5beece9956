"""The search benchmark: learning-curve interpolation, the simulator's compute accounting, and the report."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from tinyray.bench import CURVES_FILE, BenchConfig, Curves, RunResult, hypervolume_curve, run_bench, simulate, write_outputs
from tinyray.errors import UserError


def small_table(epochs: int = 3) -> pd.DataFrame:
    """A 2 x 2 x 2 grid over the cube's bounds: bigger networks learn more and take longer per epoch."""
    rows = []
    for r, d, w in itertools.product((0.25, 1.0), (0.25, 1.25), (0.25, 1.0)):
        ceiling = 0.2 + 0.3 * r + 0.1 * d + 0.2 * w
        for epoch in range(1, epochs + 1):
            rows.append({"r": r, "d": d, "w": w, "epoch": epoch, "top1": 0.1 + (ceiling - 0.1) * epoch / epochs,
                         "seconds": epoch * (1.0 + 4 * r * d * w)})
    return pd.DataFrame(rows)


@pytest.fixture
def curves_path(tmp_path):
    path = tmp_path / "curves.csv"
    small_table().to_csv(path, index=False)
    return path


def test_curves_interpolate_between_grid_points_and_hit_them_exactly():
    curves = Curves(small_table())
    top1, seconds = curves.curve(1.0, 1.25, 1.0)
    assert top1.tolist() == pytest.approx([0.1 + 0.725 * e / 3 for e in (1, 2, 3)])
    assert seconds.tolist() == pytest.approx([6.0, 6.0, 6.0])  # seconds of each epoch, not cumulative
    middle, _ = curves.curve(0.625, 1.25, 1.0)
    low, _ = curves.curve(0.25, 1.25, 1.0)
    assert middle == pytest.approx((top1 + low) / 2)


def test_an_incomplete_grid_covers_only_budgets_below_its_first_incomplete_cell(space, tmp_path):
    table = small_table()
    assert Curves(table).max_budget(space) == float("inf")
    top = (table["r"] == 1.0) & (table["d"] == 1.25) & (table["w"] == 1.0)
    partial = Curves(table[~top])
    # the grid is one cell: without its top corner no budget is covered but those below the low corner
    assert partial.max_budget(space) < 10_000_000
    with pytest.raises(ValueError, match="lacks a corner"):
        partial.curve(0.5, 0.5, 0.5)
    with pytest.raises(UserError, match="every epoch"):
        Curves(table.iloc[1:])
    table[~top].to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(UserError, match="cover budgets up to"):
        run_bench(BenchConfig(seeds=1, trials=2, max_epochs=3, curves=tmp_path / "partial.csv"))


def test_simulator_spends_the_compute_cap_and_fifo_trains_every_trial_fully(space):
    config = BenchConfig(trials=6, max_epochs=3, seeds=1, pop_size=4)
    curves = Curves(small_table())
    fifo = simulate("b", 0, config, curves, space)
    assert fifo.epochs == 18 and fifo.stopped == 0
    # two workers: the run ends with a trial in flight, whose epochs are spent but finish nothing
    assert len(fifo.completed) == 5 and [row[0] for row in fifo.completed] == sorted(row[0] for row in fifo.completed)
    moasha = simulate("a", 0, config, curves, space)
    assert moasha.epochs == 18 and moasha.stopped > 0 and moasha.trials > fifo.trials


def test_the_qnehvi_method_plays_with_moasha_in_the_simulator(space):
    config = BenchConfig(trials=8, max_epochs=3, seeds=1, pop_size=4)
    run = simulate("e", 0, config, Curves(small_table()), space)
    assert run.epochs == 24 and run.stopped > 0 and run.trials > len(run.completed) >= 4
    assert all(0.0 <= top1 <= 1.0 and flops <= config.budget for _, _, top1, flops in run.completed)


def test_hypervolume_curve_is_monotone_and_counts_only_what_finished_by_each_level():
    run = RunResult(completed=[(3, 10.0, 0.5, 50_000_000), (6, 20.0, 0.7, 150_000_000)])
    levels = np.array([2.0, 3.0, 5.0, 6.0])
    curve = hypervolume_curve(run, levels, 200_000_000, axis=0)
    assert curve[0] == 0.0 and curve[1] == curve[2] > 0 and curve[3] > curve[2]
    assert hypervolume_curve(run, np.array([15.0]), 200_000_000, axis=1)[0] == curve[1]


def test_a_small_benchmark_reports_every_method(curves_path, tmp_path):
    config = BenchConfig(seeds=2, trials=5, max_epochs=3, pop_size=4, levels=4, curves=curves_path)
    result = run_bench(config)
    summary = result.summary
    assert summary["method"].tolist() == ["a", "b", "c", "d"]
    assert {"hv_final_mean", "hv_final_sd", "epochs_to_95", "epochs_ratio_to_b", "seconds_to_95",
            "seconds_ratio_to_b"} <= set(summary.columns)
    assert summary.loc[summary["method"] == "b", "epochs_ratio_to_b"].item() == 1.0
    curves = result.curves
    assert set(curves["axis"]) == {"epochs", "seconds"} and set(curves["seed"]) == {0, 1}
    assert curves["hypervolume"].between(0.0, 1.0).all()
    for _, group in curves.groupby(["method", "seed", "axis"]):
        assert len(group) == 4 and np.all(np.diff(group.sort_values("compute")["hypervolume"]) >= 0)
    assert set(result.wins) == {f"a_beats_{m}_{axis}" for m in "bcd" for axis in ("epochs", "seconds")}

    payload = json.loads(json.dumps(result.to_json()))
    assert payload["mode"] == "simulated" and len(payload["summary"]) == 4
    files = write_outputs(result, tmp_path / "out")
    assert all(path.exists() for path in files.values())
    assert "(a) tinyray" in result.table()


def test_first_seed_runs_other_seeds_and_each_seed_is_the_same_run_whatever_comes_before(curves_path):
    """Settings are tuned on seeds 10-19 and reported on 0-9: seed s must be one run, not a position in a list."""
    config = BenchConfig(seeds=2, trials=4, max_epochs=3, pop_size=4, levels=4, methods=("a",), curves=curves_path)
    both = run_bench(config).curves
    later = run_bench(replace(config, seeds=1, first_seed=1)).curves
    assert set(both["seed"]) == {0, 1} and set(later["seed"]) == {1}
    columns = ["method", "seed", "axis", "compute", "hypervolume"]
    pd.testing.assert_frame_equal(both.loc[both["seed"] == 1, columns].reset_index(drop=True),
                                  later[columns].reset_index(drop=True))


def test_runs_are_recorded_as_they_end_and_a_rerun_simulates_only_the_missing_ones(curves_path, tmp_path):
    """A long comparison survives a stopped session: --out keeps each (method, seed) run, a rerun reuses it."""
    config = BenchConfig(seeds=2, trials=4, max_epochs=3, pop_size=4, levels=4, methods=("a", "b"), curves=curves_path)
    out = tmp_path / "bench"
    first = run_bench(replace(config, seeds=1), out=out)  # a session that got through seed 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["a-0.json", "b-0.json"]
    record = json.loads((out / "runs" / "a-0.json").read_text())
    assert record["version"] == 1 and record["key"]["trials"] == 4 and len(record["key"]["curves_sha256"]) == 64
    assert record["simulated_in_seconds"] >= 0 and record["run"]["epochs"] == 12

    log = io.StringIO()
    resumed = run_bench(config, out=out, log=log)
    lines = log.getvalue().splitlines()
    assert lines[0] == f"reusing 2 of 4 runs recorded in {out / 'runs'}" and len(lines) == 3  # two simulated
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["a-0.json", "a-1.json", "b-0.json", "b-1.json"]
    fresh = run_bench(config)  # the same numbers as one uninterrupted run
    pd.testing.assert_frame_equal(resumed.curves, fresh.curves)
    pd.testing.assert_frame_equal(resumed.summary, fresh.summary)
    pd.testing.assert_frame_equal(first.curves, run_bench(replace(config, seeds=1)).curves)

    before = {p.name: p.read_bytes() for p in (out / "runs").iterdir()}
    with pytest.raises(UserError, match=r"made with other settings \(they differ in reduction_factor, trials\)"):
        run_bench(replace(config, trials=5, reduction_factor=2), out=out)
    other = tmp_path / "other.csv"
    small_table().assign(seconds=lambda t: 2 * t["seconds"]).to_csv(other, index=False)
    with pytest.raises(UserError, match="differ in curves_sha256"):
        run_bench(replace(config, curves=other), out=out)
    assert {p.name: p.read_bytes() for p in (out / "runs").iterdir()} == before  # refused runs change nothing
    (out / "runs" / "b-1.json").write_text("{not json")
    with pytest.raises(UserError, match="b-1.json"):
        run_bench(config, out=out)
    record["run"]["no_such_field"] = 1
    (out / "runs" / "b-1.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="b-1.json is damaged"):
        run_bench(config, out=out)


def test_bench_search_out_that_is_a_file_is_one_line(curves_path, tmp_path, capsys):
    from tinyray.cli import main

    taken = tmp_path / "taken"
    taken.write_text("x")
    code = main(["bench", "search", "--seeds", "1", "--trials", "2", "--max-epochs", "3", "--pop-size", "4",
                 "--methods", "b", "--curves", str(curves_path), "--out", str(taken)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--out" in err and "Traceback" not in err
    assert taken.read_text() == "x"


def test_the_shipped_curves_are_a_full_grid_over_the_cube(space):
    curves = Curves.load(CURVES_FILE)
    assert curves.epochs >= 3
    for axis, bounds in zip(curves.axes, (space.r, space.d, space.w)):
        assert axis[0] == bounds.low and axis[-1] == bounds.high
    assert curves.max_budget(space) >= BenchConfig().budget  # the default benchmark runs on what is shipped


def test_real_mode_turns_each_search_into_a_hypervolume_curve(monkeypatch, tmp_path):
    import tinyray.search
    from tinyray.bench import run_real

    calls = []

    def fake_search(config):
        calls.append((config.searcher, config.scheduler, config.seed, config.name))
        fifo = config.scheduler == "fifo"
        trials = pd.DataFrame({
            "trial_id": ["t0", "t1", "t2"], "epochs": [3, 3 if fifo else 1, 3],
            "status": ["completed", "completed" if fifo else "early-stopped", "completed"],
            "top1": [0.4, 0.5, 0.6], "flops": [50_000_000, 100_000_000, 150_000_000],
            "train_seconds": [10.0, 10.0 if fifo else 3.0, 10.0],
        })
        return type("Result", (), {"trials": trials, "config": config})()

    monkeypatch.setattr(tinyray.search, "run_search", fake_search)
    config = BenchConfig(seeds=1, trials=3, max_epochs=3, levels=4, methods=("a", "b", "c", "d"))
    result = run_real(config, tmp_path)
    assert [call[:2] for call in calls] == [("nsga3", "moasha"), ("random", "fifo"), ("optuna-nsga3", "asha"),
                                            ("nsga3", "asha")]  # every method is a registered searcher now
    assert result.mode == "real" and result.summary["method"].tolist() == ["a", "b", "c", "d"]
    final = result.summary.set_index("method")["hv_final_mean"]
    assert final["a"] < final["b"]  # the stopped middle trial is not on a's front
    epochs = result.curves[result.curves["axis"] == "epochs"]
    assert epochs["compute"].max() == 9.0  # the FIFO search's compute; a, c and d used 7


def test_real_compute_counts_trials_in_the_order_they_finished(tmp_path):
    """Tune's trial ids are random: the compute curve follows each trial's last epoch's end in its result.json."""
    import json

    from tinyray.bench import finish_order

    trials = pd.DataFrame({"trial_id": ["a1", "b2", "c3", "d4"], "epochs": [2, 1, 2, 0]})
    ends = {"a1": [100.0, 190.0], "b2": [40.0], "c3": [20.0, 60.0]}  # d4 failed before its first epoch
    for trial_id, epoch_ends in ends.items():
        folder = tmp_path / f"trial_{trial_id}"
        folder.mkdir()
        lines = [json.dumps({"trial_id": trial_id, "training_iteration": i + 1, "epoch_end": end, "epoch_seconds": 10})
                 for i, end in enumerate(epoch_ends)]
        (folder / "result.json").write_text("\n".join(lines) + "\n{cut short by a ki")
    assert finish_order(tmp_path, trials)["trial_id"].tolist() == ["b2", "c3", "a1", "d4"]


def test_every_method_uses_a_registered_searcher():
    from tinyray.bench import METHODS
    from tinyray.searchers import SEARCHERS

    assert {searcher for searcher, _ in METHODS.values()} <= set(SEARCHERS)


def test_trilinear_is_scipys_linear_grid_interpolation():
    """Curves interpolate without scipy (a replay trial's process must stay small), exactly as scipy would."""
    from scipy.interpolate import RegularGridInterpolator

    from tinyray.bench import trilinear

    rng = np.random.default_rng(1)
    axes = (np.array([0.25, 0.5, 1.0]), np.array([0.25, 0.6, 0.9, 1.25]), np.array([0.25, 0.7, 1.0]))
    values = rng.uniform(size=(3, 4, 3, 5))
    values[2, 1, 0] = np.nan  # an unrecorded grid point: NaN in every cell around it
    scipys = RegularGridInterpolator(axes, values)
    grid_points = [np.array([r, d, w]) for r in axes[0] for d in axes[1] for w in axes[2]]
    for point in [*rng.uniform([0.25] * 3, [1.0, 1.25, 1.0], size=(300, 3)), *grid_points]:
        np.testing.assert_array_equal(trilinear(axes, values, point), scipys(point)[0])
