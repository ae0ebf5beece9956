"""FLOPs and parameters: the analytic count equals torch's count, and budgets parse as people write them."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tinyray.cost import analytic_cost, base_flops, format_flops, measured_cost, parse_budget
from tinyray.cube import TINYNETS
from tinyray.errors import UserError


def _cube_points(space, count: int, seed: int):
    """The 8 corners of the (r, d, w) cube, then ``count`` uniform points inside it."""
    bounds = (space.r, space.d, space.w)
    rng = random.Random(seed)
    points = list(itertools.product(*[(b.low, b.high) for b in bounds]))
    for _ in range(count):
        points.append(tuple(rng.uniform(b.low, b.high) for b in bounds))
    return points


def test_cube_points_reach_every_bound_of_every_multiplier(space):
    points = _cube_points(space, 0, seed=0)
    assert len(set(points)) == 8
    for axis, bounds in enumerate((space.r, space.d, space.w)):
        assert {point[axis] for point in points} == {bounds.low, bounds.high}


@pytest.mark.parametrize("num_classes", [1000, 10])
def test_analytic_equals_measured_across_the_cube(space, num_classes):
    for r, d, w in _cube_points(space, 12, seed=num_classes):
        analytic = analytic_cost(space, r, d, w, num_classes)
        measured = measured_cost(space, r, d, w, num_classes)
        assert analytic.resolution == measured.resolution
        # the issue asks for 0.5%; the two counts are in fact identical
        assert math.isclose(analytic.flops, measured.flops, rel_tol=0.005), (r, d, w)
        assert analytic.flops == measured.flops, (r, d, w)
        assert analytic.params == measured.params, (r, d, w)


def test_paper_numbers(space):
    # EfficientNet-B0 is 0.39 G multiply-accumulates in the paper
    assert 0.38e9 < base_flops(space) < 0.40e9
    for name, spec in TINYNETS.items():
        cost = analytic_cost(space, spec["r"], spec["d"], spec["w"])
        # within 2% of the paper's 339/202/100/52/24 M
        assert math.isclose(cost.flops / 1e6, spec["paper_mflops"], rel_tol=0.02), name


def test_cost_grows_with_each_multiplier(space):
    low = analytic_cost(space, 0.5, 0.5, 0.5).flops
    assert analytic_cost(space, 0.7, 0.5, 0.5).flops > low
    assert analytic_cost(space, 0.5, 0.9, 0.5).flops > low
    assert analytic_cost(space, 0.5, 0.5, 0.9).flops > low


@pytest.mark.parametrize(
    "text, flops",
    [("200M", 200_000_000), ("1.2G", 1_200_000_000), ("2e8", 200_000_000), ("200000000", 200_000_000),
     ("0.2G", 200_000_000), ("350k", 350_000), ("350K", 350_000), (" 24m ", 24_000_000), ("200MFLOPs", 200_000_000),
     (2e8, 200_000_000), (150_000_000, 150_000_000)],
)
def test_budget_parses(text, flops):
    assert parse_budget(text) == flops


@pytest.mark.parametrize("text", ["", "   ", "0", "-5M", "NaN", "nan", "inf", "200X", "M", "2e8e", "1.2.3G", "0.0000001k", float("inf"), -1])
def test_bad_budget_is_one_line_with_an_example(text):
    with pytest.raises(UserError) as info:
        parse_budget(text)
    message = str(info.value)
    assert "200M" in message and "\n" not in message


def test_format_flops():
    assert format_flops(201_600_000) == "201.6M"
    assert format_flops(1.2e9) == "1.2G"
    assert format_flops(350_000) == "350k"
