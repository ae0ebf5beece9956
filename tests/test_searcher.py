"""Tests of tinyray.searchers: the registered searchers driven without Ray, and their Tune adapter."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyray.cost import analytic_cost
from tinyray.cube import Candidate
from tinyray.errors import UserError
from tinyray.files import SEARCHER_STATE_VERSION as STATE_VERSION
from tinyray.files import read_json as read_state
from tinyray.files import write_json_atomic as write_state
from tinyray.searchers import SEARCHERS
from tinyray.searchers import FlopsBand
from tinyray.searchers import make_searcher as make_core
from tinyray.searchers.base import FAILED_TOP1
from tinyray.searchers.nsga3 import NSGA3Core
from tinyray.searchers.random_search import RandomCore
from tinyray.space import load_space

BUDGET = 100_000_000
POP = 8


@pytest.fixture(scope="module")
def space():
    return load_space("efficientnet_b0")


def synthetic_top1(candidate: Candidate) -> float:
    """Smooth stand-in for training: accuracy grows with size and is best at balanced ratios r : d : w."""
    r, d, w = candidate.r, candidate.d, candidate.w
    size = 0.85 - 0.5 * math.exp(-3.0 * r * math.sqrt(d) * w)
    shape = 0.4 * math.log(r / (0.8 * d)) ** 2 + 0.2 * math.log(w / r) ** 2
    return min(1.0, max(0.0, size - shape))


def run_generation(core, prefix: str, outcome=None) -> list[tuple[str, Candidate]]:
    """Ask until the core waits, then tell every trial; ``outcome(i, candidate) -> (top1, status)``."""
    handed = []
    while True:
        trial_id = f"{prefix}-{len(handed)}"
        candidate = core.ask(trial_id)
        if candidate is None:
            break
        handed.append((trial_id, candidate))
    assert handed, "a new generation must hand out candidates"
    for i, (trial_id, candidate) in enumerate(handed):
        top1, status = outcome(i, candidate) if outcome else (synthetic_top1(candidate), "completed")
        core.tell(trial_id, top1, status)
    return handed


def hypervolume(records, base_flops: int) -> float:
    from pymoo.indicators.hv import HV

    objectives = np.array([[-rec.top1, rec.flops / base_flops] for rec in records if rec.is_final])
    return float(HV(ref_point=np.array([0.0, 0.3]))(objectives))


def in_band(space, candidate: Candidate, floor: int, budget: int) -> bool:
    flops = analytic_cost(space, candidate.r, candidate.d, candidate.w).flops
    return floor <= flops <= budget


# --------------------------------------------------------------------------------------------------------------
# NSGA-III
# --------------------------------------------------------------------------------------------------------------


def test_nsga3_stays_in_band_never_repeats_a_network_and_improves(space):
    core = make_core("nsga3", space, BUDGET, pop_size=12, seed=0)
    assert core.band.floor == BUDGET // 16
    handed = []
    for generation in range(8):
        handed += run_generation(core, f"g{generation}")
        assert core.generation == generation + 1
    assert all(in_band(space, candidate, BUDGET // 16, BUDGET) for _, candidate in handed)
    networks = {core.band.network_key((c.r, c.d, c.w)) for _, c in handed}
    assert len(networks) == len(handed)
    assert len(core.records) == len(handed) and all(rec.is_final for rec in core.records)

    first = [rec for rec in core.records if rec.generation == 0]
    last = [rec for rec in core.records if rec.generation == 7]
    assert hypervolume(core.parents(), core.base_flops) > hypervolume(first, core.base_flops) + 0.01
    assert hypervolume(last, core.base_flops) > hypervolume(first, core.base_flops)


def test_ask_waits_while_a_generation_is_pending(space):
    core = make_core("nsga3", space, BUDGET, pop_size=POP, seed=1)
    handed = [(f"t{i}", core.ask(f"t{i}")) for i in range(POP)]
    assert all(candidate is not None for _, candidate in handed)
    assert core.ask("t-extra") is None
    assert core.ask("t0") == handed[0][1]  # asking again for a pending trial returns its candidate
    for trial_id, candidate in handed[:-1]:
        core.tell(trial_id, synthetic_top1(candidate), "completed")
        assert core.ask("t-extra") is None
    assert core.generation == 0 and list(core.pending) == [handed[-1][0]]
    core.tell(handed[-1][0], synthetic_top1(handed[-1][1]), "completed")
    assert core.generation == 1
    assert core.ask("t-next") is not None


def test_nsga3_is_deterministic_for_a_seed(space):
    def suggestions(seed: int) -> list[Candidate]:
        core = make_core("nsga3", space, BUDGET, pop_size=POP, seed=seed)
        return [candidate for g in range(3) for _, candidate in run_generation(core, f"g{g}")]

    assert suggestions(3) == suggestions(3)
    assert suggestions(3) != suggestions(4)


def test_save_restore_continues_like_an_uninterrupted_run(space):
    def outcome(i, candidate):
        return (synthetic_top1(candidate), "completed") if i % 4 else (synthetic_top1(candidate) * 0.5, "early-stopped")

    core = make_core("nsga3", space, BUDGET, pop_size=POP, seed=5)
    for generation in range(2):
        run_generation(core, f"g{generation}", outcome)
    # Interrupt mid-generation: three told, two pending, the rest not handed out yet.
    handed = [(f"g2-{i}", core.ask(f"g2-{i}")) for i in range(5)]
    for i, (trial_id, candidate) in enumerate(handed[:3]):
        core.tell(trial_id, *outcome(i, candidate))

    state = json.loads(json.dumps(core.state_dict()))
    assert state["version"] == STATE_VERSION and state["generation"] == 2
    assert sorted(p["trial_id"] for p in state["pending"]) == ["g2-3", "g2-4"]
    restored = make_core("nsga3", space, BUDGET, pop_size=POP, seed=5)
    restored.load_state_dict(state)
    assert restored.records == core.records and restored.pending == core.pending
    assert restored.state_dict() == state

    def finish(target) -> list[Candidate]:
        for i, (trial_id, candidate) in enumerate(handed[3:], start=3):
            target.tell(trial_id, *outcome(i, candidate))
        rest = []
        while (candidate := target.ask(f"g2-{5 + len(rest)}")) is not None:
            rest.append(candidate)
        for i, candidate in enumerate(rest, start=5):
            target.tell(f"g2-{i}", *outcome(i, candidate))
        later = [c for g in range(3, 5) for _, c in run_generation(target, f"g{g}", outcome)]
        return rest + later

    assert finish(restored) == finish(core)
    assert restored.records == core.records


def run_slots(core, trials: int, slots: int, seed: int = 0, stop_at: int | None = None):
    """Drive ``core`` as Tune does with ``slots`` slots: a trial lasts a random time (seeded), a freed slot asks at
    once; return the candidates in the order handed out and the number of times a free slot had to wait."""
    rng = np.random.default_rng(seed)
    running: list[tuple[float, str, Candidate]] = []
    handed, waits, now = [], 0, 0.0
    while len(handed) < trials or running:
        while len(running) < slots and len(handed) < trials and (stop_at is None or len(handed) < stop_at):
            trial_id = f"t{len(handed)}"
            candidate = core.ask(trial_id)
            if candidate is None:
                waits += 1
                break
            handed.append(candidate)
            running.append((now + float(rng.exponential(1.0)), trial_id, candidate))
        if not running or (stop_at is not None and len(handed) >= stop_at):
            break
        running.sort(key=lambda item: item[0])
        now, trial_id, candidate = running.pop(0)
        core.tell(trial_id, synthetic_top1(candidate), "completed")
    return handed, waits


def test_generations_bred_ahead_keep_slots_busy_and_stay_reproducible(space):
    waiting, _ = run_slots(make_core("nsga3", space, BUDGET, pop_size=POP, seed=2), 6 * POP, POP)
    core = NSGA3Core(make_core("nsga3", space, BUDGET, seed=2).band, pop_size=POP, seed=2, ahead=1)
    ahead, waits_ahead = run_slots(core, 6 * POP, POP)
    _, waits = run_slots(make_core("nsga3", space, BUDGET, pop_size=POP, seed=2), 6 * POP, POP)
    assert waits_ahead < waits  # freed slots take the next generation's members instead of waiting
    assert len(ahead) == 6 * POP and len({(c.r, c.d, c.w) for c in ahead}) == 6 * POP
    assert ahead[:2 * POP] != waiting[:2 * POP] or ahead[2 * POP:] != waiting[2 * POP:]  # another search
    # the same results give the same candidates, whatever the order trials end in
    again = NSGA3Core(core.band, pop_size=POP, seed=2, ahead=1)
    assert run_slots(again, 6 * POP, POP, seed=7)[0] == ahead
    assert core.config()["ahead"] == 1 and "ahead" not in make_core("nsga3", space, BUDGET).config()


def test_generations_bred_ahead_save_and_restore_mid_flight(space):
    band = make_core("nsga3", space, BUDGET, seed=4).band
    core = NSGA3Core(band, pop_size=POP, seed=4, ahead=1)
    run_slots(core, 5 * POP, POP, stop_at=3 * POP + 3)  # two generations in flight, trials pending in both
    state = json.loads(json.dumps(core.state_dict()))
    assert len({p["generation"] for p in state["pending"]}) >= 1 and state["config"]["ahead"] == 1
    restored = NSGA3Core(band, pop_size=POP, seed=4, ahead=1)
    restored.load_state_dict(state)
    assert restored.records == core.records and restored.pending == core.pending
    assert restored.state_dict() == state

    def finish(target) -> list[Candidate]:
        for trial_id, candidate in sorted(target.pending.items()):
            target.tell(trial_id, synthetic_top1(candidate), "completed")
        return [c for g in range(3) for _, c in run_generation(target, f"x{g}")]

    assert finish(restored) == finish(core)
    with pytest.raises(UserError, match="ahead"):
        NSGA3Core(band, pop_size=POP, seed=4).load_state_dict(state)


def test_only_nsga3_breeds_generations_ahead(space):
    assert make_core("nsga3", space, BUDGET, pop_size=POP, ahead=2).ahead == 2
    with pytest.raises(UserError, match="no generations to breed ahead"):
        make_core("random", space, BUDGET, ahead=1)
    with pytest.raises(UserError, match="at least 0"):
        make_core("nsga3", space, BUDGET, ahead=-1)


def test_restore_rejects_other_options_and_other_versions(space):
    core = make_core("nsga3", space, BUDGET, pop_size=POP, seed=0)
    run_generation(core, "g0")
    state = core.state_dict()
    with pytest.raises(UserError, match="seed"):
        make_core("nsga3", space, BUDGET, pop_size=POP, seed=1).load_state_dict(state)
    with pytest.raises(UserError, match="version"):
        make_core("nsga3", space, BUDGET, pop_size=POP, seed=0).load_state_dict({**state, "version": 99})
    with pytest.raises(UserError, match="strategy"):
        make_core("random", space, BUDGET, seed=0).load_state_dict(state)


def test_stopped_and_failed_trials_complete_the_generation_but_are_never_final(space):
    core = make_core("nsga3", space, BUDGET, pop_size=POP, seed=2)

    def outcome(i, candidate):
        if i == 0:
            return None, "failed"
        if i == 1:
            return 0.4, "early-stopped"
        return synthetic_top1(candidate), "completed"

    for generation in range(3):
        run_generation(core, f"g{generation}", outcome)
    assert core.generation == 3
    statuses = [rec.status for rec in core.records]
    assert statuses.count("failed") == 3 and statuses.count("early-stopped") == 3
    completed = [rec for rec in core.records if rec.is_final]
    stopped = [rec for rec in core.records if rec.status == "early-stopped"]
    failed = [rec for rec in core.records if rec.status == "failed"]
    assert all(rec.top1 is None and rec.effective_top1 == FAILED_TOP1 for rec in failed)
    assert max(rec.effective_top1 for rec in stopped) < min(rec.top1 for rec in completed)
    assert min(rec.effective_top1 for rec in stopped) > FAILED_TOP1
    parents = core.parents()
    assert len(parents) == POP and not any(rec.status == "failed" for rec in parents)

    # A trial reporting no usable accuracy counts as failed; unknown trials are ignored.
    candidate = core.ask("nan")
    core.tell("nan", float("nan"), "completed")
    core.tell("never-asked", 0.5, "completed")
    assert core.records[-1].trial_id == "nan" and core.records[-1].status == "failed"
    assert core.records[-1].candidate == candidate
    with pytest.raises(ValueError, match="fraction"):
        core.tell(core_next_trial(core), 75.0, "completed")


def core_next_trial(core) -> str:
    trial_id = f"next-{len(core.records)}"
    assert core.ask(trial_id) is not None
    return trial_id


def test_repair_moves_offspring_into_a_narrow_band(space):
    # A band a quarter of an octave wide: most crossover/mutation children land outside and are repaired.
    core = make_core("nsga3", space, 60_000_000, floor=45_000_000, pop_size=POP, seed=0)
    handed = [c for g in range(3) for _, c in run_generation(core, f"g{g}")]
    assert all(in_band(space, c, 45_000_000, 60_000_000) for c in handed)
    # Repair scales r, d, w together towards the band edge it crossed.
    shrunk = core.band.project(np.array([1.0, 1.25, 1.0]))
    grown = core.band.project(np.array([0.25, 0.25, 0.25]))
    assert in_band(space, Candidate(*shrunk), 45_000_000, 60_000_000)
    assert in_band(space, Candidate(*grown), 45_000_000, 60_000_000)
    assert core.band.flops(shrunk) > core.band.flops(grown)


def test_initial_population_spreads_over_log_flops_from_the_floor_to_the_budget(space):
    core = make_core("nsga3", space, BUDGET, pop_size=POP, seed=3)
    handed = [c for _, c in run_generation(core, "g0")]
    flops = np.array([core.band.flops((c.r, c.d, c.w)) for c in handed])
    targets = np.geomspace(BUDGET // 16, BUDGET, POP)
    assert np.all(np.abs(flops / targets - 1) <= 0.01)  # one network a level, the floor and the budget included
    assert flops[-1] <= BUDGET and flops[0] >= BUDGET // 16
    assert len({core.band.network_key((c.r, c.d, c.w)) for c in handed}) == POP
    # ... in directions drawn from the whole cube, not along one ray
    ratios = np.array([[c.r / c.w, c.d / c.w] for c in handed])
    assert ratios.std(axis=0).min() > 0.1
    uniform = make_core("nsga3", space, BUDGET, pop_size=POP, seed=3, initial="uniform")
    assert [c for _, c in run_generation(uniform, "g0")] != handed
    with pytest.raises(UserError, match="initial population"):
        make_core("nsga3", space, BUDGET, pop_size=POP, initial="sobol")


def test_from_the_second_generation_one_offspring_is_the_best_network_scaled_onto_the_budget(space):
    core = NSGA3Core(make_core("nsga3", space, BUDGET).band, pop_size=POP, seed=5)

    def peaked(i, c):  # the most accurate network of the first generation is the one nearest BUDGET / 3
        return 0.9 - abs(math.log(core.band.flops((c.r, c.d, c.w)) / (BUDGET / 3))) / 10, "completed"

    first = run_generation(core, "g0", peaked)
    best = max(first, key=lambda handed: peaked(0, handed[1])[0])[1]
    assert core.band.flops((best.r, best.d, best.w)) < 0.5 * BUDGET
    second = [c for _, c in run_generation(core, "g1")]
    edge = second[-1]
    grown = core.band.grow_to_budget(np.array([best.r, best.d, best.w]))
    assert np.allclose([edge.r, edge.d, edge.w], grown, rtol=1e-12, atol=0)
    assert 0.97 * BUDGET <= core.band.flops(grown) <= BUDGET
    bred = NSGA3Core(core.band, pop_size=POP, seed=5, edge=False)
    run_generation(bred, "g0", peaked)
    assert [c for _, c in run_generation(bred, "g1")][:-1] == second[:-1]  # only the last offspring differs
    assert core.config()["edge"] and not bred.config()["edge"]


def test_grow_to_budget_keeps_the_shape_and_ends_within_a_few_percent_of_the_budget(space):
    band = make_core("nsga3", space, 200_000_000, num_classes=40).band
    rng = np.random.default_rng(0)
    shares, shapes_kept, stuck = [], 0, 0
    for _ in range(120):
        x = rng.uniform(band.low, band.high)
        if band.flops(x) > band.budget:
            assert band.grow_to_budget(x) is None
            continue
        grown = band.grow_to_budget(x)
        if grown is None:  # the next step up from x is already over the budget (or x is under the floor)
            stuck += 1
            continue
        assert band.flops(x) < band.flops(grown) <= band.budget
        assert np.all(grown >= np.clip(x, band.low, band.high) - 1e-12)  # grown, never shrunk, on any axis
        shares.append(band.flops(grown) / band.budget)
        # one common factor s (read off d, which no top-up touches), then r and w raised further, never less
        s = grown[1] / x[1]
        if grown[1] < band.high[1]:
            shapes_kept += bool(np.all(grown + 1e-9 >= np.minimum(band.high, s * x)))
        else:
            shapes_kept += 1
    shares = np.array(shares)
    # Measured (FlopsBand.grow_to_budget): 95% of shapes within 3% of a 200M budget, 38% within 1%.
    assert np.mean(shares >= 0.97) >= 0.85 and np.mean(shares >= 0.99) >= 0.25
    assert shapes_kept == len(shares) and stuck <= 0.05 * len(shares)


def test_a_state_saved_before_the_log_flops_start_is_refused_in_one_line(space):
    core = make_core("nsga3", space, BUDGET, pop_size=POP, seed=0)
    run_generation(core, "g0")
    state = core.state_dict()
    del state["config"]["initial"]  # what tinyray wrote before 2026-12-06
    with pytest.raises(UserError, match="saved by a tinyray older than its 'initial' rule"):
        make_core("nsga3", space, BUDGET, pop_size=POP, seed=0).load_state_dict(state)
    uniform = make_core("nsga3", space, BUDGET, pop_size=POP, seed=0, initial="uniform")
    run_generation(uniform, "g0")
    restored = make_core("nsga3", space, BUDGET, pop_size=POP, seed=0, initial="uniform")
    restored.load_state_dict(uniform.state_dict())
    assert restored.generation == 1


def test_at_level_reaches_a_target_within_the_tolerance_or_says_it_cannot(space):
    band = make_core("nsga3", space, BUDGET, pop_size=POP).band
    rng = np.random.default_rng(0)
    reached = 0
    for target in np.repeat(np.geomspace(band.floor, band.budget, 5), 40):
        x = band.at_level(rng.uniform(band.low, band.high), target)
        if x is not None:
            reached += 1
            assert abs(band.flops(x) / target - 1) <= 0.01 and band.contains(band.flops(x))
    # Whole pixels, whole blocks and channels in multiples of 8 make FLOPs a step function along a ray, and the
    # steps often cross the 2% window: 20-50% of rays reach a level (measured), so sample_levels tries many.
    assert 0.15 * 200 <= reached < 200


def test_pickled_core_is_its_state(space):
    core = make_core("nsga3", space, BUDGET, pop_size=POP, seed=0)
    run_generation(core, "g0")
    core.ask("pending")
    clone = pickle.loads(pickle.dumps(core))
    assert clone.records == core.records and clone.pending == core.pending
    assert run_generation(clone, "x") == run_generation(core, "x")


# --------------------------------------------------------------------------------------------------------------
# Random search and the factory
# --------------------------------------------------------------------------------------------------------------


def test_random_core_samples_the_band_and_resumes(space):
    core = make_core("random", space, BUDGET, floor=20_000_000, seed=0)
    assert isinstance(core, RandomCore)
    handed = [core.ask(f"t{i}") for i in range(60)]
    assert all(in_band(space, c, 20_000_000, BUDGET) for c in handed)
    assert len({core.band.network_key((c.r, c.d, c.w)) for c in handed}) == len(handed)
    for i, candidate in enumerate(handed[:50]):
        core.tell(f"t{i}", synthetic_top1(candidate), "completed" if i % 5 else "early-stopped")

    restored = make_core("random", space, BUDGET, floor=20_000_000, seed=0)
    restored.load_state_dict(json.loads(json.dumps(core.state_dict())))
    assert restored.records == core.records and restored.pending == core.pending
    assert [restored.ask(f"u{i}") for i in range(10)] == [core.ask(f"u{i}") for i in range(10)]
    # uniform: the draws cover the cube's r range rather than clustering
    rs = np.array([c.r for c in handed])
    assert rs.min() < 0.45 and rs.max() > 0.8


def test_make_core_validates_names_and_budgets(space):
    with pytest.raises(UserError, match="unknown searcher 'bayes'"):
        make_core("bayes", space, BUDGET)
    with pytest.raises(UserError, match="below the smallest network .* r=0.25 d=0.25 w=0.25"):
        make_core("nsga3", space, 1_000_000)
    with pytest.raises(UserError, match="floor .* above the budget"):
        make_core("random", space, BUDGET, floor=2 * BUDGET)
    with pytest.raises(UserError, match="above the largest network"):
        make_core("random", space, 10**12, floor=10**11)
    with pytest.raises(UserError, match="pop-size"):
        make_core("nsga3", space, BUDGET, pop_size=2)
    with pytest.raises(UserError, match="seed"):
        make_core("random", space, BUDGET, seed=-1)
    with pytest.raises(UserError, match="above the largest network .* lower --budget to"):
        make_core("NSGA3", space, 10**12, pop_size=POP)
    core = make_core("NSGA3", space, BUDGET, pop_size=POP)
    assert core.band.budget == BUDGET and core.band.floor == BUDGET // 16


def test_custom_flops_fn_is_used_for_the_band(space):
    def toy_flops(r: float, d: float, w: float) -> int:
        return int(1e8 * r * r * d * w * w)

    core = make_core("random", space, 10_000_000, floor=1_000_000, seed=0, flops_fn=toy_flops)
    for i in range(20):
        c = core.ask(str(i))
        assert 1_000_000 <= toy_flops(c.r, c.d, c.w) <= 10_000_000


def test_two_points_that_train_at_one_side_are_one_network_and_never_both_handed_out(space, tmp_path):
    """On the built-in data a candidate trains at about 64 r px: 149 and 150 px (r 0.666 and 0.670, one FLOPs count)
    are one measured network. A default search once tried both and listed them twice on its front."""
    from tinyray.data import DataSpec, load_data

    data = load_data(DataSpec(kind="synthetic", num_classes=4, train_size=8, val_size=8, side=64,
                              cache_dir=str(tmp_path)))
    band = make_core("random", space, BUDGET, resolution_fn=data.train_resolution_fn(space)).band
    twins = ((0.665791, 0.562616, 0.520321), (0.670460, 0.562616, 0.520321))
    assert [space.resolution(x[0]) for x in twins] == [149, 150]
    assert [data.train_resolution(space, x[0]) for x in twins] == [43, 43]
    assert band.network_key(twins[0]) == band.network_key(twins[1])
    deployed = make_core("random", space, BUDGET).band  # an image folder trains at the deployment side
    assert deployed.network_key(twins[0]) != deployed.network_key(twins[1])
    assert pickle.loads(pickle.dumps(band)).network_key(twins[0]) == band.network_key(twins[0])  # Tune pickles it
    # a searcher on that band hands out no two points of one measured network
    for name in ("random", "nsga3"):
        core = make_core(name, space, BUDGET, seed=1, pop_size=POP, resolution_fn=data.train_resolution_fn(space))
        handed = []
        for i in range(4 * POP):
            candidate = core.ask(str(i))
            if candidate is None:
                break
            handed.append(candidate)
            core.tell(str(i), synthetic_top1(candidate), "completed")
        keys = [core.band.network_key((c.r, c.d, c.w)) for c in handed]
        assert len(handed) >= 2 * POP and len(set(keys)) == len(keys), name


# --------------------------------------------------------------------------------------------------------------
# Ray Tune adapter
# --------------------------------------------------------------------------------------------------------------


def test_importing_the_registry_imports_neither_ray_nor_pymoo_nor_optuna():
    code = ("import sys, tinyray.searchers, tinyray.searchers.base; "
            "print(sorted(m for m in ('ray', 'pymoo', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_searcher_is_registered_and_importing_one_imports_no_ray():
    for name, entry in SEARCHERS.items():
        code = f"import sys; from tinyray.searchers import SEARCHERS; SEARCHERS[{name!r}].load(); print('ray' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "False", name
        assert entry.load().strategy == name


def test_classify_result():
    from tinyray.tune.searcher import classify_result

    assert classify_result({"top1": 0.7, "training_iteration": 30}, error=False, metric="top1", max_epochs=30) == (
        0.7,
        "completed",
    )
    assert classify_result({"top1": 0.3, "training_iteration": 3}, error=False, metric="top1", max_epochs=30) == (
        0.3,
        "early-stopped",
    )
    assert classify_result({"top1": 0.7, "training_iteration": 30}, error=True, metric="top1", max_epochs=30) == (
        None,
        "failed",
    )
    assert classify_result(None, error=False, metric="top1", max_epochs=30) == (None, "failed")
    assert classify_result({"loss": 1.0}, error=False, metric="top1", max_epochs=30) == (None, "failed")


def test_tune_adapter_suggests_saves_and_restores(space, tmp_path):
    from ray.tune.search import Searcher

    from tinyray.tune.searcher import TinySearcher

    def new_searcher():
        return TinySearcher(make_core("nsga3", space, BUDGET, pop_size=4, seed=0), max_epochs=10)

    searcher = new_searcher()
    assert isinstance(searcher, Searcher) and isinstance(searcher, TinySearcher)
    assert isinstance(searcher.core, NSGA3Core)
    assert searcher.set_search_properties("top1", "max", {"epochs": 10}) is True
    with pytest.raises(UserError, match="mode 'max'"):
        searcher.set_search_properties("loss", "min", {})

    configs = {f"trial_{i}": searcher.suggest(f"trial_{i}") for i in range(4)}
    assert all(set(config) == {"r", "d", "w"} for config in configs.values())
    assert searcher.suggest("trial_4") is None
    searcher.on_trial_complete("trial_0", {"top1": 0.6, "training_iteration": 10})
    searcher.on_trial_complete("trial_1", {"top1": 0.2, "training_iteration": 2})
    searcher.on_trial_complete("trial_2", None, error=True)
    assert [rec.status for rec in searcher.core.records] == ["completed", "early-stopped", "failed"]

    path = tmp_path / "state.json"
    searcher.save(str(path))
    assert read_state(path)["core"]["version"] == STATE_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind
    searcher.save_to_dir(str(tmp_path / "experiment"))  # what Tune calls, and restores from on resume
    restored = new_searcher()
    restored.restore_from_dir(str(tmp_path / "experiment"))
    assert restored.core.records == searcher.core.records

    for target in (searcher, restored):
        target.on_trial_complete("trial_3", {"top1": 0.5, "training_iteration": 10})
    assert [restored.suggest(f"n{i}") for i in range(5)] == [searcher.suggest(f"n{i}") for i in range(5)]

    from ray.tune.search import ConcurrencyLimiter

    limited = ConcurrencyLimiter(new_searcher(), max_concurrent=2)
    assert [limited.suggest(f"c{i}") is not None for i in range(3)] == [True, True, False]

    import ray.cloudpickle

    clone = ray.cloudpickle.loads(ray.cloudpickle.dumps(searcher))
    assert clone.core.records == searcher.core.records and clone.max_epochs == 10

    write_state(tmp_path / "bad.json", {"version": 7})
    with pytest.raises(UserError, match="not a tinyray searcher state"):
        new_searcher().restore(str(tmp_path / "bad.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        new_searcher().restore(str(tmp_path / "broken.json"))


def test_tune_snapshots_rewrite_the_searcher_state_only_after_it_may_have_changed(space, tmp_path):
    """Tune snapshots the searcher with every epoch's checkpoint; the state (O(trials)) is written again only after
    a suggestion, a trial's end, a restore or new search properties, and always into a new session's file."""
    from tinyray.tune.searcher import TinySearcher

    searcher = TinySearcher(make_core("nsga3", space, BUDGET, pop_size=4, seed=0), max_epochs=10)
    folder = tmp_path / "experiment"
    folder.mkdir()
    state = folder / TinySearcher.CKPT_FILE_TMPL.format("default")

    def written(session: str = "default") -> bool:
        path = folder / TinySearcher.CKPT_FILE_TMPL.format(session)
        before = path.stat().st_mtime_ns if path.exists() else None
        time.sleep(0.01)  # a rewrite gets a later modification time
        searcher.save_to_dir(str(folder), session)
        return path.stat().st_mtime_ns != before

    assert written()
    assert not written()  # a mid-trial snapshot: nothing changed
    searcher.suggest("trial_0")
    assert written() and not written()
    searcher.on_trial_complete("trial_0", {"top1": 0.6, "training_iteration": 10})
    assert written() and not written()
    assert read_state(state)["core"] == searcher.core.state_dict()
    assert written("resumed")  # a resumed search's session writes its own file
    state.unlink()
    assert written()  # a missing file is written whatever changed
    restored = TinySearcher(make_core("nsga3", space, BUDGET, pop_size=4, seed=0), max_epochs=10)
    restored.restore_from_dir(str(folder))
    assert restored.core.records == searcher.core.records
    searcher.set_search_properties("top1", "max", {})
    assert written()


@pytest.mark.parametrize("name", ["optuna-nsga3", "optuna-tpe"])
def test_optuna_searcher_stays_in_the_band_and_resumes_from_its_state(space, name):
    core = make_core(name, space, BUDGET, pop_size=4, seed=0)
    assert core.strategy == name
    for i in range(10):
        candidate = core.ask(f"t{i}")
        assert core.band.contains(core.band.flops((candidate.r, candidate.d, candidate.w)))
        status = "failed" if i == 3 else ("early-stopped" if i % 4 == 1 else "completed")
        core.tell(f"t{i}", synthetic_top1(candidate), status)
    pending = core.ask("p0")  # handed out, not told when the state is saved
    state = json.loads(json.dumps(core.state_dict()))
    assert state["version"] == STATE_VERSION and len(state["records"]) == 10 and state["pending"][0]["trial_id"] == "p0"

    restored = make_core(name, space, BUDGET, pop_size=4, seed=0)
    restored.load_state_dict(state)
    assert restored.records == core.records and restored.pending == {"p0": pending}
    restored.tell("p0", 0.5, "completed")  # its Optuna trial is gone: added to the study as finished
    assert restored.records[-1].trial_id == "p0" and len(restored.state_dict()["history"]) >= 11
    seen = {(r.r, r.d, r.w) for r in restored.records}
    for i in range(6):
        candidate = restored.ask(f"n{i}")
        assert (candidate.r, candidate.d, candidate.w) not in seen  # a fresh random stream, not a replay
        restored.tell(f"n{i}", synthetic_top1(candidate), "completed")
    statuses = [rec.status for rec in restored.records]
    assert statuses.count("failed") == 1 and statuses.count("early-stopped") == 3
    with pytest.raises(UserError, match="saved with seed=0"):
        make_core(name, space, BUDGET, pop_size=4, seed=1).load_state_dict(state)
    other = "optuna-tpe" if name == "optuna-nsga3" else "optuna-nsga3"
    with pytest.raises(UserError):  # one Optuna sampler's state is not the other's
        make_core(other, space, BUDGET, pop_size=4, seed=0).load_state_dict(state)


def test_optuna_tpe_is_optuna_s_multivariate_motpe_with_a_random_start_of_pop_size(space):
    import optuna

    core = make_core("optuna-tpe", space, BUDGET, pop_size=6, seed=0)
    sampler = core._study.sampler
    assert isinstance(sampler, optuna.samplers.TPESampler) and sampler._n_startup_trials == 6
    assert sampler._multivariate and core._study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                                                 optuna.study.StudyDirection.MINIMIZE]


def test_a_state_saved_with_the_old_status_word_still_loads(space):
    core = make_core("random", space, BUDGET, seed=0)
    candidate = core.ask("t0")
    core.tell("t0", 0.3, "early-stopped")
    state = json.loads(json.dumps(core.state_dict()).replace('"early-stopped"', '"stopped"'))  # as tinyray 0.1 wrote
    restored = make_core("random", space, BUDGET, seed=0)
    restored.load_state_dict(state)
    assert restored.records[0].status == "early-stopped" and restored.records[0].candidate == candidate


# --------------------------------------------------------------------------------------------------------------
# qNEHVI (BoTorch)
# --------------------------------------------------------------------------------------------------------------


def ask_tell(core, prefix: str, count: int, batch: int = 1) -> list[Candidate]:
    """``count`` trials, asked ``batch`` at a time (the later ones while the earlier are pending), then told."""
    handed = []
    for start in range(0, count, batch):
        trial_ids = [f"{prefix}-{i}" for i in range(start, min(start + batch, count))]
        asked = [(trial_id, core.ask(trial_id)) for trial_id in trial_ids]
        for trial_id, candidate in asked:
            core.tell(trial_id, synthetic_top1(candidate), "completed")
        handed += [candidate for _, candidate in asked]
    return handed


def test_qnehvi_proposes_new_networks_in_the_bounds_and_the_band(space):
    from tinyray.searchers.qnehvi import QNEHVICore

    # a band a quarter of an octave wide, as for NSGA-III's repair
    core = make_core("qnehvi", space, 60_000_000, floor=45_000_000, pop_size=4, seed=0)
    assert isinstance(core, QNEHVICore)
    handed = ask_tell(core, "t", 10, batch=3)
    assert all(in_band(space, c, 45_000_000, 60_000_000) for c in handed)
    low, high = core.band.low, core.band.high
    assert all(np.all(low <= (c.r, c.d, c.w)) and np.all((c.r, c.d, c.w) <= high) for c in handed)
    assert len({core.band.network_key((c.r, c.d, c.w)) for c in handed}) == len(handed)
    # 4 Sobol points, then 6 asks by qLogNEHVI, which fantasized the pending ones of their batch of 3
    assert len(core.timings) == 6 and [t.pending for t in core.timings] == [1, 2, 0, 1, 2, 0]
    # refitted after new results only; the asks of a batch after its first reuse the model
    assert [t.refitted for t in core.timings] == [True, False, True, False, False, True]


def test_qnehvi_is_deterministic_for_a_seed(space):
    def suggestions(seed: int) -> list[Candidate]:
        return ask_tell(make_core("qnehvi", space, BUDGET, pop_size=4, seed=seed), "t", 8, batch=2)

    assert suggestions(3) == suggestions(3)
    assert suggestions(3) != suggestions(4)


def test_qnehvi_restores_mid_search_and_continues_like_an_uninterrupted_run(space):
    core = make_core("qnehvi", space, BUDGET, pop_size=4, seed=5)
    ask_tell(core, "a", 2)
    during_start = make_core("qnehvi", space, BUDGET, pop_size=4, seed=5)  # the Sobol sequence goes on
    during_start.load_state_dict(json.loads(json.dumps(core.state_dict())))
    assert [during_start.ask(f"s{i}") for i in range(2)] == [core.ask(f"s{i}") for i in range(2)]
    for i in range(2):
        core.tell(f"s{i}", 0.5, "completed")
    ask_tell(core, "a2", 1)
    core.tell("never-asked", 0.5, "completed")  # ignored
    handed = [(f"b-{i}", core.ask(f"b-{i}")) for i in range(3)]  # by qLogNEHVI, the later with the earlier pending
    core.tell(handed[0][0], synthetic_top1(handed[0][1]), "early-stopped")

    state = json.loads(json.dumps(core.state_dict()))
    assert state["version"] == STATE_VERSION and state["asked"] == 8 and state["sobol_drawn"] >= 4
    assert [p["trial_id"] for p in state["pending"]] == ["b-1", "b-2"]
    restored = make_core("qnehvi", space, BUDGET, pop_size=4, seed=5)
    restored.load_state_dict(state)
    assert restored.records == core.records and restored.pending == core.pending
    assert restored.state_dict() == state
    assert pickle.loads(pickle.dumps(core)).state_dict() == state  # what Tune saves

    def finish(target) -> list[Candidate]:
        extra = target.ask("c-0")  # asked while two are pending
        for trial_id, candidate in handed[1:]:
            target.tell(trial_id, synthetic_top1(candidate), "completed")
        target.tell("c-0", None, "failed")
        return [extra, *ask_tell(target, "d", 3, batch=2)]

    assert finish(restored) == finish(core)
    assert restored.records == core.records
    statuses = [rec.status for rec in core.records]
    assert statuses.count("early-stopped") == 1 and statuses.count("failed") == 1

    with pytest.raises(UserError, match="saved with seed=5"):
        make_core("qnehvi", space, BUDGET, pop_size=4, seed=6).load_state_dict(state)
    with pytest.raises(UserError, match="pop_size"):
        make_core("qnehvi", space, BUDGET, pop_size=5, seed=5).load_state_dict(state)
    with pytest.raises(UserError, match="damaged"):
        make_core("qnehvi", space, BUDGET, pop_size=4, seed=5).load_state_dict({**state, "asked": "many"})


def test_qnehvi_finds_a_better_front_than_random_with_the_same_evaluations(space):
    """On the smooth synthetic landscape, 8 Sobol points and 16 qLogNEHVI asks beat 24 uniform draws."""
    evaluations = 24
    volumes = {}
    for name in ("qnehvi", "random"):
        core = make_core(name, space, BUDGET, pop_size=8, seed=0)
        ask_tell(core, "t", evaluations, batch=2)
        assert len(core.records) == evaluations
        volumes[name] = hypervolume(core.records, core.base_flops)
    assert volumes["qnehvi"] > volumes["random"] + 0.01, volumes


def test_qnehvi_rejects_an_empty_start(space):
    with pytest.raises(UserError, match="pop-size"):
        make_core("qnehvi", space, BUDGET, pop_size=0)


def test_a_search_breeds_one_generation_ahead_by_default_and_an_older_search_resumes_with_none(tmp_path):
    import json

    from tinyray.search import SearchConfig, resume_config

    assert SearchConfig(budget=200_000_000).generations_ahead == 1
    assert SearchConfig(budget=200_000_000, generations_ahead=0).generations_ahead == 0
    # the searchers without generations take 0 (they refuse another value)
    assert SearchConfig(budget=200_000_000, searcher="random").generations_ahead == 0
    # a search.json written before --generations-ahead existed: that search bred none ahead, and resumes so
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "search.json").write_text(json.dumps({"config": {"budget": 200_000_000, "name": "old"}}))
    assert resume_config(tmp_path, "old", {}).generations_ahead == 0
    with pytest.raises(UserError, match="--generations-ahead 1 differs from the search's 0"):
        resume_config(tmp_path, "old", {"generations_ahead": 1})


def test_the_last_generation_of_a_search_is_handed_out_longest_first(space):
    """Knowing the search's trial count, NSGA-III hands its last pop_size trials out most FLOPs first, so the
    trials still running when nothing is left to start are short; the earlier ones keep pymoo's order."""
    told = make_core("nsga3", space, BUDGET, pop_size=POP, seed=3)
    known = make_core("nsga3", space, BUDGET, pop_size=POP, seed=3, trials=2 * POP)
    assert "trials" not in known.config()  # the order is not part of a saved state: old states still load
    first = [c for _, c in run_generation(told, "g0")]
    assert [c for _, c in run_generation(known, "g0")] == first  # the first generation: pymoo's order
    second_told = [c for _, c in run_generation(told, "g1")]
    second = [c for _, c in run_generation(known, "g1")]
    assert sorted(second, key=lambda c: (c.r, c.d, c.w)) == sorted(second_told, key=lambda c: (c.r, c.d, c.w))
    flops = [known.band.flops((c.r, c.d, c.w)) for c in second]
    assert flops == sorted(flops, reverse=True) and second != second_told
    # a search of no more trials than a generation keeps the first generation's order (floor to budget)
    small = make_core("nsga3", space, BUDGET, pop_size=POP, seed=3, trials=2)
    assert [c for _, c in run_generation(small, "g0")] == first


def test_a_band_pickled_before_resolution_fn_existed_unpickles_and_keys_by_deployment_resolution(space):
    """A search started before the band knew the training side is resumed from Tune's pickled state."""
    band = make_core("random", space, BUDGET).band
    state = band.__getstate__()
    del state["resolution_fn"]  # what an older tinyray pickled
    old = FlopsBand.__new__(FlopsBand)
    old.__setstate__(state)
    assert old.network_key((0.66, 0.5, 0.5)) == band.network_key((0.66, 0.5, 0.5))
    assert old.network_key((0.665791, 0.56, 0.52)) != old.network_key((0.670460, 0.56, 0.52))
