"""The accuracy/FLOPs Pareto front of a search and its hypervolume, both computed by pymoo.

Only full-fidelity trials (trained for every epoch) enter the front: an early-stopped trial's accuracy is a
partial result that would flatter nothing and mislead everything.

Hypervolume is measured in a normalised plane so that numbers compare across budgets: the objectives
``(1 - top1, flops / budget)`` are both minimised and both lie in [0, 1]; the reference point is (1, 1),
so a single perfect network at zero cost would score 1.0.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyray.status import COMPLETED, EARLY_STOPPED, FAILED

if TYPE_CHECKING:
    import pandas as pd


def _objectives(top1: np.ndarray, flops: np.ndarray, budget: float) -> np.ndarray:
    return np.column_stack([1.0 - np.asarray(top1, dtype=float), np.asarray(flops, dtype=float) / float(budget)])


def pareto_mask(top1: np.ndarray, flops: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated points (maximise top1, minimise flops).

    Args:
        top1: ``n`` validation accuracies in [0, 1].
        flops: ``n`` FLOPs of the same candidates.
    """
    top1 = np.asarray(top1, dtype=float)
    mask = np.zeros(len(top1), dtype=bool)
    if len(top1) == 0:
        return mask
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    objectives = np.column_stack([-top1, np.asarray(flops, dtype=float)])
    first = NonDominatedSorting().do(objectives, only_non_dominated_front=True)
    mask[np.asarray(first, dtype=int)] = True
    return mask


def hypervolume(top1: np.ndarray, flops: np.ndarray, budget: float) -> float:
    """Hypervolume of the points in the normalised plane ``(1 - top1, flops / budget)`` with reference (1, 1).

    Points over the budget contribute nothing. Returns 0.0 for no points.
    """
    objectives = _objectives(top1, flops, budget)
    objectives = objectives[(objectives[:, 1] <= 1.0) & (objectives[:, 0] <= 1.0)]
    if len(objectives) == 0:
        return 0.0
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=np.array([1.0, 1.0]))(objectives))


def front_table(trials: "pd.DataFrame") -> "pd.DataFrame":
    """The Pareto front of the completed trials of a ``trials`` table, sorted by FLOPs.

    Args:
        trials: one row a trial with at least ``status``, ``top1`` and ``flops`` columns.
    """
    done = trials[(trials["status"] == COMPLETED) & trials["top1"].notna()]
    if done.empty:
        return done.copy()
    mask = pareto_mask(done["top1"].to_numpy(), done["flops"].to_numpy())
    return done[mask].sort_values("flops").reset_index(drop=True)


def plot_front(trials: "pd.DataFrame", front: "pd.DataFrame", budget: float, path: Path, title: str = "") -> Path:
    """Draw every trial (by status) and the front, top-1 against MFLOPs, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {COMPLETED: ("tab:blue", "o"), EARLY_STOPPED: ("tab:gray", "x"), FAILED: ("tab:red", "^")}
    for status, (colour, marker) in styles.items():
        rows = trials[(trials["status"] == status) & trials["top1"].notna()]
        if not rows.empty:
            ax.scatter(rows["flops"] / 1e6, rows["top1"], c=colour, marker=marker, s=22, alpha=0.7,
                       label=f"{status} ({len(rows)})")
    if not front.empty:
        ax.step(front["flops"] / 1e6, front["top1"], where="post", c="tab:orange", lw=1.5)
        ax.scatter(front["flops"] / 1e6, front["top1"], c="tab:orange", s=40, zorder=3, label=f"front ({len(front)})")
    ax.axvline(budget / 1e6, c="k", ls="--", lw=0.8, label=f"budget {budget / 1e6:g}M")
    ax.set_xlabel("FLOPs (M multiply-accumulates at deployment resolution)")
    ax.set_ylabel("validation top-1")
    ax.set_title(title or "accuracy / FLOPs front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out a matplotlib figure, write it to ``path`` (creating the folder) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
