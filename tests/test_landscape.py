"""The recorded landscape behind ``tinyray bench search``: its networks, the GP surrogate, its noise and held-out
error, and the benchmark on it."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tinyray import landscape
from tinyray.bench import BenchConfig, Curves, load_curves, run_bench, simulate
from tinyray.errors import UserError
from tinyray.fidelity import COLUMNS, default_protocol, panel
from tinyray.landscape import Landscape


def truth(r: float, d: float, w: float, epoch: int) -> float:
    """A smooth made-up landscape: bigger networks learn more, and every network learns with the epochs."""
    return 0.05 + (0.2 + 0.4 * r + 0.1 * d + 0.2 * w) * (1 - math.exp(-epoch / 2))


def recording(nets: int = 20, epochs: int = 3, offset: float = 0.01) -> pd.DataFrame:
    """Seeds 0 and 1 of ``nets`` Sobol points of the panel, at ``truth`` +- ``offset`` (seed 0 up, seed 1 down),
    with seconds growing with r, d and w."""
    rows = []
    for net in landscape.landscape_nets()[:nets]:
        for seed, sign in ((0, 1.0), (1, -1.0)):
            per_epoch = 1.0 + 4 * net.r ** 2 * net.d * net.w ** 2
            for epoch in range(1, epochs + 1):
                rows.append({"net": net.name, "kind": net.kind, "r": net.r, "d": net.d, "w": net.w, "flops": 1,
                             "seed": seed, "epoch": epoch, "epochs": epochs,
                             "top1": truth(net.r, net.d, net.w, epoch) + sign * offset * epoch,
                             "seconds": 1.5 * per_epoch * epoch, "cpu_seconds": per_epoch * epoch, "val_size": 400})
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


@pytest.fixture(scope="module")
def fitted() -> Landscape:
    return Landscape(recording())


def test_the_landscape_is_the_panel_and_forty_more_sobol_points_trained_three_times_longer():
    nets = landscape.landscape_nets()
    assert len(nets) == 64 and len({net.name for net in nets}) == 64
    assert nets[:24] == panel()  # the proxy panel first, its 4 Sobol points included
    assert [net.kind for net in nets[24:]] == ["sobol"] * 40
    proxy = default_protocol()
    protocol = landscape.landscape_protocol()
    assert protocol.epochs == 3 * proxy.epochs and protocol.data == proxy.data and protocol.recipe == proxy.recipe
    assert protocol.threads == proxy.threads and protocol.name == "landscape"


def test_the_surrogate_reproduces_the_recorded_means_and_interpolates_between_them(fitted):
    assert fitted.epochs == 3 and fitted.points.shape == (20, 3) and fitted.runs.shape == (20, 2, 3)
    for point, means in zip(fitted.points, fitted.top1):
        top1, _ = fitted.curve(*point)
        assert np.abs(top1 - means).max() < 0.03  # a smooth truth: the GP passes close to every recorded mean
    # between recorded networks it follows the truth, which it never saw there
    for point in [(0.5, 0.6, 0.5), (0.8, 1.0, 0.7), (0.4, 1.1, 0.9)]:
        top1, _ = fitted.curve(*point)
        assert top1 == pytest.approx([truth(*point, e) for e in (1, 2, 3)], abs=0.05)


def test_seconds_are_cpu_seconds_of_an_epoch_and_grow_with_the_network(fitted):
    small, big = fitted.curve(0.3, 0.3, 0.3)[1], fitted.curve(1.0, 1.2, 1.0)[1]
    assert (small == small[0]).all() and small[0] < big[0]
    recorded = fitted.points.tolist().index(list(fitted.points[0]))
    r, d, w = fitted.points[recorded]
    assert fitted.epoch_seconds[recorded] == pytest.approx(1.0 + 4 * r ** 2 * d * w ** 2)  # CPU, not wall (1.5x)


def test_noise_is_a_repeat_difference_of_one_of_the_nearest_recorded_networks(fitted):
    rng = np.random.default_rng(0)
    point = fitted.points[5]
    # the recorded difference of the seeds is 2 * 0.01 * epoch, so one run's deviation is that over sqrt 2
    expected = np.array([0.02, 0.04, 0.06]) / math.sqrt(2)
    draws = [fitted.noise(*point, rng) for _ in range(40)]
    for draw in draws:
        assert np.allclose(np.abs(draw), expected)
    assert {bool(np.sign(draw[0]) > 0) for draw in draws} == {True, False}
    mean, _ = fitted.curve(*point)
    sampled, _ = fitted.sample(*point, np.random.default_rng(1))
    assert np.allclose(np.abs(sampled - mean), expected)


def test_held_out_error_is_leave_one_network_out_per_epoch(fitted):
    held = fitted.held_out()
    assert held["epoch"].tolist() == [1, 2, 3, 0] and (held["networks"] == 20).all()
    tops = held[held["epoch"] > 0]
    assert (tops["rmse"] < 0.05).all() and (tops["rho"] > 0.9).all()
    # a network left out is predicted worse than when it is in: the error is held out, not in-sample
    in_sample = np.sqrt(np.mean([(fitted.curve(*p)[0][-1] - m[-1]) ** 2 for p, m in zip(fitted.points, fitted.top1)]))
    assert tops["rmse"].iloc[-1] > in_sample
    # on a smooth landscape the GP predicts a left-out network better than its nearest recorded neighbour does
    assert (tops["rmse"] < tops["nearest_rmse"]).all() and (tops["nearest_rmse"] > 0).all()


def test_load_curves_tells_a_landscape_from_a_grid(tmp_path):
    recording(nets=12).to_csv(tmp_path / "landscape.csv", index=False)
    assert isinstance(load_curves(tmp_path / "landscape.csv"), Landscape)
    from tests.test_bench import small_table

    small_table().to_csv(tmp_path / "grid.csv", index=False)
    assert isinstance(load_curves(tmp_path / "grid.csv"), Curves)
    with pytest.raises(UserError, match="does not exist"):
        load_curves(tmp_path / "nothing.csv")
    broken = recording(nets=12)
    broken = broken[~((broken["net"] == broken["net"].iloc[0]) & (broken["epoch"] == 2))]
    with pytest.raises(UserError, match="every epoch"):
        Landscape(broken)
    with pytest.raises(UserError, match="lacks the columns"):
        Landscape(broken.drop(columns=["seed"]))


def test_the_benchmark_plays_on_the_landscape_with_noise_and_reports_the_surrogate(tmp_path, space):
    recording().to_csv(tmp_path / "landscape.csv", index=False)
    config = BenchConfig(seeds=2, trials=6, pop_size=4, levels=4, methods=("a", "b", "f"),
                         curves=tmp_path / "landscape.csv")
    result = run_bench(config)
    assert result.config.max_epochs == 3  # all recorded epochs by default
    assert result.surrogate is not None and result.surrogate["epoch"].tolist() == [1, 2, 3, 0]
    assert "leave-one-network-out over 20 networks" in result.table()
    payload = json.loads(json.dumps(result.to_json()))
    assert payload["surrogate"][0]["epoch"] == 1 and "hv_final_ci95" in payload["summary"][0]
    assert set(result.summary["method"]) == {"a", "b", "f"}
    # the noise is real and seeded: a seed replays exactly, another seed draws other runs
    fitted = Landscape(recording())
    resolved = BenchConfig(seeds=1, trials=6, max_epochs=3, pop_size=4, methods=("b",))
    first = simulate("b", 0, resolved, fitted, space, fitted.num_classes)
    again = simulate("b", 0, resolved, fitted, space, fitted.num_classes)
    other = simulate("b", 1, resolved, fitted, space, fitted.num_classes)
    assert first.completed == again.completed and first.completed != other.completed
    means = [fitted.curve(*p)[0][-1] for p in fitted.points]
    assert first.completed and all(0.0 <= row[2] <= 1.0 for row in first.completed)
    assert math.isfinite(first.first_generation) and first.first_generation == 4 * 3  # fifo: 4 trials of 3 epochs
    assert min(means) < max(means)


def test_a_budget_beyond_the_largest_recorded_network_is_refused(tmp_path):
    table = recording(nets=12)
    table = table[~table["net"].isin(["corner-r1-d1.25-w1", "b0"])]  # without the largest networks
    table.to_csv(tmp_path / "landscape.csv", index=False)
    fitted = load_curves(tmp_path / "landscape.csv")
    covered = fitted.max_budget(fitted.space)
    from tinyray.cost import analytic_cost

    assert covered == max(analytic_cost(fitted.space, r, d, w, fitted.num_classes).flops for r, d, w in fitted.points)
    with pytest.raises(UserError, match="cover budgets up to"):
        run_bench(BenchConfig(seeds=1, trials=2, budget=int(covered) + 1_000_000, curves=tmp_path / "landscape.csv"))


def test_the_shipped_landscape_is_today_s_protocol_complete_and_gives_the_published_numbers():
    """``benchdata/landscape.csv`` is every network and seed of the landscape, trained as today's default trial
    (3x longer), and its analysis is the one the README quotes (``benchdata/landscape_surrogate.json``, a stored
    golden result: it changes only when the recording does)."""
    from tinyray.fidelity import check_proxy_runs, read_runs

    table = read_runs(landscape.LANDSCAPE_FILE)
    protocol = landscape.landscape_protocol()
    check_proxy_runs(protocol, table)  # data version, sizes, recipe, batch, epochs (3x the default) and panel
    assert set(table["protocol"]) == {"landscape"}
    wanted = {(net.name, seed) for net in landscape.landscape_nets() for seed in landscape.SEEDS}
    runs = table.groupby(["net", "seed"])["epoch"].apply(sorted)
    assert set(runs.index) == wanted and all(epochs == list(range(1, protocol.epochs + 1)) for epochs in runs)
    assert table["cpu_seconds"].notna().all()
    meta = json.loads(landscape.LANDSCAPE_FILE.with_suffix(".json").read_text())
    assert meta["command"].startswith("tinyray bench landscape --record")

    fitted = Landscape(table)
    published = json.loads(landscape.SURROGATE_FILE.read_text())
    assert fitted.summary() == pytest.approx(published["summary"])
    held = fitted.held_out().to_dict(orient="records")
    assert [row["epoch"] for row in held] == [row["epoch"] for row in published["held_out"]]
    for row, stored in zip(held, published["held_out"]):
        assert row == pytest.approx(stored, abs=0.005)


def test_bench_landscape_command_analyses_a_recording_and_refuses_mixed_options(tmp_path, capsys):
    from tinyray.cli import main

    recording(nets=12).to_csv(tmp_path / "landscape.csv", index=False)
    assert main(["bench", "landscape", "--curves", str(tmp_path / "landscape.csv"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["summary"]["networks"] == 12 and payload["summary"]["seeds"] == 2
    assert [row["epoch"] for row in payload["held_out"]] == [1, 2, 3, 0]
    assert main(["bench", "landscape", "--curves", str(tmp_path / "landscape.csv")]) == 0
    text = capsys.readouterr().out
    assert "landscape: 12 networks, 2 seeds" in text and "leave-one-network-out over 12 networks" in text
    assert main(["bench", "landscape", "--record", "--curves", str(tmp_path / "landscape.csv")]) == 2
    assert "drop --curves" in capsys.readouterr().err
    assert main(["bench", "landscape", "--curves", str(tmp_path / "none.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_benchmark_gives_the_same_result_in_worker_processes(tmp_path):
    recording().to_csv(tmp_path / "landscape.csv", index=False)
    config = BenchConfig(seeds=2, trials=5, pop_size=4, levels=4, methods=("a", "b"), curves=tmp_path / "landscape.csv")
    alone, pooled = run_bench(config), run_bench(config, processes=2)
    pd.testing.assert_frame_equal(alone.curves, pooled.curves)
    pd.testing.assert_frame_equal(alone.summary, pooled.summary)


def test_bench_search_on_a_landscape_prints_no_torch_jit_future_warning(tmp_path):
    # linear_operator scripts a function with @torch.jit.script when a fit first imports its linear_cg module
    import os
    import subprocess
    import sys

    recording().to_csv(tmp_path / "landscape.csv", index=False)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    done = subprocess.run([sys.executable, "-m", "tinyray", "bench", "search", "--seeds", "1", "--trials", "2",
                           "--pop-size", "4", "--methods", "b", "--curves", "landscape.csv"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "leave-one-network-out over 20 networks" in done.stdout
    assert "FutureWarning" not in done.stderr and "torch.jit" not in done.stderr
