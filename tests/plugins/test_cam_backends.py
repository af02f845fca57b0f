"""The CAM family on torch, Keras and the numpy reference: same weights, same maps.

* The tests' small conv net in torch, Keras and the numpy reference adapter (Keras fuses the
  ReLU: its ``conv1``/``conv2`` are torch's ``relu1``/``relu2``).
* The demo's trained digits CNN in torch and Keras, at a named layer and at the default.
* Keras against pytorch-grad-cam's formulas fed by ``tf.GradientTape`` (no torch involved).
* The technique contract (``innersight.testing.check_technique``: determinism, inputs and
  model state untouched, save/load, rendering) on the reference adapter and on torch.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.plugins.eigen_cam import EigenCAM
from innersight.plugins.grad_cam_plus_plus import GradCAMPlusPlus
from innersight.plugins.layer_cam import LayerCAM
from innersight.plugins.score_cam import ScoreCAM
from innersight.testing import ReferenceAdapter, check_technique
from tests.models import KERAS_TO_TORCH
from tests.plugins.test_cam_family import (
    recipe_2d_projection,
    recipe_grad_cam_plus_plus_weights,
    rel_err,
)

pytest.importorskip("torch")
pytest.importorskip("keras")

TECHNIQUES = [GradCAMPlusPlus, ScoreCAM, LayerCAM, EigenCAM]
IDS = [t.name for t in TECHNIQUES]
#: Worst relative difference allowed between backends (float32 reduction order).
REL = 1e-5


def run(technique, model, x, **params):
    """``technique`` with ``target=2`` unless given; Eigen-CAM, which has none, without."""
    params.setdefault("target", 2)
    if technique is EigenCAM:
        del params["target"]
    return technique().run(ins.wrap(model), x, progress=False, **params)


@pytest.mark.parametrize("technique", TECHNIQUES, ids=IDS)
def test_torch_keras_and_numpy_agree_on_the_small_net(
    technique, small_weights, torch_small, keras_small, images
):
    """Measured worst 4.1e-7 (maps peaking at 0.1-2)."""
    reference = ReferenceAdapter.from_weights(small_weights)
    for k_layer in ("conv1", "conv2"):
        t_layer = KERAS_TO_TORCH[k_layer]
        k = run(technique, keras_small, images, layer=k_layer)
        t = run(technique, torch_small, images, layer=t_layer)
        n = run(technique, reference, images, layer=t_layer)
        assert np.abs(k.values).max() > 1e-2
        assert rel_err(t.values, k.values) <= REL
        assert rel_err(n.values, k.values) <= REL
        assert rel_err(t.meta["cam"], k.meta["cam"]) <= REL
        if "weights" in k.meta:
            assert rel_err(t.meta["weights"], k.meta["weights"]) <= REL


@pytest.mark.parametrize("technique", TECHNIQUES, ids=IDS)
def test_torch_and_keras_digits_cnn_agree(technique, digits_torch, digits_keras, digits):
    """Trained weights, three test digits, at relu3/conv3 (8x8) and at the default (pool3):
    measured worst 3.9e-7."""
    x, y = digits.x_test[1:4], digits.y_test[1:4]
    for t_layer, k_layer in (("relu3", "conv3"), (None, None)):
        t = run(technique, digits_torch, x, layer=t_layer, target=y)
        k = run(technique, digits_keras, x, layer=k_layer, target=y)
        assert t.meta["layer"] == (t_layer or "pool3") and k.meta["layer"] == (k_layer or "pool3")
        assert np.abs(k.values).max() > 1e-2
        assert rel_err(t.values, k.values) <= REL, technique.name


def keras_acts_and_grads(model, layer, x, targets):
    """The layer's output and d(sum of target logits)/d(output) by tf.GradientTape, NCHW
    (the Sequential model run layer by layer, the tape watching the layer's output)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = tf.constant(x)
        for item in model.layers:
            out = item(out)
            if item.name == layer:
                acts = out
                tape.watch(acts)
        loss = tf.reduce_sum(tf.gather(out, targets, axis=1, batch_dims=1))
    grads = tape.gradient(loss, acts)
    return acts.numpy().transpose(0, 3, 1, 2), grads.numpy().transpose(0, 3, 1, 2)


def test_keras_matches_the_recipe_fed_by_gradient_tape(digits_keras, digits):
    """pytorch-grad-cam's Grad-CAM++, Layer-CAM and Eigen-CAM formulas on activations and
    gradients from ``tf.GradientTape``: measured worst 8.2e-8."""
    x, y = digits.x_test[1:4], digits.y_test[1:4]
    acts, grads = keras_acts_and_grads(digits_keras, "conv3", x, y)
    weights = recipe_grad_cam_plus_plus_weights(acts, grads)
    recipes = {
        GradCAMPlusPlus: (weights[:, :, None, None] * acts).sum(axis=1),
        LayerCAM: (np.maximum(grads, 0) * acts).sum(axis=1),
        EigenCAM: recipe_2d_projection(acts),
    }
    for technique, cam in recipes.items():
        sign = {"sign": "svd"} if technique is EigenCAM else {}  # EigenCAM's own sign
        ex = run(technique, digits_keras, x, layer="conv3", target=y, **sign)
        assert rel_err(ex.meta["cam"], np.maximum(cam, 0)) <= REL, technique.name
    ex = run(GradCAMPlusPlus, digits_keras, x, layer="conv3", target=y)
    assert rel_err(ex.meta["weights"], weights) <= REL


@pytest.mark.parametrize("technique", TECHNIQUES, ids=IDS)
def test_the_technique_contract_on_the_reference_adapter(technique):
    check_technique(technique(), **({"progress": False} if technique is ScoreCAM else {}))


@pytest.mark.parametrize("technique", TECHNIQUES, ids=IDS)
def test_the_technique_contract_on_torch_and_keras(technique, torch_small, keras_small, images):
    params = {"progress": False} if technique is ScoreCAM else {}
    check_technique(technique(), ins.wrap(torch_small), images, **params)
    check_technique(technique(), ins.wrap(keras_small), images, **params)
