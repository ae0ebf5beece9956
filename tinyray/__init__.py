"""tinyray: find the best tiny network for a compute budget.

The search of "Model Rubik's Cube: Twisting Resolution, Depth and Width for TinyNets" (Han et al., NeurIPS 2020)
as distributed software: Ray Tune trials over the (r, d, w) cube, a pymoo NSGA-III searcher, a BoTorch tiny
formula and MLflow tracking.

Heavy libraries (torch, timm, Ray, MLflow) are imported by the modules that use them, never here, so that
``import tinyray`` and ``tinyray --help`` stay fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
