"""What tinyray keeps on disk: the format version of every file it writes, and the one atomic writer.

Every JSON file a results folder holds carries a ``version`` key; a reader refuses (or ignores, where the file is
optional) any other version. The numbers live here so that a writer and its readers cannot disagree; the modules
that write the files import them from here (``tinyray.train.STATE_VERSION`` and ``tinyray.export.EXPORT_VERSION``
remain as names for the two that lived there).

Versions of content rather than of a file's layout stay beside what they version: ``SYNTHETIC_VERSION``
(:mod:`tinyray.data`, the synthetic images' generator: a bump changes the pixels and the cache file's name) and
``PANEL_VERSION`` (:mod:`tinyray.fidelity`, the set of networks a proxy-fidelity recording trains).

Every file is written atomically (a temporary file in the same folder, flushed, then ``os.replace``), so a killed
process leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from tinyray.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

#: a trial's folder in the results folder is this prefix and its id (:func:`tinyray.tune.trainable.trial_folder`)
TRIAL_FOLDER_PREFIX = "trial_"
#: ``searcher-state-*.json`` (the searcher's state, written by Ray Tune's ``Searcher.save``)
SEARCHER_STATE_VERSION = 1
#: ``scheduler.json`` (the multi-objective ASHA's rungs: this state, then a line per result appended since)
SCHEDULER_STATE_VERSION = 1
#: the tracking callback's state inside Ray Tune's experiment state (the trial -> MLflow run mapping)
TRACKING_STATE_VERSION = 1
#: ``tracking.json`` (the MLflow journal: what was sent, what is still to send)
JOURNAL_VERSION = 1
#: ``search.json`` (what the search was: its options, space and data)
SEARCH_INFO_VERSION = 1
#: ``summary.json`` (the closing summary)
SUMMARY_VERSION = 1
#: ``formula.json`` (the fitted tiny formula)
FORMULA_VERSION = 1
#: the training state of a checkpoint (``state.pt`` in a Ray Tune checkpoint: the dict ``train_candidate`` hands out)
TRAINING_STATE_VERSION = 1
#: ``config.json`` of ``tinyray export`` (its ``tinyray_export`` key)
EXPORT_VERSION = 1
#: ``manifest.json`` of a dataset subset (``tinyray data imagenet100``)
SUBSET_MANIFEST_VERSION = 1


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; create the folder if needed.

    Raises:
        OSError: as ``open`` would (a full disk, a read-only folder); the target is then left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are read by the MLflow server and other users
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def read_results_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A results table (``trials.csv``, ``front.csv``) with its ``trial_id`` column read as text.

    Ray Tune's trial ids are 8 hex digits; about 2% are all decimal digits (or digits around one ``e``), which
    pandas would read as numbers, so a small table's ids would compare unequal to the same ids elsewhere.

    Raises:
        OSError, ValueError: as :func:`pandas.read_csv` would.
    """
    import pandas as pd

    return pd.read_csv(path, dtype={"trial_id": str})


def write_json_atomic(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (values JSON cannot hold are written as text)."""
    return write_text_atomic(path, json.dumps(data, indent=1, default=str) + "\n")


def read_json(path: str | os.PathLike, what: str = "state") -> Any:
    """Read a JSON file written by :func:`write_json_atomic`.

    Args:
        path: the file.
        what: what it is, for the error message (e.g. ``searcher state``).

    Raises:
        UserError: if the file is missing, unreadable or not JSON.
    """
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise UserError(f"cannot read {what} {path}: {error.strerror}; check the experiment folder") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{what} {path} is not valid JSON ({error.msg}): start a new experiment") from None
