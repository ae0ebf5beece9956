"""The ``random`` searcher: the paper's protocol, candidates drawn uniformly from the cube under the FLOPs band."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyray.cube import Candidate
from tinyray.files import SEARCHER_STATE_VERSION
from tinyray.searchers.band import FlopsBand
from tinyray.searchers.base import (SearchCore, _check_result, _damaged, load_common_state, pending_state,
                                    take_pending)


class RandomCore(SearchCore):
    """The paper's protocol: candidates drawn uniformly from the cube under the FLOPs band.

    :meth:`ask` always has a candidate (rejection sampling, never a network handed out before while others
    are left); results are only recorded. The state stores the random generator's exact position.

    Args:
        band: the feasible FLOPs band.
        seed: seed of the random generator.
    """

    strategy = "random"

    def __init__(self, band: FlopsBand, *, seed: int = 0) -> None:
        super().__init__(band, seed)
        self._rng = np.random.default_rng(seed)
        self._seen: set = set()
        self._pending: dict[str, tuple[Candidate, int]] = {}

    @property
    def pending(self) -> dict[str, Candidate]:
        return {trial_id: candidate for trial_id, (candidate, _) in self._pending.items()}

    def ask(self, trial_id: str) -> Candidate:
        """A new uniformly drawn candidate in the band (the same one again for a pending ``trial_id``)."""
        if trial_id in self._pending:
            return self._pending[trial_id][0]
        x = self.band.sample(self._rng, avoid=self._seen)
        self._seen.add(self.band.network_key(x))
        candidate = Candidate(float(x[0]), float(x[1]), float(x[2]))
        self._pending[trial_id] = (candidate, self.band.flops(x))
        return candidate

    def tell(self, trial_id: str, top1: float | None, status: str) -> None:
        """Record a result (see :meth:`NSGA3Core.tell`)."""
        top1, checked = _check_result(trial_id, top1, status)
        handed_out = take_pending(self._pending, trial_id)
        if handed_out is None:
            return
        self._record(trial_id, handed_out[0], handed_out[1], top1, checked)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: options, the generator's position, records and pending trials."""
        return {
            "version": SEARCHER_STATE_VERSION,
            "strategy": self.strategy,
            "config": self.config(),
            "rng": self._rng.bit_generator.state,
            "records": [rec.to_dict() for rec in self._records],
            "pending": pending_state(self._pending),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`.

        Raises:
            UserError: if the state is of another version or other options, or is damaged.
        """
        self._check_state(state)
        try:
            records, pending, rng = load_common_state(state)
        except (KeyError, TypeError, ValueError) as error:
            raise _damaged(error) from error
        self._rng = rng
        self._records = records
        self._pending = pending
        self._seen = {self.band.network_key((c.r, c.d, c.w)) for c in [rec.candidate for rec in records]}
        self._seen |= {self.band.network_key((c.r, c.d, c.w)) for c, _ in pending.values()}
