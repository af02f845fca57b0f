"""Techniques called directly (``tech.explain``, as ``check_technique`` does) on a torch model
that has not run yet, whose ``layers()`` have no shapes: they probe with
``innersight.core.shaped_layers`` and choose exactly what ``innersight.explain`` chooses."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from tests import models

pytest.importorskip("torch")


@pytest.fixture
def fresh(small_weights):
    """A new torch model each time: torch learns the layers' shapes on its first forward."""

    def make():
        adapter = ins.wrap(models.torch_small(small_weights))
        assert all(tuple(info.output_shape) == () for info in adapter.layers())
        return adapter

    return make


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(2).random((3, 12, 12, 3), dtype=np.float32)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("activation_grid", {}),
        ("grad_cam", {"target": 1}),
        ("embeddings", {}),
    ],
)
def test_a_direct_call_chooses_the_default_layers_explain_chooses(fresh, x, name, params):
    direct = ins.techniques()[name].explain(fresh(), x, **params)
    via_api = ins.explain(name, fresh(), x, **params)
    assert direct.meta.get("layer_rule") == via_api.meta.get("layer_rule")
    if isinstance(direct.values, dict):
        assert list(direct.values) == list(via_api.values) == ["relu1", "pool1", "relu2"]
        for layer in direct.values:
            np.testing.assert_array_equal(direct.values[layer], via_api.values[layer])
    else:
        np.testing.assert_array_equal(direct.values, via_api.values)
        assert direct.meta["layer"] == via_api.meta["layer"]


def test_filter_maximization_names_the_spatial_layers_of_an_unprobed_model(fresh, x):
    tech = ins.techniques()["filter_maximization"]
    with pytest.raises(
        ins.InputError,
        match=r"layer 'fc1' has output shape \(8,\), not a spatial \(H, W, C\) map; spatial "
        r"layers: conv1, relu1, pool1, conv2, relu2$",
    ):
        tech.explain(fresh(), x, layer="fc1", steps=1)
    ok = tech.explain(fresh(), x, layer="relu2", filters=[0], steps=2, progress=False)
    assert ok.values.shape == (1, 12, 12, 3)
