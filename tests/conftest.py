"""Shared fixtures and helpers: the shipped search space, and what the resume drills read from a results folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyray.space import SearchSpace, load_space


@pytest.fixture(scope="session")
def space() -> SearchSpace:
    return load_space("efficientnet_b0")


def finished_trials(results: Path, epochs: int) -> dict[str, int]:
    """Trials of a results folder whose result.json holds all ``epochs`` epochs -> number of result lines.

    The resume and reliability drills compare this before and after a restart: a finished trial must be neither
    retrained nor duplicated.
    """
    done = {}
    for path in results.glob("trial_*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if lines and json.loads(lines[-1]).get("training_iteration") == epochs:
            done[path.parent.name] = len(lines)
    return done
