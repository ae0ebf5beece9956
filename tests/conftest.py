"""Shared fixtures: the shipped search space, and a per-test data cache so tests never touch ~/.cache."""

from __future__ import annotations

import pytest

from tinyray.space import SearchSpace, load_space


@pytest.fixture(scope="session")
def space() -> SearchSpace:
    return load_space("efficientnet_b0")
