"""Shared fixtures: the same small conv net in numpy-reference, torch and Keras form.

torch is imported before TensorFlow: the other order can crash on some builds.

The suite also runs where innersight is installed with its core only (numpy and pluggy: ``make
test-core``): what imports a framework or another optional package that is not installed is
skipped with the reason, instead of erroring (:mod:`tests.core_only.optional`).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

try:
    import torch
except ImportError:  # pragma: no cover - torch is a dev dependency
    torch = None
else:
    # The tests' models are tiny: one intra-op thread is faster than two on a shared 2-core
    # machine, where two threads contend (measured 11 ms vs 216 ms per small call under load).
    torch.set_num_threads(int(os.environ.get("INNERSIGHT_TEST_TORCH_THREADS", "1")))

from tests import models
from tests.core_only.optional import SkipMissingOptional


def pytest_configure(config: pytest.Config) -> None:
    # A plugin, not hooks of this conftest: pytest hides a conftest's hooks from a directory
    # whose own conftest failed to import, and that is one of the errors it turns into skips.
    config.pluginmanager.register(SkipMissingOptional(), "innersight-skip-missing-optional")


@pytest.fixture(scope="session")
def small_weights() -> dict[str, np.ndarray]:
    """Channels-last (Keras-layout) weights of the small conv net, fixed seed."""
    return models.small_weights(seed=0)


@pytest.fixture(scope="session")
def torch_small(small_weights):
    pytest.importorskip("torch")
    return models.torch_small(small_weights)


@pytest.fixture(scope="session")
def keras_small(small_weights):
    pytest.importorskip("keras")
    return models.keras_small(small_weights)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits at 32x32x1, the seeded 75/25 split."""
    pytest.importorskip("sklearn")
    from innersight.models import digits_data

    return digits_data()


@pytest.fixture(scope="session")
def digits_torch():
    """The demo digits CNN with its shipped trained weights (torch, NCHW)."""
    pytest.importorskip("torch")
    from innersight.models import digits_cnn

    return digits_cnn("torch")


@pytest.fixture(scope="session")
def digits_keras():
    """The same trained digits CNN in Keras."""
    pytest.importorskip("keras")
    from innersight.models import digits_cnn

    return digits_cnn("keras")


@pytest.fixture
def images() -> np.ndarray:
    """Four 12x12x3 float32 images (channels last) in 0..1, fixed seed."""
    return np.random.default_rng(1).random((4, 12, 12, 3), dtype=np.float32)
