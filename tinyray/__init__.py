"""tinyray: find the best tiny network for a compute budget.

The search of "Model Rubik's Cube: Twisting Resolution, Depth and Width for TinyNets" (Han et al., NeurIPS 2020)
as distributed software: Ray Tune trials over the (r, d, w) cube, a pymoo NSGA-III searcher, a BoTorch tiny
formula and MLflow tracking.

Heavy libraries (torch, timm, Ray, MLflow) are imported by the modules that use them, never here, so that
``import tinyray`` and ``tinyray --help`` stay fast.

No traffic leaves for the libraries' makers: MLflow 3 sends usage telemetry to ``mlflow-telemetry.io`` from every
process that logs (the driver, a trial, ``mlflow server``) unless ``MLFLOW_DISABLE_TELEMETRY`` is set, and Ray
reports usage statistics from a head it starts unless ``RAY_USAGE_STATS_ENABLED=0``. Importing tinyray sets both
to off in its process, before any of its modules imports MLflow or Ray, and the processes it starts (a local Ray,
its trials, an MLflow server) inherit that; a value the user set is kept, so either can be switched back on. The
cluster files start Ray with ``--disable-usage-stats``.
"""

import os as _os

_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

__version__ = "0.1.0"

__all__ = ["__version__"]
