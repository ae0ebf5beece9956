"""What a real search records in MLflow: the search's own settings on its run, and one named run per trial."""

from __future__ import annotations

import pytest

from tinyray.data import DataSpec
from tinyray.search import SearchConfig, run_search

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    # the data spec's own seed (the generator's, 0) differs from the search's: the run must show the search's
    data = DataSpec(train_size=300, val_size=100, seed=0, cache_dir=root / "cache")
    config = SearchConfig(budget=200_000_000, name="tracked", storage=root / "results", data=data, trials=2,
                          max_epochs=1, seed=1, progress="quiet")
    return run_search(config)


@pytest.fixture(scope="module")
def client(finished):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=finished.tracking_uri)


def test_search_run_logs_the_search_seed_and_the_data_seed_apart(finished, client):
    params = client.get_run(finished.parent_run_id).data.params
    assert params["seed"] == "1"
    assert params["data_seed"] == "0"
    assert params["data_train_size"] == "300" and params["data_val_size"] == "100"
