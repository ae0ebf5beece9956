"""How a trial ended, in one vocabulary: ``completed``, ``early-stopped`` or ``failed``.

The same words are in ``trials.csv``, on each trial's MLflow run (tag ``status``), in the searcher's records and
in the report; :func:`trial_status` is the one rule that decides between them.
"""

from __future__ import annotations

from typing import Literal

Status = Literal["completed", "early-stopped", "failed"]

#: trained to full fidelity (``max_epochs``): the only trials a Pareto front or a formula fit may use
COMPLETED: Status = "completed"
#: stopped by the scheduler before ``max_epochs``: its accuracy is partial
EARLY_STOPPED: Status = "early-stopped"
#: raised (after its retries), diverged, or ended without an accuracy
FAILED: Status = "failed"
STATUSES: tuple[Status, ...] = (COMPLETED, EARLY_STOPPED, FAILED)

#: words earlier versions wrote for a status (the searcher's saved state said ``stopped``)
LEGACY = {"stopped": EARLY_STOPPED}


def trial_status(epochs: int, max_epochs: int, error: bool = False) -> Status:
    """How a trial that ran ``epochs`` epochs ended.

    Args:
        epochs: epochs it reported (Tune's ``training_iteration`` of its last result).
        max_epochs: full fidelity of the search.
        error: whether it raised.
    """
    if error:
        return FAILED
    return COMPLETED if int(epochs) >= int(max_epochs) else EARLY_STOPPED


def check_status(status: str) -> Status:
    """``status`` as one of :data:`STATUSES` (a legacy word is translated).

    Raises:
        ValueError: for any other word.
    """
    status = LEGACY.get(status, status)
    if status not in STATUSES:
        raise ValueError(f"trial status {status!r} is not one of {list(STATUSES)}")
    return status  # type: ignore[return-value]
