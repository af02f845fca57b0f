"""The whole conformance suite on every backend's adapter for the same small net, and every
number compared with the numpy reference built from the same weights.

Backends that are not installed (or not yet available) are skipped with the reason.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest

import innersight
from innersight import testing
from innersight.core.errors import BackendNotFoundError, PluginLoadError
from tests import models

BACKENDS = ["numpy", "torch", "torch-inplace", "keras", "keras-softmax"]
#: adapter layer -> reference layer. torch's Flatten runs in (C, H, W) order, so it is left out.
LAYER_MAPS = {
    "numpy": {name: name for name, _ in testing.SMALL_NET_LAYOUT},
    "torch": {n: n for n in ("conv1", "relu1", "pool1", "conv2", "relu2", "fc1", "relu3", "fc2")},
    "keras": dict(models.KERAS_TO_TORCH),
}


def build(backend: str, weights: dict[str, np.ndarray]):
    """(native model, adapter) for a backend, skipping when it is unavailable."""
    if backend == "numpy":
        adapter = testing.ReferenceAdapter.from_weights(weights)
        return adapter.network, adapter
    framework = backend.split("-")[0]
    pytest.importorskip(framework)
    if framework == "torch":
        model = models.torch_small(weights, inplace=backend.endswith("inplace"))
    else:
        model = models.keras_small(weights, softmax=backend.endswith("softmax"))
    try:
        return model, innersight.wrap(model)
    except (BackendNotFoundError, PluginLoadError) as err:
        pytest.skip(f"the {framework} backend is not available yet: {err}")


def case(backend: str) -> testing.AdapterCase:
    """The backend's small net, with the numpy reference of the same weights to compare with."""
    weights = models.small_weights(seed=0)
    model, _ = build(backend, weights)
    # The reference has no softmax: compare only models whose outputs are the logits.
    reference = (
        None if backend.endswith("softmax") else testing.ReferenceAdapter.from_weights(weights)
    )
    # Noise, not images: near-tied max-pool windows would route gradients differently.
    noise = np.random.default_rng(11).random((2, 12, 12, 3), dtype=np.float32)
    layer_map = LAYER_MAPS[backend.split("-")[0]]
    return testing.AdapterCase(model, noise, reference=reference, layer_map=layer_map)


@testing.parametrize_with_checks(
    {backend: functools.partial(case, backend) for backend in BACKENDS}
)
def test_conformance(adapter, check):
    check(adapter)


@pytest.mark.parametrize("backend", ["numpy", "torch", "keras"])
def test_check_adapter_finds_the_model_behind_an_adapter(backend, small_weights):
    from innersight.testing.checks_suite import resolve_adapter

    model, adapter = build(backend, small_weights)
    assert resolve_adapter(adapter) == (adapter, model)


# Parameters that fit the 12x12 test images and keep the run short; techniques not listed run
# with their defaults.
SMALL = {
    "occlusion": {"window": 5, "stride": 4},
    "filter_maximization": {"steps": 5},
    "class_maximization": {"steps": 5},
    "smoothgrad": {"samples": 4},
    "integrated_gradients": {"steps": 8},
    "embeddings": {"method": "pca"},
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_technique_runs_on_every_backend(backend, small_weights):
    _, adapter = build(backend, small_weights)
    noise = np.random.default_rng(11).random((4, 12, 12, 3), dtype=np.float32)
    # The embeddings' PCA is scikit-learn's: without it (a core-only install) they cannot run.
    pca = importlib.util.find_spec("sklearn") is not None
    names = [name for name in innersight.techniques() if pca or name != "embeddings"]
    report = testing.check_all_techniques(adapter, noise, params=SMALL, names=names)
    assert all(status == "passed" or status.startswith("skipped") for status in report.values())
