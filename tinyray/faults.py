"""Fault injection (for tests and chaos drills, like Ray's own ``RAY_testing_*`` switches): the environment
variable ``TINYRAY_FAULTS`` may hold a JSON list of faults, each ``{"kind": "raise" | "nan" | "oom" | "enospc", "epoch": k,
"param": "r" | "d" | "w", "above": x, "below": y, "once": bool}``: a trial whose ``param`` lies in the range fails
at the end of epoch ``k`` with a RuntimeError, a :class:`~tinyray.train.TrainingDiverged`, an out-of-memory
error or a full disk (``OSError`` ENOSPC); with ``once`` only its first attempt fails (attempts are remembered in ``$TINYRAY_FAULTS_DIR``, default the
temporary folder). Unset, nothing is injected.
"""

from __future__ import annotations

import json
from typing import Any

from tinyray.errors import UserError

#: What a fault of ``TINYRAY_FAULTS`` may say (see the module docstring).
FAULT_KINDS = ("raise", "nan", "oom", "enospc")
FAULT_KEYS = {"kind": str, "epoch": int, "param": str, "above": (int, float), "below": (int, float), "once": bool}


def parse_faults(raw: str | None) -> list[dict[str, Any]]:
    """The faults of a ``TINYRAY_FAULTS`` value (``[]`` if unset).

    Raises:
        UserError: the value is not a JSON list of faults as the module docstring describes.
    """
    if not raw or not raw.strip():
        return []
    fix = ('set TINYRAY_FAULTS to a JSON list like \'[{"kind": "raise", "epoch": 1, "param": "w", "below": 0.5}]\' '
           'or unset it')
    try:
        faults = json.loads(raw)
    except ValueError as exc:
        raise UserError(f"TINYRAY_FAULTS is not JSON ({exc}): {fix}") from None
    if not isinstance(faults, list) or not all(isinstance(fault, dict) for fault in faults):
        raise UserError(f"TINYRAY_FAULTS must be a list of objects: {fix}")
    for fault in faults:
        unknown = sorted(set(fault) - set(FAULT_KEYS))
        if unknown:
            raise UserError(f"TINYRAY_FAULTS has an unknown key {unknown[0]!r} (known: {', '.join(FAULT_KEYS)}): {fix}")
        if fault.get("kind") not in FAULT_KINDS:
            raise UserError(f"TINYRAY_FAULTS kind {fault.get('kind')!r} is not one of {', '.join(FAULT_KINDS)}: {fix}")
        for key, kind in FAULT_KEYS.items():
            value = fault.get(key)
            if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
                raise UserError(f"TINYRAY_FAULTS {key} {value!r} has the wrong type: {fix}")
        if fault.get("param", "r") not in ("r", "d", "w"):
            raise UserError(f"TINYRAY_FAULTS param {fault['param']!r} is not r, d or w: {fix}")
    return faults
