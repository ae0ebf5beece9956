"""The proxy-fidelity benchmark: the panel, the recording, the analysis, and the shipped recordings' verdict."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from tinyray import fidelity
from tinyray.cost import analytic_cost
from tinyray.data import DataSpec
from tinyray.errors import UserError
from tinyray.space import load_space


def test_panel_spreads_over_the_cube():
    space = load_space()
    nets = fidelity.panel(space)
    assert len(nets) >= 24
    assert len({net.name for net in nets}) == len(nets)
    assert len({(net.r, net.d, net.w) for net in nets}) == len(nets)
    for net in nets:
        space.check_point(net.r, net.d, net.w)
    kinds = {net.kind for net in nets}
    assert {"corner", "centre", "base", "shrink", "tinynet", "sobol"} <= kinds
    corners = {(net.r, net.d, net.w) for net in nets if net.kind == "corner"}
    assert corners == {(r, d, w) for r in (0.25, 1.0) for d in (0.25, 1.25) for w in (0.25, 1.0)}
    flops = [analytic_cost(space, net.r, net.d, net.w, 10).flops for net in nets]
    assert max(flops) / min(flops) > 100  # from a few M to B0 and beyond
    assert fidelity.panel(space) == nets  # fixed: the same panel every time


def test_shrinks_change_one_multiplier_and_meet_their_level():
    space = load_space()
    shrinks = [net for net in fidelity.panel(space) if net.kind == "shrink"]
    assert {net.name for net in shrinks} >= {"shrink-r@200M", "shrink-d@200M", "shrink-w@200M", "shrink-w@100M"}
    for net in shrinks:
        factor, level = net.name.removeprefix("shrink-").split("@")
        changed = [f for f in ("r", "d", "w") if getattr(net, f) != 1.0]
        assert changed == [factor]
        flops = analytic_cost(space, net.r, net.d, net.w, 10).flops
        assert flops <= float(level.rstrip("M")) * 1e6
        # the largest such value: one step (0.001) more exceeds the level
        bigger = {**{"r": net.r, "d": net.d, "w": net.w}, factor: getattr(net, factor) + 0.001}
        assert analytic_cost(space, **bigger, num_classes=10).flops > float(level.rstrip("M")) * 1e6


def test_protocols_follow_the_search_defaults():
    from tinyray.search import SearchConfig
    from tinyray.train import DEFAULT_RECIPE

    proxy = fidelity.default_protocol()
    defaults = SearchConfig(budget=1)
    assert proxy.epochs == defaults.max_epochs and proxy.recipe == DEFAULT_RECIPE
    assert proxy.data == DataSpec() and proxy.threads == 1
    reference = fidelity.reference_protocol(proxy)
    steps = reference.data.train_size * reference.epochs
    assert steps >= 10 * proxy.data.train_size * proxy.epochs  # at least 10x longer, as issue 12 asks
    assert reference.data.val_size > proxy.data.val_size
    # its recipe is written out (retuning the proxy must not move the target): no EMA, precise BN statistics
    assert reference.recipe.name == "reference" and reference.recipe.ema_decay is None
    assert reference.recipe.precise_bn_images > 0 and reference.recipe.schedule == "cosine"


def _recording(scores: dict[str, list[float]], protocol: str, seed: int, val_size: int = 400) -> pd.DataFrame:
    rows = []
    for index, (name, curve) in enumerate(scores.items()):
        for epoch, top1 in enumerate(curve, start=1):
            rows.append({"net": name, "kind": "sobol", "r": 0.25 + index * 0.05, "d": 0.5 + (index % 3) * 0.2,
                         "w": 0.3 + (index % 4) * 0.1, "flops": 1_000_000 * (index + 1), "seed": seed,
                         "epoch": epoch, "top1": top1, "val_size": val_size, "protocol": protocol})
    return pd.DataFrame(rows)


def test_analysis_of_known_rankings():
    names = [f"n{i}" for i in range(8)]
    reference = _recording({n: [0.3 + 0.05 * i] for i, n in enumerate(names)}, "reference", 0)
    # seed 0: epoch 1 reversed, epoch 2 perfect; seed 1: epoch 1 at chance for three nets, epoch 2 perfect
    seed0 = _recording({n: [0.5 - 0.02 * i, 0.2 + 0.03 * i] for i, n in enumerate(names)}, "proxy", 0)
    seed1 = _recording({n: [0.1 if i < 3 else 0.2 + 0.01 * i, 0.21 + 0.03 * i] for i, n in enumerate(names)}, "proxy", 1)
    result = fidelity.analyse(pd.concat([seed0, seed1]), reference, num_classes=10)
    final, first = result.final, result.first
    assert final["rho"] == pytest.approx(1.0) and final["tau"] == pytest.approx(1.0) and final["rho_sd"] == 0
    assert first["seeds"] == 2 and first["nets"] == 8
    # seed 0 ranks exactly backwards (-1); seed 1 has a three-way tie at the bottom, then the right order
    assert first["rho"] < 0 and first["rho_sd"] > 0.5
    assert first["at_chance"] == 3 and final["at_chance"] == 0
    assert result.reference_range == pytest.approx((0.3, 0.475, 0.65))
    assert result.seed_rho == pytest.approx(1.0)
    verdicts = result.verdicts()
    assert verdicts[0].endswith("met") and verdicts[1].endswith("MISSED") and verdicts[2].endswith("MISSED")
    assert verdicts[2].startswith("runs at chance after epoch 1: 3 of 16")
    assert verdicts[4] == "r, d and w each matter on the reference: not all 8 corners recorded yet"
    assert verdicts[5].startswith(f"panel networks with both recordings: 8 of {len(fidelity.panel())}")
    assert json.loads(json.dumps(result.to_json(), default=str))["chance"] == pytest.approx(result.chance)


def test_chance_band_is_two_binomial_sds():
    assert fidelity.chance_band(10, 400) == pytest.approx(0.1 + 2 * math.sqrt(0.09 / 400))
    assert fidelity.chance_band(2, 100, sds=0) == 0.5


def test_analysis_needs_shared_networks():
    reference = _recording({f"a{i}": [0.5] for i in range(6)}, "reference", 0)
    proxy = _recording({f"b{i}": [0.5] for i in range(6)}, "proxy", 0)
    with pytest.raises(UserError, match="share 0 networks"):
        fidelity.analyse(proxy, reference)


def test_reference_of_another_task_is_refused():
    proxy = fidelity.default_protocol()
    reference = _recording({"n": [0.5]}, "reference", 0).assign(
        train_size=123, recipe=proxy.recipe, epochs=9, data_version=-1, panel_version=fidelity.PANEL_VERSION)
    with pytest.raises(UserError, match="re-record it with tinyray bench proxy --reference"):
        fidelity.check_comparable(proxy, reference)


def test_read_runs_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        fidelity.read_runs(tmp_path / "missing.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a tinyray bench proxy recording"):
        fidelity.read_runs(tmp_path / "other.csv")


def test_shipped_recordings_are_today_s_proxy_and_give_the_published_numbers():
    """The shipped recordings belong to today's defaults, and their analysis is the one the README quotes
    (``benchdata/proxy_fidelity.json``, a stored golden result: it changes only when the recordings do)."""
    proxy = fidelity.read_runs(fidelity.PROXY_FILE)
    reference = fidelity.read_runs(fidelity.REFERENCE_FILE)
    protocol = fidelity.default_protocol()
    fidelity.check_comparable(protocol, reference)
    fidelity.check_proxy_runs(protocol, proxy)
    panel = {net.name for net in fidelity.panel()}
    assert set(proxy["net"]) <= panel and set(reference["net"]) <= panel
    result = fidelity.analyse(proxy, reference)
    published = json.loads(fidelity.FIDELITY_FILE.read_text())
    got = result.by_epoch.to_dict(orient="records")
    assert len(got) == len(published["by_epoch"])
    for row, stored in zip(got, published["by_epoch"]):
        assert row == pytest.approx(stored, nan_ok=True)
    assert list(result.reference_range) == pytest.approx(published["reference_range"])
    assert result.verdicts() == published["verdicts"]


def test_proxy_runs_of_another_recipe_are_refused():
    protocol = fidelity.default_protocol()
    runs = _recording({"n": [0.5, 0.5, 0.5]}, "proxy", 0).assign(
        train_size=protocol.data.train_size, recipe="paper", epochs=protocol.epochs, batch_size=16,
        data_version=-1, panel_version=fidelity.PANEL_VERSION)
    with pytest.raises(UserError, match="record them again"):
        fidelity.check_proxy_runs(protocol, runs)


@pytest.mark.slow
def test_record_is_real_training_and_resumable(tmp_path):
    """Five panel networks, one short epoch each on tiny data, written as they finish; a rerun trains nothing."""
    nets = fidelity.panel()[:5]
    protocol = fidelity.Protocol(name="proxy", data=DataSpec(train_size=64, val_size=40, cache_dir=tmp_path / "c"),
                                 epochs=1, recipe="proxy", batch_size=16)
    out = tmp_path / "runs.csv"
    frame = fidelity.record(protocol, nets, [0], out, processes=2, command="test")
    assert sorted(frame["net"]) == sorted(net.name for net in nets)
    assert (frame["epoch"] == 1).all() and frame["top1"].between(0, 1).all() and (frame["seconds"] > 0).all()
    # the process's CPU seconds of each run, beside its wall seconds (on one thread, never much above them)
    assert (frame["cpu_seconds"] > 0).all() and (frame["cpu_seconds"] <= frame["seconds"] * 1.5 + 1).all()
    assert json.loads(out.with_suffix(".json").read_text())["command"] == "test"
    before = out.read_text()
    again = fidelity.record(protocol, nets, [0], out, processes=2)
    assert out.read_text() == before and len(again) == len(frame)
    # the rows are what the trainer gives for that network and seed
    from tinyray.data import load_data
    from tinyray.train import train_candidate

    net = nets[0]
    result = train_candidate(load_space(), net.r, net.d, net.w, load_data(protocol.data), epochs=1, recipe="proxy",
                             seed=0, threads=1, batch_size=16)
    recorded = frame[frame["net"] == net.name].iloc[0]
    assert recorded["top1"] == pytest.approx(result.final_top1)
    assert np.isclose(recorded["train_loss"], result.history[0].train_loss)


def test_corner_effects_are_the_factorial_main_effects():
    import pandas as pd

    rows = []
    for r in (0.25, 1.0):
        for d in (0.25, 1.25):
            for w in (0.25, 1.0):
                top1 = 0.2 + 0.4 * (r == 1.0) + 0.1 * (d == 1.25) + 0.0 * (w == 1.0) + 0.02 * (r == 1.0) * (d == 1.25)
                rows.append({"kind": "corner", "r": r, "d": d, "w": w, "top1": top1})
    rows.append({"kind": "centre", "r": 0.625, "d": 0.75, "w": 0.625, "top1": 0.9})  # not a corner: ignored
    effects = fidelity.corner_effects(pd.DataFrame(rows))
    assert effects == pytest.approx({"r": 0.41, "d": 0.11, "w": 0.0})
    assert fidelity.corner_effects(pd.DataFrame(rows[1:])) == {}  # a corner missing: no effects yet


def test_reference_is_fixed_and_refuses_a_proxy_it_is_not_ten_times_longer_than():
    proxy = fidelity.default_protocol()
    assert (proxy.epochs, proxy.data.train_size) == (2, 1800)
    other = dataclasses.replace(proxy, epochs=3, data=dataclasses.replace(proxy.data, train_size=1200))
    assert fidelity.reference_protocol(other).data.train_size == fidelity.reference_protocol(proxy).data.train_size
    too_long = dataclasses.replace(proxy, epochs=3, data=dataclasses.replace(proxy.data, train_size=1500))
    with pytest.raises(UserError, match="not 10x the proxy's 3 epochs of 1500"):
        fidelity.reference_protocol(too_long)
