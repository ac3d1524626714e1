"""Training history files: the per-epoch records of ``SoftmaxRegression.history_`` as CSV or JSON.

Shapes: none; a history is a list of dicts, one per epoch (see :func:`fastlr.sgd.train`).
"""

import csv
import io
import json
from pathlib import Path

from .atomic import write_text
from .errors import DataError

HISTORY_FORMATS = (".csv", ".json")

# Known fields first, in this order; any others follow in order of first appearance.
_FIELD_ORDER = ("epoch", "train_loss", "train_accuracy", "end_train_loss", "end_train_accuracy",
                "test_loss", "test_accuracy", "val_loss", "val_accuracy", "lr", "time_s")


def check_history_path(path):
    """The format of a history file from its extension: ``.csv`` or ``.json``.

    Raises
    ------
    DataError
        For any other extension.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in HISTORY_FORMATS:
        raise DataError(f"history file {path}: name it .csv or .json (the extension picks the "
                        f"format)")
    return suffix


def write_history(path, history):
    """Write ``history`` to ``path``, atomically, as CSV (one row per epoch) or JSON (a list of
    records); returns ``path`` as a Path."""
    suffix = check_history_path(path)
    if suffix == ".json":
        text = json.dumps(history, indent=1) + "\n"
    else:
        fields = [f for f in _FIELD_ORDER if any(f in r for r in history)]
        fields += [f for r in history for f in r if f not in fields]
        fields = list(dict.fromkeys(fields))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        text = buffer.getvalue()
    return write_text(path, text)
