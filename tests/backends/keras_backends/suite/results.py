"""Values a sub-run hands to the driver, which compares the Keras backends with each other."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def save(backend: str, name: str, values: Any) -> None:
    """Write ``values`` (an array, or a list/dict of arrays: one file each) to
    ``$INNERSIGHT_KERAS_PARITY_DIR/<backend>--<name>.npy``; nothing when that is unset."""
    where = os.environ.get("INNERSIGHT_KERAS_PARITY_DIR")
    if not where:
        return
    if isinstance(values, dict):
        for key, value in values.items():
            save(backend, f"{name}.{key}", value)
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            save(backend, f"{name}.{i}", value)
    else:
        np.save(Path(where) / f"{backend}--{name}.npy", np.asarray(values, dtype=np.float64))
