"""State hygiene: the user's model is exactly as it was after every call, success or failure."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.backends.keras.errors import ModelCallError  # noqa: E402
from innersight.core.objectives import Channel, Logit, Neuron  # noqa: E402
from tests import models  # noqa: E402


def snapshot(model):
    """Everything a call could disturb: structure, flags, activations, weights, attributes."""
    layers = []
    for layer in model.layers:
        layers.append(
            {
                "id": id(layer),
                "name": layer.name,
                "trainable": layer.trainable,
                "activation": id(getattr(layer, "activation", None)),
                "weights": [w.tobytes() for w in layer.get_weights()],
                "attrs": {k: id(v) for k, v in vars(layer).items()},
                "nodes": (len(layer._inbound_nodes), len(layer._outbound_nodes)),
            }
        )
    return {
        "layers": layers,
        "trainable": model.trainable,
        "attrs": {k: id(v) for k, v in vars(model).items()},
        "nodes": len(model._inbound_nodes),
        "outputs": [id(t) for t in model.outputs],
    }


def exercise(adapter, x):
    adapter.forward(x, taps=["conv1", "fc1"])
    adapter.predict_classes(x)
    for relu in ("plain", "guided", "deconv"):
        adapter.value_and_grad(x, Logit([0, 1, 2, 0]), relu=relu)
        adapter.value_and_grad(x, Channel("conv2", 1, crop=1), relu=relu)
        adapter.layer_value_and_grad(x, Logit(1), "conv2", relu=relu)
    adapter.value_and_grad(x, Neuron("fc1", 3))


@pytest.mark.parametrize("softmax", [False, True])
def test_model_is_unchanged_after_every_kind_of_call(small_weights, images, softmax):
    model = models.keras_small(small_weights, softmax=softmax)
    model.get_layer("conv2").trainable = False  # a non-default flag must survive too
    before = snapshot(model)
    exercise(KerasAdapter(model), images)
    assert snapshot(model) == before


class Boom(RuntimeError):
    pass


def _fail_in(monkeypatch, layer_name, exc):
    """Make layer ``layer_name`` raise ``exc`` when called (i.e. while a function is traced)."""
    original = keras.layers.Layer.__call__

    def call(self, *args, **kwargs):
        if self.name == layer_name:
            raise exc
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__call__", call)


@pytest.mark.parametrize("exc", [Boom("injected"), KeyboardInterrupt()], ids=["error", "interrupt"])
@pytest.mark.parametrize("relu", ["plain", "guided"])
def test_model_is_unchanged_after_a_failure_mid_forward(
    small_weights, images, monkeypatch, exc, relu
):
    model = models.keras_small(small_weights)
    model.get_layer("fc1").trainable = False
    want = model(images, training=False).numpy()  # before the snapshot: eager calls mark the model
    before = snapshot(model)
    adapter = KerasAdapter(model)  # fresh: tracing happens under the patch
    _fail_in(monkeypatch, "conv2", exc)
    # the model's own failure is reported as such (the original chained); an interrupt is not
    expected = ModelCallError if isinstance(exc, Exception) else type(exc)
    with pytest.raises(expected) as info:
        adapter.value_and_grad(images, Logit(0), relu=relu)
    assert expected is type(exc) or isinstance(info.value.__cause__, Boom)
    with pytest.raises(expected):
        adapter.forward(images, taps=["fc1"])
    with pytest.raises(expected):
        adapter.layer_value_and_grad(images, Channel("conv2", 0), "conv1", relu=relu)
    assert snapshot(model) == before
    assert len(adapter._cache) == 0  # nothing half-traced was kept
    monkeypatch.undo()
    # The same adapter works afterwards and gives the model's numbers.
    np.testing.assert_allclose(adapter.forward(images).outputs, want, rtol=1e-6)
    values, _ = adapter.value_and_grad(images, Logit(0), relu=relu)
    np.testing.assert_allclose(values, want[:, 0], rtol=1e-5)
    assert snapshot(model) == before


def test_user_inputs_are_not_mutated_by_gradient_calls(keras_small, images):
    before = images.copy()
    adapter = KerasAdapter(keras_small)
    _, grads = adapter.value_and_grad(images, Logit(0), relu="guided")
    _, acts, _ = adapter.layer_value_and_grad(images, Logit(0), "conv1")
    np.testing.assert_array_equal(images, before)
    assert not np.shares_memory(grads, images) and not np.shares_memory(acts, images)
    grads += 1  # results are the caller's own, writable arrays
