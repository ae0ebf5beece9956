"""The Pareto front and its hypervolume (pymoo), on hand-made points."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tinyray.front import front_table, hypervolume, pareto_mask, plot_front


def test_pareto_mask_keeps_exactly_the_non_dominated():
    top1 = np.array([0.50, 0.60, 0.55, 0.70, 0.65])
    flops = np.array([10, 20, 30, 40, 45])
    # 0.55@30 is dominated by 0.60@20; 0.65@45 by 0.70@40
    assert pareto_mask(top1, flops).tolist() == [True, True, False, True, False]
    assert pareto_mask(np.array([]), np.array([])).tolist() == []


def test_hypervolume_in_the_normalised_plane():
    # one point at top1 0.8 and half the budget covers (1 - 0.2) * (1 - 0.5) = 0.4
    assert math.isclose(hypervolume([0.8], [50.0], budget=100.0), 0.4)
    # a dominated point adds nothing, a non-dominated one adds its own rectangle
    assert math.isclose(hypervolume([0.8, 0.7], [50.0, 60.0], budget=100.0), 0.4)
    both = hypervolume([0.8, 0.6], [50.0, 25.0], budget=100.0)
    assert math.isclose(both, 0.8 * 0.5 + 0.6 * (0.5 - 0.25))
    # over-budget points do not count; no points is zero
    assert hypervolume([0.9], [150.0], budget=100.0) == 0.0
    assert hypervolume([], [], budget=100.0) == 0.0


def test_front_table_uses_only_completed_trials(tmp_path):
    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d"],
        "top1": [0.5, 0.9, 0.6, 0.95],
        "flops": [10, 5, 20, 30],
        "status": ["completed", "early-stopped", "completed", "failed"],
    })
    front = front_table(trials)
    # b dominates everything but is partial-fidelity; d failed
    assert front["trial_id"].tolist() == ["a", "c"]
    path = plot_front(trials, front, budget=40, path=tmp_path / "front.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
