"""``TinySearcher``: a Ray Tune ``Searcher`` around any searcher core of :mod:`tinyray.searchers`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from ray.tune.search import Searcher

from tinyray.errors import UserError
from tinyray.files import SEARCHER_STATE_VERSION, read_json
from tinyray.searchers.base import SearchCore
from tinyray.status import FAILED, Status, trial_status


def classify_result(
    result: dict[str, Any] | None, *, error: bool, metric: str, max_epochs: int
) -> tuple[float | None, Status]:
    """Turn Tune's end-of-trial report into ``(top1, status)`` for :meth:`SearchCore.tell`.

    Args:
        result: the trial's last result (may be ``None``, or lack the metric).
        error: whether the trial raised.
        metric: the accuracy key in ``result``.
        max_epochs: full fidelity; a trial that ran fewer ``training_iteration`` was early-stopped.

    Returns:
        ``(top1, status)``, with ``top1`` None for a failed trial (one that raised, or ended without a finite
        metric).
    """
    if error or not result or result.get(metric) is None:
        return None, FAILED
    top1 = float(result[metric])
    if not math.isfinite(top1):
        return None, FAILED
    return top1, trial_status(int(result.get("training_iteration") or 0), max_epochs)


def check_mode(mode: str, who: str = "searcher") -> None:
    if mode != "max":
        raise UserError(f"the tinyray {who} maximises accuracy: use mode 'max', not {mode!r}")


class TinySearcher(Searcher):
    """Ray Tune ``Searcher`` around a :class:`SearchCore`: suggestions are ``{"r", "d", "w"}`` configs.

    A trial's status is :func:`classify_result` of its last result. ``save``/``restore`` write the core's JSON
    state atomically.

    Args:
        core: the search core.
        metric: the accuracy key the trainable reports (a fraction in [0, 1]).
        mode: must be ``max``: the searcher maximises accuracy.
        max_epochs: epochs of a full-fidelity trial; a trial ending with fewer ``training_iteration`` was
            early-stopped.
        describe: if given, ``describe(config)`` returns the trial's :data:`~tinyray.tracking.TRIAL_PARAMS` and
            the suggestion is that: a replay search (``--trainer replay``) describes its trials here, in the driver,
            because counting a candidate's FLOPs imports torch and timm (about 700 MB), which a replay trial's
            process otherwise never needs (see docs/benchmarks.md).
    """

    def __init__(self, core: SearchCore, *, metric: str = "top1", mode: str = "max", max_epochs: int,
                 describe: Callable[[dict[str, float]], dict[str, Any]] | None = None) -> None:
        check_mode(mode)
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise UserError(f"max epochs {max_epochs!r} must be a positive integer: give e.g. --max-epochs 6")
        super().__init__(metric=metric, mode=mode)
        self.core = core
        self.max_epochs = max_epochs
        self.describe = describe
        self._changes = 0  # calls that may have changed the core's state: suggest, on_trial_complete, restore
        self._saved: tuple[int, str] | None = None  # (changes, file) of the last state written

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        if mode:
            check_mode(mode)
            self._mode = mode
        if metric:
            self._metric = metric
        self._changed()
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        self._changed()
        candidate = self.core.ask(trial_id)
        if candidate is None:
            return None
        config = {"r": candidate.r, "d": candidate.d, "w": candidate.w}
        describe = getattr(self, "describe", None)  # a searcher pickled by tinyray before 'describe' has none
        return describe(config) if describe is not None else config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        top1, status = classify_result(result, error=error, metric=self.metric, max_epochs=self.max_epochs)
        self._changed()
        self.core.tell(trial_id, top1, status)

    def _changed(self) -> None:
        self._changes = getattr(self, "_changes", 0) + 1  # a searcher pickled before issue 20's fix has none

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Tune's snapshot of the searcher: written only if the core may have changed since the last one.

        Tune snapshots the experiment after every epoch's checkpoint (tinyray.tune.runtime), and the core changes
        only when a trial is suggested or ends: most snapshots (those of mid-trial epochs) would rewrite the same
        state, whose size grows with the trials told (O(trials) each time, O(trials^2) a search).
        """
        final = str(Path(checkpoint_dir, self.CKPT_FILE_TMPL.format(session_str)))
        key = (getattr(self, "_changes", 0), final)
        if getattr(self, "_saved", None) == key and Path(final).is_file():
            return
        super().save_to_dir(checkpoint_dir, session_str)
        self._saved = key

    def save(self, checkpoint_path: str) -> None:
        # Tune calls this with every experiment snapshot, into a temporary file it then renames over the last
        # state (Searcher.save_to_dir): already atomic, so no second temporary file and no fsync of our own, which
        # would hold up Tune's loop once per snapshot.
        state = {"version": SEARCHER_STATE_VERSION, "metric": self.metric, "mode": self.mode,
                 "max_epochs": self.max_epochs, "core": self.core.state_dict()}
        path = Path(checkpoint_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, separators=(",", ":")) + "\n")

    def restore(self, checkpoint_path: str) -> None:
        state = read_json(checkpoint_path, "searcher state")
        if not isinstance(state, dict) or state.get("version") != SEARCHER_STATE_VERSION or "core" not in state:
            raise UserError(
                f"{checkpoint_path} is not a tinyray searcher state of version {SEARCHER_STATE_VERSION}:"
                " start a new experiment"
            )
        self.core.load_state_dict(state["core"])
        self._changed()
        self._metric = state.get("metric", self._metric)
        self.max_epochs = int(state.get("max_epochs", self.max_epochs))
