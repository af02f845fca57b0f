"""The Keras adapter's suite for ONE Keras backend: the one ``KERAS_BACKEND`` names.

Keras fixes its backend when it is imported, so ``../test_backends.py`` runs this directory once
per backend, each in its own ``pytest`` process with ``KERAS_BACKEND`` and
``INNERSIGHT_KERAS_SUITE=1`` set. Collected in any other process (a plain ``pytest tests``),
the directory is skipped: its tests would only repeat the TensorFlow run.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

collect_ignore_glob = [] if os.environ.get("INNERSIGHT_KERAS_SUITE") else ["test_*.py"]


@pytest.fixture(scope="session")
def backend() -> str:
    import keras

    name = keras.backend.backend()
    expected = os.environ.get("KERAS_BACKEND", "tensorflow")
    assert name == expected, f"Keras runs on {name!r}, the driver asked for {expected!r}"
    return name


@pytest.fixture
def noise() -> np.ndarray:
    # Noise, not images: near-tied max-pool windows would route gradients differently.
    return np.random.default_rng(11).random((3, 12, 12, 3), dtype=np.float32)
